"""One routing rule per MoE family, found by router class.

transformers 5.x routers return `(router_logits, topk_weights, topk_indices)` and do top-k
themselves, so a delta must enter *inside* the router. A `RoutingRule` restates one family's router
as two pure functions of float32 logits `z` (router logits plus delta): `route` gives the experts'
weights and indices exactly as the family's router would, `probs` gives the router's distribution
over all experts (for the layer-confidence score and routing entropy). Every backend shares these.

With a zero delta each rule reproduces its router bit for bit (tests/test_routing.py). Routers that
route in their input's dtype (GPT-OSS) get `z` cast back to it, so bf16 models stay bit-identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class RoutingRule:
    family: str
    router_classes: tuple[str, ...]
    logits: Callable[[nn.Module, Tensor], Tensor]            # (router, hidden [N, H]) -> [N, E]
    route: Callable[[nn.Module, Tensor, torch.dtype], tuple[Tensor, Tensor]]  # (router, z, hidden dtype)
    probs: Callable[[nn.Module, Tensor], Tensor]             # (router, z) -> [N, E], rows sum to 1
    gradient: str                                            # which experts' deltas get gradient per token


# --- logits -------------------------------------------------------------------------------

def _linear_logits(router: nn.Module, h: Tensor) -> Tensor:
    return F.linear(h, router.weight, getattr(router, "bias", None))


def _fp32_logits(router: nn.Module, h: Tensor) -> Tensor:
    return F.linear(h.type(torch.float32), router.weight.type(torch.float32))


# --- route: (weights, indices) --------------------------------------------------------------

def _softmax_topk(router: nn.Module, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """OLMoE, Qwen2-MoE, Qwen3-MoE: softmax over all experts, top-k, optional renormalisation."""
    weights, indices = torch.topk(z.softmax(dim=-1), router.top_k, dim=-1)
    if router.norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(dtype), indices


def _mixtral(router: nn.Module, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Mixtral: softmax, top-k, always renormalised; weights stay float32."""
    weights, indices = torch.topk(z.softmax(dim=-1), router.top_k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), indices


def _group_mask(group_scores: Tensor, router: nn.Module) -> Tensor:
    """DeepSeek group-limited routing: a bool [N, E] mask of experts in the top `topk_group` groups."""
    group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    per_group = router.num_experts // router.num_group
    return group_mask.unsqueeze(-1).expand(-1, router.num_group, per_group).reshape(-1, router.num_experts).bool()


def _deepseek_v2(router: nn.Module, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """DeepSeek-V2: softmax, greedy or group-limited top-k, times `routed_scaling_factor`."""
    scores = z.softmax(dim=-1, dtype=torch.float32)
    if router.topk_method == "group_limited_greedy":
        per_group = router.num_experts // router.num_group
        group_scores = scores.view(-1, router.num_group, per_group).max(dim=-1).values
        scores = scores.masked_fill(~_group_mask(group_scores, router), 0.0)
    elif router.topk_method != "greedy":
        raise ValueError(f"DeepSeek-V2 topk_method {router.topk_method!r} is not supported")
    weights, indices = torch.topk(scores, k=router.top_k, dim=-1, sorted=False)
    return weights * router.routed_scaling_factor, indices


def _deepseek_v3(router: nn.Module, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """DeepSeek-V3: sigmoid; the correction bias steers selection only; group-limited top-k."""
    scores = z.sigmoid()
    for_choice = scores + router.e_score_correction_bias
    per_group = router.num_experts // router.num_group
    group_scores = for_choice.view(-1, router.num_group, per_group).topk(2, dim=-1)[0].sum(dim=-1)
    for_choice = for_choice.masked_fill(~_group_mask(group_scores, router), float("-inf"))
    indices = torch.topk(for_choice, k=router.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, indices)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * router.routed_scaling_factor, indices


def _topk_then_softmax(router: nn.Module, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Granite-MoE: top-k on the float32 logits, softmax over the k chosen."""
    top, indices = z.topk(router.top_k, dim=-1)
    return torch.softmax(top, dim=-1).to(dtype), indices


def _gpt_oss(router: nn.Module, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """GPT-OSS: as Granite, but routed in the model's dtype."""
    top, indices = torch.topk(z.to(dtype), router.top_k, dim=-1)
    return F.softmax(top, dim=1, dtype=top.dtype), indices


# --- probs: the router's distribution over all experts --------------------------------------

def _softmax_probs(router: nn.Module, z: Tensor) -> Tensor:
    return z.softmax(dim=-1)


def _sigmoid_probs(router: nn.Module, z: Tensor) -> Tensor:
    scores = z.sigmoid()
    return scores / scores.sum(dim=-1, keepdim=True)


_ALL = "all experts (softmax over every expert before top-k)"
_CHOSEN = "chosen experts only (weights renormalised over the top-k)"

RULES: tuple[RoutingRule, ...] = (
    RoutingRule("olmoe", ("OlmoeTopKRouter",), _linear_logits, _softmax_topk, _softmax_probs, _ALL),
    RoutingRule("qwen2_moe", ("Qwen2MoeTopKRouter",), _linear_logits, _softmax_topk, _softmax_probs, _ALL),
    RoutingRule("qwen3_moe", ("Qwen3MoeTopKRouter",), _linear_logits, _softmax_topk, _softmax_probs, _ALL),
    RoutingRule("mixtral", ("MixtralTopKRouter",), _linear_logits, _mixtral, _softmax_probs, _CHOSEN),
    RoutingRule("deepseek_v2", ("DeepseekV2TopkRouter",), _fp32_logits, _deepseek_v2, _softmax_probs, _ALL),
    RoutingRule("deepseek_v3", ("DeepseekV3TopkRouter",), _fp32_logits, _deepseek_v3, _sigmoid_probs, _CHOSEN),
    RoutingRule("gpt_oss", ("GptOssTopKRouter",), _linear_logits, _gpt_oss, _softmax_probs, _CHOSEN),
    RoutingRule("granitemoe", ("GraniteMoeTopKRouter",), _linear_logits, _topk_then_softmax, _softmax_probs,
                _CHOSEN),
)
_BY_CLASS = {cls: rule for rule in RULES for cls in rule.router_classes}

# Families whose routers exist but cannot be rerouted, with the reason.
UNSUPPORTED = {
    "PhimoeTopKRouter": "PhiMoE's sparsemixer routing gives router deltas zero gradient in eval mode "
                        "(the masked softmax keeps only the arg-max expert)",
}

SUPPORTED_FAMILIES = ", ".join(rule.family for rule in RULES)
_ROUTER_NAME = re.compile(r"(TopK|Topk|Sparse|Moe|MoE).*(Router|Gate)$|Router$")
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


class UnsupportedModelError(ValueError):
    """The model has no MoE routers ttscale can reroute."""


@dataclass(frozen=True)
class RouterSite:
    layer: int            # 0-based decoder layer index
    name: str             # module path, for messages
    router: nn.Module
    rule: RoutingRule

    @property
    def num_experts(self) -> int:
        return self.router.weight.shape[0]


def find_routers(model: nn.Module) -> list[RouterSite]:
    """Every MoE router of a supported family, in layer order; a clear error otherwise."""
    sites, unknown = [], []
    for name, module in model.named_modules():
        cls = type(module).__name__
        if cls in UNSUPPORTED:
            raise UnsupportedModelError(f"{cls}: unsupported: {UNSUPPORTED[cls]}; supported families: "
                                        f"{SUPPORTED_FAMILIES}")
        rule = _BY_CLASS.get(cls)
        if rule is None:
            if _ROUTER_NAME.search(cls):
                unknown.append(cls)
            continue
        match = _LAYER_INDEX.search(name)
        if match is None:
            raise UnsupportedModelError(f"router {name} ({cls}) is not inside a decoder layer")
        sites.append(RouterSite(int(match.group(1)), name, module, rule))
    if not sites:
        kind = (f"an unsupported MoE family (router classes: {', '.join(sorted(set(unknown)))})" if unknown
                else "no MoE routers (a dense model?)")
        raise UnsupportedModelError(f"{type(model).__name__} has {kind}; supported families: {SUPPORTED_FAMILIES}")
    families = {site.rule.family for site in sites}
    if len(families) > 1 or len({site.num_experts for site in sites}) > 1:
        raise UnsupportedModelError(f"{type(model).__name__} mixes router families or expert counts: {families}")
    return sorted(sites, key=lambda site: site.layer)
