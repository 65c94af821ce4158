"""The task of a request: its prompt's tokens, the branches the strategy grows from them, the answer and
voting key of a `--task FILE.jsonl` prompt, so the same prompt gives the same answer through `ttscale
serve` and `ttscale run`."""

from __future__ import annotations

from typing import Any, Sequence

from ttscale.backends.base import Backend
from ttscale.branch import Branch
from ttscale.tasks.base import Problem
from ttscale.tasks.jsonl import JsonlTask


class RequestTask(JsonlTask):
    """One request's prompt and stop strings. Answers, grading and voting keys are those of a JSONL task
    (the completion's last non-empty line)."""

    name = "request"

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = tuple(stop)

    def load(self, limit: int | None = None) -> list[Problem]:
        raise ValueError("a request task has no problem list")


class RequestBackend:
    """The backend as one prompt's strategy sees it: every branch starts from the prompt's tokens (the chat
    template's output for chat messages, the raw text's or the given token ids for completions), and the
    branches are kept so a stream can read them as they grow. Everything else is the backend's."""

    def __init__(self, backend: Backend, tokens: list[int]):
        self.backend, self.tokens = backend, tokens
        self.branches: list[Branch] = []

    def new_branch(self, messages: Any = None, seed: int = 0) -> Branch:
        b = Branch(tokens=list(self.tokens), prompt_len=len(self.tokens), seed=seed)
        self.branches.append(b)
        return b

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def prompt_tokens(prompt: list[dict[str, str]] | str | list[int], backend: Backend) -> list[int]:
    """The tokens a prompt runs as: chat messages through the backend's encoding (its chat template), text
    continued raw (tokenized with the tokenizer's special tokens, as engines do), token ids as given."""
    if isinstance(prompt, str):
        return backend.tokenizer(prompt).input_ids
    if prompt and isinstance(prompt[0], dict):
        return backend.encode(prompt)
    return list(prompt)


def problem(prompt: list[dict[str, str]] | str | list[int], id: str = "request") -> Problem:
    """The request's problem (its prompt: the last user message's text, or the raw text)."""
    if isinstance(prompt, str):
        return Problem(id=id, prompt=prompt)
    users = [m["content"] for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return Problem(id=id, prompt=users[-1] if users else "")
