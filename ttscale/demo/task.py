"""The demo tasks: `demo` (common domains) and `demo-shift` (rare domains), each with a test and a
validation split. Problems are generated from fixed seeds, so they are the same everywhere."""

from __future__ import annotations

import random

from ttscale.demo.data import COMMON, RARE, prompt
from ttscale.tasks.base import Problem

SPLITS = {"test": 1000, "validation": 2000}     # split -> seed
SIZE = 200


class DemoTask:
    stop = ("\n",)                                # one solution line per answer

    def __init__(self, shift: bool = False, split: str = "test"):
        if split not in SPLITS:
            raise ValueError(f"demo tasks have splits {', '.join(SPLITS)}, not {split!r}")
        self.shift, self.split = shift, split
        self.name = "demo-shift" if shift else "demo"
        self.domains = RARE if shift else COMMON
        self.source = f"generated:{self.name}:{split}"

    def load(self, limit: int | None = None) -> list[Problem]:
        rng = random.Random(SPLITS[self.split] + (1 if self.shift else 0))
        problems = []
        for i in range(SIZE if limit is None else min(limit, SIZE)):
            domain = self.domains[i % len(self.domains)]
            text, question, solution = prompt(domain, rng)
            problems.append(Problem(id=f"{self.name}/{self.split}/{i}", prompt=text, answer=solution.rsplit("= ", 1)[1],
                                    meta={"domain": domain, "question": question, "solution": solution}))
        return problems

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": problem.prompt}]

    def extract(self, completion: str, problem: Problem) -> str | None:
        line = completion.split("\n", 1)[0]
        return line.rsplit("= ", 1)[1].strip() or None if "= " in line else None

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        return prediction == problem.answer

    def answer_key(self, prediction: str | None):
        return prediction


def held_out_questions() -> set[str]:
    """Every evaluation question of both demo tasks and splits (the training corpus avoids them)."""
    return {p.meta["question"] for shift in (False, True) for split in SPLITS
            for p in DemoTask(shift, split).load()}
