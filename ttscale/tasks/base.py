"""The task interface: problems, prompts, answer extraction, grading and voting keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol


@dataclass
class Problem:
    id: str
    prompt: str                      # the problem text, before any chat template or shots
    answer: str | None = None        # gold answer, when known
    meta: dict[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()       # the problem's own stop strings (a JSONL row's `stop`), added to the task's


class Task(Protocol):
    name: str
    # optional: `stop`, strings that end a completion (e.g. the demo tasks' newline)

    def load(self, limit: int | None = None) -> list[Problem]:
        """The task's problems (offline fallbacks included), at most `limit`."""

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """Chat messages for the problem; backends apply the chat template or join the contents."""

    def extract(self, completion: str, problem: Problem) -> str | None:
        """The answer in a completion, or None when there is none."""

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        """Whether a prediction is correct; None when the problem has no gold answer."""

    def answer_key(self, prediction: str | None) -> Hashable:
        """A key under which equivalent answers are equal, for voting."""
