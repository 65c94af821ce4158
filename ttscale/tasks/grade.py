"""Grade completions produced anywhere with a task's grader: `ttscale grade --task NAME --answers FILE.jsonl`."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ttscale.rundir import check_writable, write_text
from ttscale.tasks import extract as extraction
from ttscale.tasks.base import Problem
from ttscale.tasks.registry import TaskSettings, load_task


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


def grade_answers(task_name: str, answers_file: Path, settings: TaskSettings | None = None) -> list[dict[str, Any]]:
    """One result per answer: its extracted prediction and whether it is correct (code runs sandboxed)."""
    return _graded(task_name, answers_file, settings)[0]


def _graded(task_name: str, answers_file: Path, settings: TaskSettings | None) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The results, and the task's problems."""
    settings = settings or TaskSettings()
    answers = read_answers(answers_file)
    task = load_task(task_name, settings)
    problems = {p.id: p for p in task.load()}
    unknown = [a["id"] for a in answers if a["id"] not in problems]
    if unknown:
        raise ValueError(f"{len(unknown)} answer ids are not in task {task_name}, e.g. {unknown[0]!r}")
    rule = extraction.parse(settings.extract) if settings.extract else None

    def one(answer: dict[str, Any]) -> dict[str, Any]:
        problem = problems[answer["id"]]
        prediction = rule(answer["completion"]) if rule else task.extract(answer["completion"], problem)
        return {"id": answer["id"], "prediction": prediction, "gold": problem.answer,
                "correct": task.grade(prediction, problem)}

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(one, answers)), list(problems.values())


def grade_command(task: str, answers: Path, out: Path | None = None, settings: TaskSettings | None = None) -> int:
    """`ttscale grade`: grade, write per-item results to `out` (JSONL) if given, print the accuracy over
    all the task's problems with a gold answer (one without an answer counts as wrong, and the line says
    how many had none). Returns the exit code: 0, or 2 after a one-line message on bad input."""
    try:
        if out is not None:
            check_writable(Path(out), "--out")
        results, problems = _graded(task, Path(answers), settings)
        if out is not None:
            write_text(Path(out), "".join(json.dumps(r) + "\n" for r in results), "--out")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(accuracy_line(task, results, problems))
    return 0


def accuracy_line(task: str, results: list[dict[str, Any]], problems: list[Problem]) -> str:
    gold = {p.id for p in problems if p.answer is not None}
    correct = {r["id"] for r in results if r["correct"]}
    answered = {r["id"] for r in results if r["correct"] is not None}
    if not gold:
        return f"{task}: {len(results)} answers, none graded (the task has no gold answers)"
    line = f"{task}: {len(correct)}/{len(gold)} correct, accuracy {len(correct) / len(gold):.3f}"
    if len(answered) < len(gold):
        line += (f" ({len(gold) - len(answered)} problems without an answer count as wrong; "
                 f"{len(correct)}/{len(answered)} of those answered)")
    return line
