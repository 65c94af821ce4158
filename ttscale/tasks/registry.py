"""Tasks by name, or a JSONL file by path; `--set task.*` settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ttscale.tasks.base import Task
from ttscale.tasks.choice import ARC, MMLU
from ttscale.tasks.code import MBPP, HumanEval
from ttscale.tasks.jsonl import JsonlTask
from ttscale.tasks.math import GSM8K, Math500

TASKS = {cls.name: cls for cls in (GSM8K, Math500, HumanEval, MBPP, MMLU, ARC)}


@dataclass
class TaskSettings:
    shots: int = 0          # solved examples before each problem (k-shot)


def load_task(name_or_file: str, settings: TaskSettings | None = None) -> Task:
    settings = settings or TaskSettings()
    if name_or_file in TASKS:
        return TASKS[name_or_file](shots=settings.shots)
    if name_or_file.endswith(".jsonl") or Path(name_or_file).is_file():
        return JsonlTask(name_or_file)
    from ttscale.spec import suggest

    raise ValueError(f"unknown task {name_or_file!r}" + suggest(name_or_file, TASKS) + " (or a .jsonl file)")
