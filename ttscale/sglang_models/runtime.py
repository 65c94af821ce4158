"""What every rerouted SGLang model shares: the delta table, the TopK that reads it, and the batch hook.

A family's model class is a thin subclass `class XForCausalLM(Rerouted, sglang's XForCausalLM)`.
After SGLang builds the model, every MoE block's `topk` module becomes a `DeltaTopK` of its own
class: the same object, whose `forward` first adds the tokens' deltas to the router logits
(`ttscale.routing.deltas.add_delta`, shared with the HF backend) and then routes exactly as SGLang
would. `prepare_for_forward`, which SGLang's model runner calls eagerly before every forward and
CUDA-graph replay, maps the batch's requests to table rows and fills the token-to-row index.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ttscale.sglang_models.table import RouterDeltaTable

DELTA_KEY = "rr_delta"                    # sampling_params.custom_params[DELTA_KEY]: flat [layers * experts]
ROWS = int(os.environ.get("TTSCALE_SGLANG_DELTA_ROWS", "2048"))
MAX_TOKENS = int(os.environ.get("TTSCALE_SGLANG_MAX_TOKENS", "16384"))

# family -> the class name of its MoE block in SGLang (whose `topk` gets the delta)
MOE_BLOCKS = {"olmoe": "OlmoeMoE", "qwen2_moe": "Qwen2MoeSparseMoeBlock", "qwen3_moe": "Qwen3MoeSparseMoeBlock",
              "mixtral": "MixtralMoE"}

_delta_classes: dict[type, type] = {}


def delta_topk_class(topk_class: type) -> type:
    """`topk_class` with router deltas added to the logits it is given (one subclass per TopK class)."""
    if topk_class not in _delta_classes:
        def forward(self, hidden_states, router_logits, *args, **kwargs):
            router_logits = self.router_deltas.apply(self.delta_slot, router_logits)
            return topk_class.forward(self, hidden_states, router_logits, *args, **kwargs)
        _delta_classes[topk_class] = type(f"Delta{topk_class.__name__}", (topk_class,), {"forward": forward})
    return _delta_classes[topk_class]


def moe_blocks(model: nn.Module, family: str) -> list[nn.Module]:
    """The model's MoE blocks in layer order."""
    name = MOE_BLOCKS[family]
    return [m for m in model.modules() if type(m).__name__ == name]


def install_router_deltas(model: nn.Module, family: str, rows: int = ROWS, max_tokens: int = MAX_TOKENS) -> RouterDeltaTable:
    blocks = moe_blocks(model, family)
    if not blocks:
        raise RuntimeError(f"no {MOE_BLOCKS[family]} blocks found in {type(model).__name__}")
    n_experts = _num_experts(model.config)
    device = next(model.parameters()).device
    table = RouterDeltaTable(len(blocks), n_experts, rows, max_tokens, device)
    for slot, block in enumerate(blocks):
        block.topk.__class__ = delta_topk_class(type(block.topk))
        block.topk.router_deltas, block.topk.delta_slot = table, slot
    return table


def _num_experts(config: Any) -> int:
    for name in ("num_experts", "num_local_experts", "n_routed_experts"):
        if getattr(config, name, None):
            return getattr(config, name)
    raise RuntimeError("cannot tell the number of routed experts from the model config")


def batch_requests(forward_batch: Any) -> tuple[list[str], list[int], list[Any]] | None:
    """(request ids, tokens each contributes, delta payloads) of a forward batch; None when it has no
    requests to map (idle batches, CUDA-graph capture)."""
    mode, rids = forward_batch.forward_mode.name, forward_batch.rids
    if mode == "IDLE" or rids is None:
        return None
    if mode == "DECODE":
        counts = [1] * len(rids)
    elif mode in ("EXTEND", "MIXED"):
        counts = list(forward_batch.extend_seq_lens_cpu)
    else:
        raise RuntimeError(f"router deltas do not support {mode} batches (speculative decoding, split prefill, "
                           f"disaggregation): turn those off")
    custom = getattr(forward_batch.sampling_info, "custom_params", None) or [None] * len(rids)
    payloads = [(c or {}).get(DELTA_KEY) for c in custom]
    return list(rids), counts, payloads


class Rerouted:
    """Mixin for an SGLang MoE CausalLM: per-request router deltas on every MoE layer."""
    family: str

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.router_deltas = install_router_deltas(self, self.family)

    def prepare_for_forward(self, forward_batch) -> None:
        requests = batch_requests(forward_batch)
        if requests is not None:
            self.router_deltas.prepare(*requests)
