"""Per-branch sampling: temperature, top-k, top-p, with randomness fixed by (seed, position).

Each token's uniform draw depends only on the branch's seed and the token's position in the
generation, so a branch reproduces whatever it is batched with and however its growth is chunked.
The sampler itself (torch) is `ttscale.backends.sampler`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0         # 0: greedy
    top_p: float = 1.0
    top_k: int = 0                   # 0: no limit
    max_new_tokens: int = 512        # total generated tokens of a branch

    def __post_init__(self):
        for name in LIMITS:
            check(f"sample.{name}", getattr(self, name))


LIMITS = {   # setting -> (valid?, what it must be); also checked under search sections (`sc.temperature`)
    "temperature": (lambda v: v >= 0, "at least 0 (0: greedy)"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k": (lambda v: v >= 0, "at least 0 (0: no limit)"),
    "max_new_tokens": (lambda v: v >= 1, "at least 1"),
}


def check(setting: str, value) -> None:
    """Refuse a sampling value out of range, naming the setting as the user wrote it (`sc.temperature`)."""
    valid, rule = LIMITS[setting.rsplit(".", 1)[-1]]
    if not valid(value):
        raise ValueError(f"invalid setting {setting}={value!r}: must be {rule}")


def uniform(seed: int, position: int) -> float:
    return float(np.random.default_rng((seed, position)).random())
