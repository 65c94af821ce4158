"""A user's own problems: a JSONL file with one `{id, prompt, answer?}` object per line."""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path

from ttscale.tasks.base import Problem

log = logging.getLogger(__name__)
KEYS = ("id", "prompt", "answer")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _normalise(text: str) -> str:
    text = text.strip().rstrip(".").strip()
    if _NUMBER.fullmatch(text):
        return text.replace(",", "")
    return " ".join(text.split()).lower()


class JsonlTask:
    """Free-form prompts; the answer is the completion's last non-empty line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = self.path.name

    def load(self, limit: int | None = None) -> list[Problem]:
        if not self.path.is_file():
            raise ValueError(f"task file not found: {self.path}")
        problems, unknown = [], {}
        with self.path.open() as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    for key in row.keys() - KEYS:
                        unknown.setdefault(key, n)
                    problems.append(Problem(id=str(row["id"]), prompt=row["prompt"],
                                            answer=None if row.get("answer") is None else str(row["answer"])))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{self.path}:{n}: expected a JSON object with 'id' and 'prompt' ({e})") from None
                if limit is not None and len(problems) >= limit:
                    break
        for key, n in unknown.items():
            close = difflib.get_close_matches(key.lower(), KEYS, n=1)
            log.warning("%s:%d: unknown key %r ignored (rows have %s)%s", self.path, n, key, ", ".join(KEYS),
                        f"; did you mean {close[0]!r}?" if close else "")
        return problems

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": problem.prompt}]

    def extract(self, completion: str, problem: Problem) -> str | None:
        lines = [line.strip() for line in completion.strip().splitlines() if line.strip()]
        return lines[-1] if lines else None

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        if problem.answer is None:
            return None
        return prediction is not None and _normalise(prediction) == _normalise(problem.answer)

    def answer_key(self, prediction: str | None):
        return None if prediction is None else _normalise(prediction)
