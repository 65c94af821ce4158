"""The demo tasks: `demo` (each prompt cued with its own rule) and `demo-shift` (the same problems cued
with the partner rule; ttscale.demo.data). Problems are generated from a seed: the test and validation
splits have fixed seeds, and `--set task.seed=N` generates a fresh set nobody has tuned on."""

from __future__ import annotations

import random

from ttscale.demo.data import DOMAINS_ORDER, PARTNER, SHOTS, prompt
from ttscale.tasks.base import Problem

SPLITS = {"test": 1000, "validation": 2000}     # split -> seed
SIZE = 400


class DemoTask:
    stop = ("\n",)                                # one solution line per answer

    def __init__(self, shift: bool = False, split: str = "test", shots: int | None = None, seed: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"demo tasks have splits {', '.join(SPLITS)}, not {split!r}")
        shots = SHOTS if shots is None else shots
        if not 0 <= shots <= 16:
            raise ValueError(f"task.shots={shots}: demo prompts take 0 to 16 solved examples")
        self.shift, self.split, self.shots = shift, split, shots
        self.seed = SPLITS[split] if seed is None else seed
        self.name = "demo-shift" if shift else "demo"
        label = split if seed is None else f"seed{seed}"
        self.source = f"generated:{self.name}:{label}" + (f":{shots}shot" if shots != SHOTS else "")
        self._label = label

    def load(self, limit: int | None = None) -> list[Problem]:
        rng = random.Random(self.seed)            # demo and demo-shift draw the same problems; only cues differ
        problems = []
        for i in range(SIZE if limit is None else min(limit, SIZE)):
            rule = DOMAINS_ORDER[i % len(DOMAINS_ORDER)]
            text, question, solution = prompt(rule, rng, self.shots, self.shift)
            problems.append(Problem(id=f"{self.name}/{self._label}/{i}", prompt=text,
                                    answer=solution.rsplit("= ", 1)[1],
                                    meta={"domain": rule, "cue": PARTNER[rule] if self.shift else rule,
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
