"""A user's own problems: a JSONL file with one `{id, prompt, answer?, stop?}` object per line."""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path

from ttscale.tasks.base import Problem
from ttscale.tasks.extract import last_line

log = logging.getLogger(__name__)
KEYS = ("id", "prompt", "answer", "stop")
# names other datasets use for our keys, for a "did you mean"
ALIASES = {"question": "prompt", "input": "prompt", "problem": "prompt", "instruction": "prompt", "query": "prompt",
           "text": "prompt", "target": "answer", "output": "answer", "solution": "answer", "label": "answer",
           "gold": "answer", "answers": "answer", "idx": "id", "task_id": "id", "stop_sequences": "stop"}
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _normalise(text: str) -> str:
    text = text.strip().rstrip(".").strip()
    if _NUMBER.fullmatch(text):
        return text.replace(",", "")
    return " ".join(text.split()).lower()


def _meant(key: str) -> str | None:
    """The row key a misnamed key probably stands for."""
    close = difflib.get_close_matches(key.lower(), KEYS, n=1)
    return close[0] if close else ALIASES.get(key.lower())


class JsonlTask:
    """Free-form prompts; the answer is the completion's last non-empty line (`task.extract` chooses
    another rule); a row's `stop` strings end its completions."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = self.path.name
        self.source = f"file:{self.path}"

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
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}:{n}: not a JSON object ({e})") from None
                problems.append(self._problem(row, n))
                for key in row.keys() - KEYS:
                    unknown.setdefault(key, n)
                if limit is not None and len(problems) >= limit:
                    break
        for key, n in unknown.items():
            close = _meant(key)
            log.warning("%s:%d: unknown key %r ignored (rows have %s)%s", self.path, n, key, ", ".join(KEYS),
                        f"; did you mean {close!r}?" if close else "")
        return problems

    def _problem(self, row: object, n: int) -> Problem:
        """One row as a problem; a row without `id` or `prompt`, or with a malformed `stop`, is an error."""
        if not isinstance(row, dict):
            raise ValueError(f"{self.path}:{n}: expected a JSON object with 'id' and 'prompt', got {type(row).__name__}")
        for key in ("id", "prompt"):
            if key not in row:
                named = [k for k in row if _meant(k) == key]
                hint = f"; did you mean to call {named[0]!r} {key!r}?" if named else ""
                raise ValueError(f"{self.path}:{n}: no {key!r} key (rows have {', '.join(KEYS)}){hint}")
        if not isinstance(row["prompt"], str):
            raise ValueError(f"{self.path}:{n}: 'prompt' must be a string")
        stop = row.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"{self.path}:{n}: 'stop' must be a string or a list of non-empty strings")
        return Problem(id=str(row["id"]), prompt=row["prompt"], stop=tuple(stop),
                       answer=None if row.get("answer") is None else str(row["answer"]))

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": problem.prompt}]

    def extract(self, completion: str, problem: Problem) -> str | None:
        return last_line(completion)

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        if problem.answer is None:
            return None
        return prediction is not None and _normalise(prediction) == _normalise(problem.answer)

    def answer_key(self, prediction: str | None):
        return None if prediction is None else _normalise(prediction)
