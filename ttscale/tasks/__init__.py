"""Tasks: loading problems, formatting prompts, extracting and grading answers."""

from ttscale.tasks.base import Problem, Task
from ttscale.tasks.registry import load_task

__all__ = ["Problem", "Task", "load_task"]
