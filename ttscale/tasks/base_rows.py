"""The shared shape of the benchmark tasks: rows from a source chain, optional k-shot prompts."""

from __future__ import annotations

from typing import Any, Callable

from ttscale.tasks.base import Problem
from ttscale.tasks.sources import HubSource, Rows, chain, first_available


class RowTask:
    """A task whose problems come from dataset rows. Subclasses say where the rows are (`hub`,
    `packaged`) and how to read one (`problem`), phrase one (`instruction`) and solve one (`demonstration`).

    `shots=k` prepends k solved problems as chat turns: the first k other problems of the loaded set
    with their gold solutions (the benchmarks' train splits are not available offline)."""

    name: str
    hub: HubSource
    packaged: tuple[tuple[str, Callable[[], Rows]], ...] = ()

    def __init__(self, shots: int = 0):
        if shots < 0:
            raise ValueError(f"task.shots must be at least 0, got {shots}")
        self.shots = shots
        self.source: str | None = None
        self._pool: list[Problem] = []

    def load(self, limit: int | None = None) -> list[Problem]:
        self.source, rows = first_available(list(chain(self.hub, *self.packaged, fixture=self.name)))
        self._pool = [self.problem(i, row) for i, row in enumerate(rows)]
        return self._pool[:limit]

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        raise NotImplementedError

    def instruction(self, problem: Problem) -> str:
        raise NotImplementedError

    def demonstration(self, problem: Problem) -> str:
        raise NotImplementedError

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for shot in [p for p in self._pool if p.id != problem.id][:self.shots]:
            turns += [{"role": "user", "content": self.instruction(shot)},
                      {"role": "assistant", "content": self.demonstration(shot)}]
        return turns + [{"role": "user", "content": self.instruction(problem)}]
