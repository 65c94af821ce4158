"""Compute accounting: token counts, seconds per phase and FLOPs of a problem's branches."""

from __future__ import annotations

from typing import Any, Iterable

from ttscale.backends.base import ModelInfo
from ttscale.branch import Compute


def total(computes: Iterable[Compute]) -> Compute:
    out = Compute()
    for c in computes:
        out += c
    return out


def flops(c: Compute, info: ModelInfo) -> float:
    """2 FLOPs per active non-embedding parameter per token forward, twice that backward.

    Attention over the context is not counted (small next to the weights for short contexts).
    """
    per_token = 2 * (info.active_params - info.embedding_params)
    forward = c.prefill_tokens + c.generated_tokens + c.adapt_forward_tokens + c.score_tokens
    return float(per_token * (forward + 2 * c.adapt_backward_tokens))


def as_record(c: Compute, info: ModelInfo) -> dict[str, Any]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "generated_tokens": c.generated_tokens,
        "prefill_tokens": c.prefill_tokens,
        "adapt_token_passes": {"forward": c.adapt_forward_tokens, "backward": c.adapt_backward_tokens},
        "score_tokens": c.score_tokens,
        "flops": flops(c, info),
        "seconds": {phase: round(s, 6) for phase, s in sorted(c.seconds.items())},
    }
