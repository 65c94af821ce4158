"""The data of the lm-eval example tasks, drawn from the demo task's test split (rerun to regenerate):

    python tests/lm_eval_tasks/make_data.py

demo_shift.jsonl   the first problems of `--task demo-shift`: `id`, `prompt`, `answer` (a generate_until task)
demo_choice.jsonl  the first problems of `--task demo` with four candidate solutions each: the problem's own
                   and three of other problems of its domain (a multiple_choice task)
"""

from __future__ import annotations

import json
from pathlib import Path

from ttscale.demo.task import DemoTask

HERE = Path(__file__).parent
GENERATE, CHOICE = 16, 16           # problems per task
DOMAINS = 4                         # demo problems cycle through the four domains


def generate_rows() -> list[dict]:
    return [{"id": p.id, "prompt": p.prompt, "answer": p.answer} for p in DemoTask(shift="all").load(GENERATE)]


def choice_rows() -> list[dict]:
    problems = DemoTask().load(CHOICE)
    rows = []
    for i, p in enumerate(problems):
        same = problems[i % DOMAINS::DOMAINS]
        at = same.index(p)
        others = [same[(at + k) % len(same)].meta["solution"] for k in (1, 2, 3)]
        gold = i // DOMAINS % 4
        choices = others[:gold] + [p.meta["solution"]] + others[gold:]
        rows.append({"id": p.id, "prompt": p.prompt, "choices": choices, "gold": gold})
    return rows


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    (HERE / "demo_shift.jsonl").write_text(jsonl(generate_rows()))
    (HERE / "demo_choice.jsonl").write_text(jsonl(choice_rows()))
