"""The demo tasks: `demo` (each prompt cued with its own rule), `demo-shift` (the same problems cued
with the partner rule; ttscale.demo.data) and `demo-mix` (the same problems, half of them shifted, in a
fixed interleaving a user could not tell apart). Problems are generated from a seed: the test and
validation splits have fixed seeds, and `--set task.seed=N` generates a fresh set nobody has tuned on."""

from __future__ import annotations

import random

from ttscale.demo.data import DOMAINS_ORDER, PARTNER, SHOTS, prompt
from ttscale.tasks.base import Problem

SPLITS = {"test": 1000, "validation": 2000}     # split -> seed
SIZE = 400


SHIFTS = {"demo": "none", "demo-shift": "all", "demo-mix": "mix"}   # task name -> which problems are shifted


def shifted(index: int, shift: str) -> bool:
    """Whether problem `index` is shifted: none, all, or (mix) the second of every two blocks of four, so that
    each rule (problems cycle through the four) is shifted in exactly half of its problems."""
    return shift == "all" or shift == "mix" and (index // len(DOMAINS_ORDER)) % 2 == 1


class DemoTask:
    stop = ("\n",)                                # one solution line per answer

    def __init__(self, shift: str = "none", split: str = "test", shots: int | None = None, seed: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"demo tasks have splits {', '.join(SPLITS)}, not {split!r}")
        shots = SHOTS if shots is None else shots
        if not 0 <= shots <= 16:
            raise ValueError(f"task.shots={shots}: demo prompts take 0 to 16 solved examples")
        if shift not in SHIFTS.values():
            raise ValueError(f"unknown demo shift {shift!r}")
        self.shift, self.split, self.shots = shift, split, shots
        self.seed = SPLITS[split] if seed is None else seed
        self.name = next(name for name, value in SHIFTS.items() if value == shift)
        label = split if seed is None else f"seed{seed}"
        self.source = f"generated:{self.name}:{label}" + (f":{shots}shot" if shots != SHOTS else "")
        self._label = label

    def load(self, limit: int | None = None) -> list[Problem]:
        rng = random.Random(self.seed)            # every demo task draws the same problems; only cues differ
        problems = []
        for i in range(SIZE if limit is None else min(limit, SIZE)):
            rule, shift = DOMAINS_ORDER[i % len(DOMAINS_ORDER)], shifted(i, self.shift)
            text, question, solution = prompt(rule, rng, self.shots, shift)
            problems.append(Problem(id=f"{self.name}/{self._label}/{i}", prompt=text,
                                    answer=solution.rsplit("= ", 1)[1],
                                    meta={"domain": rule, "cue": PARTNER[rule] if shift else rule, "shifted": shift,
                                          "question": question, "solution": solution}))
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

    def reference(self, problem: Problem) -> str:
        """The gold completion of the prompt (ttscale.diagnostics fits its oracle on it)."""
        return f" {problem.meta['solution']}\n"


def held_out_inputs() -> set[str]:
    """The input (question without its cue) of every problem of the test and validation splits; the
    training corpus avoids them."""
    return {p.meta["question"].split(" ", 1)[1] for split in SPLITS for p in DemoTask(split=split).load()}
