"""Aggregators: pick one answer from a problem's candidates."""

from __future__ import annotations

import math
import random
from typing import Hashable, Sequence


def vote(keys: Sequence[Hashable], weights: Sequence[float] | None = None, seed: int = 0) -> int | None:
    """Index of a sample carrying the answer with the most (weighted) votes.

    Samples with no answer (key None) do not vote. Ties are broken by a draw seeded with `seed`
    over the tied answers in order of first appearance, so a tie resolves the same way every time.
    """
    weights = [1.0] * len(keys) if weights is None else list(weights)
    totals: dict[Hashable, float] = {}
    first: dict[Hashable, int] = {}
    for i, (key, w) in enumerate(zip(keys, weights)):
        if key is None:
            continue
        totals[key] = totals.get(key, 0.0) + w
        first.setdefault(key, i)
    if not totals:
        return None
    top = max(totals.values())
    tied = [key for key in first if math.isclose(totals[key], top, rel_tol=1e-9)]
    return first[tied[0] if len(tied) == 1 else random.Random(seed).choice(tied)]


def vote_weights(scores: Sequence[float]) -> list[float]:
    """Scores to positive vote weights: exp(score - max), e.g. a geometric-mean probability for log-probs."""
    top = max(scores)
    return [math.exp(s - top) for s in scores]


def best(scores: Sequence[float]) -> int:
    """Index of the highest score (the first one on a tie)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
