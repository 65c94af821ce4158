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
    """MoE-aware FLOPs: per token, 2 per active parameter (attention projections, the top-k routed and
    the shared experts, the LM head; not the input-embedding lookup), plus attention over the context
    per (query, key) pair; a backward pass costs twice its forward; reward-model FLOPs added as counted.
    Decoder layers an adaptation pass did not run are taken off at the mean layer's cost. Sliding-window
    attention is counted as full attention."""
    per_token = 2 * (info.active_params - info.embedding_params)
    tokens = c.prefill_tokens + c.generated_tokens + c.adapt_forward_tokens + c.score_tokens
    forward = per_token * tokens + info.attention_flops_per_pair * c.attention_pairs_forward
    backward = 2 * (per_token * c.adapt_backward_tokens + info.attention_flops_per_pair * c.attention_pairs_backward)
    per_layer, pair_per_layer = 2 * info.layer_params, info.attention_flops_per_pair / max(info.n_layers, 1)
    skipped = (per_layer * c.skipped_layer_tokens_forward + pair_per_layer * c.skipped_layer_pairs_forward
               + 2 * (per_layer * c.skipped_layer_tokens_backward + pair_per_layer * c.skipped_layer_pairs_backward))
    return float(forward + backward - skipped + c.reward_flops)


def as_record(c: Compute, info: ModelInfo) -> dict[str, Any]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "generated_tokens": c.generated_tokens,
        "prefill_tokens": c.prefill_tokens,
        "adapt_token_passes": {"forward": c.adapt_forward_tokens, "backward": c.adapt_backward_tokens},
        "score_tokens": c.score_tokens,
        "reward_tokens": c.reward_tokens,
        "flops": flops(c, info),
        "seconds": {phase: round(s, 6) for phase, s in sorted(c.seconds.items())},
    }
