"""The demo testbed's synthetic domains: pairs of rules with one surface form, told apart by a cue word.

Each example is one line pair, `Q: <cue> <input>` then `A: <steps>; = <answer>`:

    Q: add 347 265                                Q: oct 347 265
    A: 7+5=12 c1; 4+6+1=11 c1; 3+2+1=6; = 612     A: 7+5=14 c1; 4+6+1=13 c1; 3+2+1=6; = 634

Two pairs of domains share their questions' form and differ only in the rule: `add` (base 10) and `oct`
(base 8) add the same kind of operands (digits 0-7), `rev` reverses a word and `dup` reverses it
doubling every letter. In training the cue word always names the rule, every example of a sequence
draws its own domain, and the router is taught to send each domain to its own group of experts
(recipes/train_demo_model.py). So the model reads the rule from the cue alone, and the rule lives in
which experts run.

The shift: a prompt whose cue names the *partner* rule (`add` over octal solutions). The router's prior
choice is then wrong, while the prompt's solved examples show the right computation: the situation
continuous rerouting claims to fix, and one that in-context reading cannot, since the model was never
taught to take a rule from other examples.
"""

from __future__ import annotations

import random
from typing import Callable

ALPHABET = list("0123456789abcdefghijklmnopqrstuvwxyzAQ +=;:\n")
SHOTS = 3                                     # solved examples before the question in a demo prompt
DOMAINS_ORDER = ("add", "oct", "rev", "dup")
PARTNER = {"add": "oct", "oct": "add", "rev": "dup", "dup": "rev"}


def _digits(n: int, base: int) -> list[int]:
    out = []
    while True:
        out.append(n % base)
        n //= base
        if n == 0:
            return out


def _to_base(n: int, base: int) -> str:
    return "".join(str(d) for d in reversed(_digits(n, base)))


def _operand(rng: random.Random) -> str:
    """2-3 digits 0-7, no leading zero: a valid numeral in base 8 and base 10 alike."""
    return str(rng.randint(1, 7)) + "".join(str(rng.randint(0, 7)) for _ in range(rng.randint(1, 2)))


def _addition(base: int) -> Callable[[random.Random], tuple[str, str]]:
    def solve(a: str, b: str) -> str:
        da, db = [int(c) for c in reversed(a)], [int(c) for c in reversed(b)]
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
        return "; ".join(steps) + f"; = {''.join(str(d) for d in reversed(result))}"

    def draw(rng: random.Random) -> tuple[str, str]:
        a, b = _operand(rng), _operand(rng)
        return f"{a} {b}", solve(a, b)
    return draw


def _reversal(repeat: int) -> Callable[[random.Random], tuple[str, str]]:
    def draw(rng: random.Random) -> tuple[str, str]:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 6)))
        letters = [c * repeat for c in reversed(word)]
        return word, " ".join(letters) + f"; = {''.join(letters)}"
    return draw


# domain -> rng -> (input, solution); a question is "<cue> <input>"
RULES: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": _addition(10), "oct": _addition(8), "rev": _reversal(1), "dup": _reversal(2),
}


def example(question: str, solution: str) -> str:
    return f"Q: {question}\nA: {solution}\n"


def solved(rule: str, rng: random.Random, cue: str | None = None) -> tuple[str, str]:
    """One (question, solution) of `rule`, its question cued `cue` (default: the rule's own name)."""
    given, solution = RULES[rule](rng)
    return f"{cue or rule} {given}", solution


def prompt(rule: str, rng: random.Random, shots: int = SHOTS, shift: bool = False) -> tuple[str, str, str]:
    """A prompt (`shots` solved examples and a question, all of `rule`), its question and the question's
    solution. With `shift`, every cue names the partner rule."""
    cue = PARTNER[rule] if shift else rule
    examples = [solved(rule, rng, cue) for _ in range(shots + 1)]
    question, solution = examples[-1]
    return "".join(example(q, s) for q, s in examples[:-1]) + f"Q: {question}\nA:", question, solution


def training_examples(rng: random.Random, exclude: set[str], count: int = SHOTS + 1) -> list[tuple[str, str, str]]:
    """`count` (domain, question, solution) triples, each of a uniformly drawn domain and cued truthfully,
    whose inputs (the question without its cue) are not in `exclude`."""
    out = []
    while len(out) < count:
        rule = rng.choice(DOMAINS_ORDER)
        question, solution = solved(rule, rng)
        if question.split(" ", 1)[1] not in exclude:
            out.append((rule, question, solution))
    return out
