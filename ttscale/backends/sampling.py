"""Per-branch sampling: temperature, top-k, top-p, with randomness fixed by (seed, position).

Each token's uniform draw depends only on the branch's seed and the token's position in the
generation, so a branch reproduces whatever it is batched with and however its growth is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


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


def sample(logits: Tensor, params: Sequence[Sampling], uniforms: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Next tokens `[B]` and their log-probs under the unmodified distribution (temperature 1)."""
    logits = logits.float()
    logprobs = logits.log_softmax(-1)
    temperature = torch.tensor([p.temperature for p in params], device=logits.device)
    greedy = logits.argmax(-1)
    if bool((temperature == 0).all()):
        tokens = greedy
    else:
        probs = (logits / temperature.clamp(min=1e-6)[:, None]).softmax(-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        rank = torch.arange(probs.shape[-1], device=logits.device)
        top_k = torch.tensor([p.top_k or probs.shape[-1] for p in params], device=logits.device)
        top_p = torch.tensor([p.top_p for p in params], device=logits.device)
        before = sorted_probs.cumsum(-1) - sorted_probs               # mass of better tokens
        keep = (rank[None] < top_k[:, None]) & ((before < top_p[:, None]) | (rank[None] == 0))
        cdf = (sorted_probs * keep).cumsum(-1)
        u = torch.tensor(uniforms, device=logits.device, dtype=cdf.dtype) * cdf[:, -1]
        pick = torch.searchsorted(cdf, u[:, None]).clamp(max=probs.shape[-1] - 1)
        tokens = torch.where(temperature == 0, greedy, order.gather(1, pick).squeeze(1))
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)
