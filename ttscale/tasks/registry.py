"""Task lookup by name or by path of a JSONL file."""

from __future__ import annotations

from pathlib import Path

from ttscale.tasks.base import Task
from ttscale.tasks.jsonl import JsonlTask


def load_task(name_or_file: str) -> Task:
    if name_or_file.endswith(".jsonl") or Path(name_or_file).is_file():
        return JsonlTask(name_or_file)
    raise ValueError(f"unknown task {name_or_file!r}; pass a .jsonl file of {{id, prompt, answer}} objects")
