"""The demo testbed's synthetic domains: short step-by-step solutions an MoE can specialise on.

Each example is one line pair, `Q: <domain> <input>` then `A: <steps>; = <answer>`:

    Q: add 347 285
    A: 7+5=12 c1; 4+8+1=13 c1; 3+2+1=6; = 632

Common domains (`add`, `rev`, `sum`) make up most of the training corpus; rare ones (`oct`: the same
addition in base 8; `dup`: reversal with every letter doubled) appear in 3 % of it each. A prompt is
two solved examples of one domain followed by a question, so the shifted split's prompts carry
in-context evidence of a domain the model saw rarely, which continuous rerouting can adapt to.
"""

from __future__ import annotations

import random
from typing import Callable

ALPHABET = list("0123456789abcdefghijklmnopqrstuvwxyzAQ +=;:\n")
SHOTS = 2


def _digits(n: int, base: int) -> list[int]:
    out = []
    while True:
        out.append(n % base)
        n //= base
        if n == 0:
            return out


def _number(rng: random.Random, base: int) -> int:
    return rng.randrange(base, base ** rng.randint(2, 4))


def _addition(rng: random.Random, base: int, keyword: str) -> tuple[str, str]:
    a, b = _number(rng, base), _number(rng, base)
    da, db = _digits(a, base), _digits(b, base)
    steps, carry, result = [], 0, []
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        total = x + y + carry
        term = f"{x}+{y}" + (f"+{carry}" if carry else "")
        carry = total // base
        steps.append(f"{term}={_to_base(total, base)}" + (" c1" if carry else ""))
        result.append(total % base)
    if carry:
        result.append(carry)
    answer = "".join(str(d) for d in reversed(result))
    return f"{keyword} {_to_base(a, base)} {_to_base(b, base)}", "; ".join(steps) + f"; = {answer}"


def _to_base(n: int, base: int) -> str:
    return "".join(str(d) for d in reversed(_digits(n, base)))


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7)))


def _reverse(rng: random.Random, repeat: int, keyword: str) -> tuple[str, str]:
    word = _word(rng)
    letters = [c * repeat for c in reversed(word)]
    return f"{keyword} {word}", " ".join(letters) + f"; = {''.join(letters)}"


def _chain_sum(rng: random.Random) -> tuple[str, str]:
    terms = [rng.randint(1, 30) for _ in range(rng.randint(3, 5))]
    steps, total = [], terms[0]
    for t in terms[1:]:
        steps.append(f"{total}+{t}={total + t}")
        total += t
    return "sum " + " ".join(map(str, terms)), "; ".join(steps) + f"; = {total}"


DOMAINS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": lambda rng: _addition(rng, 10, "add"),
    "rev": lambda rng: _reverse(rng, 1, "rev"),
    "sum": _chain_sum,
    "oct": lambda rng: _addition(rng, 8, "oct"),
    "dup": lambda rng: _reverse(rng, 2, "dup"),
}
COMMON, RARE = ("add", "rev", "sum"), ("oct", "dup")
TRAINING_MIX = {"add": 0.31, "rev": 0.31, "sum": 0.32, "oct": 0.03, "dup": 0.03}


def example(question: str, solution: str) -> str:
    return f"Q: {question}\nA: {solution}\n"


def prompt(domain: str, rng: random.Random) -> tuple[str, str, str]:
    """A prompt (SHOTS solved examples and a question), its question and the question's solution."""
    shots = [DOMAINS[domain](rng) for _ in range(SHOTS)]
    question, solution = DOMAINS[domain](rng)
    return "".join(example(q, s) for q, s in shots) + f"Q: {question}\nA:", question, solution


def training_sequence(rng: random.Random, exclude: set[str]) -> str:
    """SHOTS + 1 solved examples of one domain drawn from the training mix, avoiding held-out questions."""
    domain = rng.choices(list(TRAINING_MIX), weights=list(TRAINING_MIX.values()))[0]
    parts = []
    while len(parts) < SHOTS + 1:
        question, solution = DOMAINS[domain](rng)
        if question not in exclude:
            parts.append(example(question, solution))
    return "".join(parts)
