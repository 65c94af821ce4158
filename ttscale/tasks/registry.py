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
DEMO_TASKS = ("demo", "demo-shift")


@dataclass
class TaskSettings:
    shots: int = 0          # solved examples before each problem (k-shot; benchmark tasks)
    split: str = "test"     # test | validation (demo tasks; benchmarks have only their test split)


def load_task(name_or_file: str, settings: TaskSettings | None = None) -> Task:
    settings = settings or TaskSettings()
    if name_or_file in DEMO_TASKS:
        from ttscale.demo.task import DemoTask
        return DemoTask(shift=name_or_file == "demo-shift", split=settings.split)
    if settings.split != "test":
        raise ValueError(f"task.split={settings.split!r}: only the demo tasks have a validation split")
    if name_or_file in TASKS:
        return TASKS[name_or_file](shots=settings.shots)
    if name_or_file.endswith(".jsonl") or Path(name_or_file).is_file():
        return JsonlTask(name_or_file)
    from ttscale.spec import suggest

    raise ValueError(f"unknown task {name_or_file!r}" + suggest(name_or_file, [*DEMO_TASKS, *TASKS])
                     + " (or a .jsonl file)")
