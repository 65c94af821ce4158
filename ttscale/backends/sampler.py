"""The sampler: next tokens for a batch of rows, each with its own `Sampling` and uniform draw."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ttscale.backends.sampling import Sampling


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
