"""The task of a request: its messages as the prompt, the answer and voting key of a `--task FILE.jsonl`
prompt, so the same prompt gives the same answer through `ttscale serve` and `ttscale run`."""

from __future__ import annotations

from typing import Sequence

from ttscale.tasks.base import Problem
from ttscale.tasks.jsonl import JsonlTask


class RequestTask(JsonlTask):
    """One request's prompt: the chat messages as given (`Problem.meta["messages"]`), its stop strings.
    Answers, grading and voting keys are those of a JSONL task (the completion's last non-empty line)."""

    name = "request"

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = tuple(stop)

    def load(self, limit: int | None = None) -> list[Problem]:
        raise ValueError("a request task has no problem list")

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return problem.meta.get("messages") or super().messages(problem)


def problem(messages: list[dict[str, str]], id: str = "request") -> Problem:
    """A problem whose prompt is the messages (the last user message's text as `prompt`)."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return Problem(id=id, prompt=users[-1] if users else "", meta={"messages": messages})
