"""Continuous rerouting's optimiser: layer confidence scores, layer selection, loss and steps.

One call of `adapt_rows` is one adaptation phase for a batch of rows (branches): `cfg.steps`
gradient steps on the router deltas, minimising each row's mean next-token cross-entropy over its
own context. Rows are independent: the loss is the *sum* of per-row means, each row's deltas see
only their own row's gradient, and Adam is elementwise, so a row's result equals adapting it alone.

The first step's forward doubles as the scoring pass: it records each layer's confidence score
C_i = mean over the row's tokens of -(1/k) sum_j log p(chosen expert j), from which the layers to
update are selected (PAPER.md 1.2). Later steps let gradient flow only into selected layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ttscale.branch import DeltaState
from ttscale.routing.config import SELECTIONS, RerouteConfig  # noqa: F401  (re-exported)
from ttscale.routing.deltas import DeltaTable, RoutingRecord

_BETAS, _EPS = (0.9, 0.999), 1e-8


@dataclass
class PhaseResult:
    """Per-row outcome of one adaptation phase."""
    slots: Tensor            # [B, L] bool: layers updated
    losses: Tensor           # [B, steps]: context NLL before each step
    entropy: Tensor          # [B]: mean routing entropy over MoE layers before the phase


def select_layers(score: Tensor, cfg: RerouteConfig) -> tuple[Tensor, Tensor]:
    """From confidence scores `[B, L]`: which layers each row updates, and each one's learning rate."""
    n_layers = score.shape[1]
    lr = torch.full_like(score, cfg.lr)
    if cfg.select in ("all", "soft"):
        mask = torch.ones_like(score, dtype=torch.bool)
        if cfg.select == "soft":   # the literal formula: scale by C_l / mean(C)
            lr = lr * score / score.mean(-1, keepdim=True).clamp(min=1e-12)
        return mask, lr
    k = max(1, math.ceil(cfg.ratio * n_layers))
    chosen = score.topk(k, dim=-1, largest=cfg.select == "uncertain").indices
    mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, chosen, True)
    return mask, lr


def optimizer_step(state: DeltaState, grad: Tensor, mask: Tensor, lr: Tensor, cfg: RerouteConfig) -> None:
    """Update `[B, L, E]` stacked states in place where `mask` `[B, L]` is set."""
    m3 = mask[..., None]
    if cfg.optimizer == "sgd":
        state.delta -= torch.where(m3, lr[..., None] * grad, 0.0)
        return
    (b1, b2) = _BETAS
    state.exp_avg.copy_(torch.where(m3, b1 * state.exp_avg + (1 - b1) * grad, state.exp_avg))
    state.exp_avg_sq.copy_(torch.where(m3, b2 * state.exp_avg_sq + (1 - b2) * grad * grad, state.exp_avg_sq))
    state.steps += mask
    t = state.steps.clamp(min=1)[..., None]
    step = lr[..., None] * (state.exp_avg / (1 - b1 ** t)) / ((state.exp_avg_sq / (1 - b2 ** t)).sqrt() + _EPS)
    state.delta -= torch.where(m3, step, 0.0)


def context_nll(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                chunk: int = 512) -> Tensor:
    """`[B]`: each row's mean next-token cross-entropy over its own (unpadded) tokens.

    Logits are computed from the final hidden states `chunk` positions at a time under activation
    checkpointing, so the float32 full-vocabulary logits of the whole context never exist at once.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state[:, :-1]
    head, scale = model.get_output_embeddings(), getattr(model.config, "logits_scaling", 1.0)
    targets = input_ids[:, 1:]
    valid = (attention_mask[:, 1:] * attention_mask[:, :-1]).float()
    total = hidden.new_zeros(input_ids.shape[0], dtype=torch.float32)
    for start in range(0, targets.shape[1], chunk):
        part = slice(start, start + chunk)
        ce = checkpoint(_token_ce, head, hidden[:, part], targets[:, part], scale, use_reentrant=False)
        total = total + (ce * valid[:, part]).sum(-1)
    return total / valid.sum(-1).clamp(min=1)


def _token_ce(head: nn.Module, hidden: Tensor, targets: Tensor, scale: float) -> Tensor:
    logits = head(hidden).float() / scale
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def adapt_rows(model: nn.Module, table: DeltaTable, input_ids: Tensor, attention_mask: Tensor,
               state: DeltaState, cfg: RerouteConfig) -> PhaseResult:
    """One adaptation phase for stacked row states (`[B, L, E]`, updated in place)."""
    if not cfg.keep_optimizer:
        state.reset_optimizer()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    losses, mask, lr, entropy = [], None, None, None
    table.load(state.delta)
    table.values.requires_grad_(True)
    try:
        for step in range(cfg.steps):
            table.record = RoutingRecord() if step == 0 else None
            nll = context_nll(model, input_ids, attention_mask, position_ids)
            (grad,) = torch.autograd.grad(nll.sum(), table.values)
            losses.append(nll.detach())
            if step == 0:
                score, entropy = table.record.per_row(attention_mask)
                mask, lr = select_layers(score, cfg)
                table.trainable = set(mask.any(0).nonzero().flatten().tolist())
            with torch.no_grad():
                optimizer_step(state, grad.transpose(0, 1), mask, lr, cfg)
                table.values.copy_(state.delta.transpose(0, 1))
    finally:
        table.values.requires_grad_(False)
        table.record, table.trainable = None, None
    return PhaseResult(mask, torch.stack(losses, dim=1), entropy.mean(-1))
