"""Grade completions produced anywhere with a task's grader: `ttscale grade --task NAME --answers FILE.jsonl`."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ttscale.rundir import check_writable, write_text
from ttscale.tasks.registry import load_task


def read_answers(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"answers file not found: {path}")
    answers = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answers.append({"id": str(row["id"]), "completion": str(row["completion"])})
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{n}: expected a JSON object with 'id' and 'completion'") from None
    return answers


def grade_answers(task_name: str, answers_file: Path) -> list[dict[str, Any]]:
    """One result per answer: its extracted prediction and whether it is correct (code runs sandboxed)."""
    answers = read_answers(answers_file)
    task = load_task(task_name)
    problems = {p.id: p for p in task.load()}
    unknown = [a["id"] for a in answers if a["id"] not in problems]
    if unknown:
        raise ValueError(f"{len(unknown)} answer ids are not in task {task_name}, e.g. {unknown[0]!r}")

    def one(answer: dict[str, Any]) -> dict[str, Any]:
        problem = problems[answer["id"]]
        prediction = task.extract(answer["completion"], problem)
        return {"id": answer["id"], "prediction": prediction, "gold": problem.answer,
                "correct": task.grade(prediction, problem)}

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(one, answers))


def grade_command(task: str, answers: Path, out: Path | None = None) -> int:
    """`ttscale grade`: grade, write per-item results to `out` (JSONL) if given, print the accuracy.
    Returns the exit code: 0, or 2 after a one-line message on bad input."""
    try:
        if out is not None:
            check_writable(Path(out), "--out")
        results = grade_answers(task, Path(answers))
        if out is not None:
            write_text(Path(out), "".join(json.dumps(r) + "\n" for r in results), "--out")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    graded = [r["correct"] for r in results if r["correct"] is not None]
    accuracy = f"{sum(graded) / len(graded):.3f}" if graded else "n/a"
    print(f"{task}: {sum(graded)}/{len(graded)} correct, accuracy {accuracy}")
    return 0
