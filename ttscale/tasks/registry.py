"""Tasks by name, or a JSONL file by path; `--set task.*` settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ttscale.tasks import extract
from ttscale.tasks.base import Task
from ttscale.tasks.choice import ARC, MMLU
from ttscale.tasks.code import MBPP, HumanEval
from ttscale.tasks.jsonl import JsonlTask
from ttscale.tasks.math import GSM8K, Math500

TASKS = {cls.name: cls for cls in (GSM8K, Math500, HumanEval, MBPP, MMLU, ARC)}
DEMO_TASKS = ("demo", "demo-shift", "demo-mix")


@dataclass
class TaskSettings:
    shots: int = -1         # solved examples before each problem; -1: the task's own (0; demo tasks: 3)
    split: str = "test"     # test | validation (demo tasks; benchmarks have only their test split)
    seed: int = -1          # demo tasks: generate the problems from this seed; -1: the split's fixed seed
    stop: list = field(default_factory=list)   # stop strings, added to the task's own and a JSONL row's
    extract: str = ""       # how answers are taken (ttscale.tasks.extract); "": the task's own

    def __post_init__(self):
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"invalid setting task.stop={self.stop!r}: must be a string or a list of non-empty strings")
        if self.extract:
            extract.parse(self.extract)        # a bad rule fails here, before any work


def load_task(name_or_file: str, settings: TaskSettings | None = None) -> Task:
    settings = settings or TaskSettings()
    if name_or_file in DEMO_TASKS:
        from ttscale.demo.task import SHIFTS, DemoTask
        return DemoTask(shift=SHIFTS[name_or_file], split=settings.split,
                        shots=None if settings.shots == -1 else settings.shots,
                        seed=None if settings.seed == -1 else settings.seed)
    if settings.split != "test":
        raise ValueError(f"task.split={settings.split!r}: only the demo tasks have a validation split")
    if settings.seed != -1:
        raise ValueError(f"task.seed={settings.seed}: only the demo tasks are generated from a seed")
    if name_or_file in TASKS:
        return TASKS[name_or_file](shots=0 if settings.shots == -1 else settings.shots)
    if name_or_file.endswith(".jsonl") or Path(name_or_file).is_file():
        return JsonlTask(name_or_file)
    from ttscale.spec import suggest

    raise ValueError(f"unknown task {name_or_file!r}" + suggest(name_or_file, [*DEMO_TASKS, *TASKS])
                     + " (or a .jsonl file)")
