"""What every search shares: its inputs, its outcome, and the registry that names it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np

from ttscale.backends.base import Backend, PromptTooLong
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch
from ttscale.tasks import extract
from ttscale.tasks.base import Problem, Task
from ttscale.tasks.registry import TaskSettings


@dataclass
class Context:
    """One problem and everything a search needs to solve it."""
    problem: Problem
    task: Task
    backend: Backend                 # makes branches; their growth goes through the generator's ops
    generator: Any                   # PlainGenerator | RerouteGenerator
    seed: int = 0
    stop: Sequence[str] | None = None    # default: the task's, the problem's and `task.stop`, together
    settings: TaskSettings | None = None     # the strategy's `task.*` settings (`stop`, `extract`)

    def __post_init__(self):
        if self.stop is None:
            own = (*getattr(self.task, "stop", ()), *self.problem.stop, *(self.settings.stop if self.settings else ()))
            self.stop = tuple(dict.fromkeys(own))
        self.extract = extract.parse(self.settings.extract) if self.settings and self.settings.extract else None

    def branches(self, n: int) -> list[Branch]:
        """n fresh branches on the problem's prompt, with seeds derived from the run seed."""
        messages = self.task.messages(self.problem)
        try:
            branches = [self.backend.new_branch(messages, seed=derive_seed(self.seed, i)) for i in range(n)]
        except PromptTooLong as e:
            raise PromptTooLong(f"problem {self.problem.id}: {e}") from None
        for b in branches:
            b.meta["problem"] = self.problem.id
        return branches

    def answers(self, branches: Sequence[Branch]) -> list[str | None]:
        """Each branch's answer: by `task.extract` when set, else by the task's own rule."""
        if self.extract:
            return [self.extract(b.text) for b in branches]
        return [self.task.extract(b.text, self.problem) for b in branches]


@dataclass
class Outcome:
    prediction: str | None
    samples: list[Branch]            # the candidates, recorded as samples
    answers: list[str | None]
    chosen: int | None               # index of the sample whose answer was picked
    scores: list[float] | None = None
    spent: list[Branch] = field(default_factory=list)   # every branch that cost compute


class Search(Protocol):
    """The algorithm for one problem, as a coroutine over backend operations (`ttscale.inflight`), so
    many problems can be solved at once with their branches in shared batches."""
    name: ClassVar[str]
    Params: ClassVar[type]           # a dataclass of the search's `--set <name>.*` settings
    rows: int                        # the most branches it grows at once (fills --batch-size)

    def __init__(self, params: Any, n: int, sampling: Sampling): ...

    async def solve(self, ctx: Context) -> Outcome: ...


SEARCHES: dict[str, type] = {}


def register(cls: type) -> type:
    """Make a search available to specs by its `name`."""
    SEARCHES[cls.name] = cls
    return cls


def derive_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def sampled(sampling: Sampling, params: Any) -> Sampling:
    """The shared sampling settings with a search's own temperature and top-p."""
    return replace(sampling, temperature=params.temperature, top_p=params.top_p)
