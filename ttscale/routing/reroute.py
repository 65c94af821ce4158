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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ttscale.branch import DeltaState
from ttscale.routing.config import SELECTIONS, RerouteConfig  # noqa: F401  (re-exported)
from ttscale.routing.deltas import DeltaTable, RoutingRecord
from ttscale.routing.guard import Decision, PhaseGuard, holdout_split

_BETAS, _EPS = (0.9, 0.999), 1e-8


@dataclass
class PhaseResult:
    """Per-row outcome of one adaptation phase."""
    slots: Tensor                    # [B, L] bool: layers updated
    losses: list[list[float]]        # per row: the fitted NLL at each forward (before each step; last: after)
    entropy: Tensor                  # [B]: mean routing entropy over MoE layers before the phase
    forwards: Tensor                 # [B]: forward passes over the row's context
    backwards: Tensor                # [B]: backward passes
    skipped_forward: Tensor          # [B]: decoder layers not run, summed over the row's forwards
    skipped_backward: Tensor         # [B]: ... over its backwards (each stops at the lowest selected layer)
    guard: list[Decision] | None     # per row, when a guard ran


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
    """`[B]`: each row's mean next-token cross-entropy over its own (unpadded) tokens."""
    return part_nll(model, input_ids, attention_mask, position_ids, [target_mask(attention_mask)], chunk)[0]


def target_mask(attention_mask: Tensor) -> Tensor:
    """`[B, T-1]`: which next-token targets are real tokens predicted from a real token."""
    return (attention_mask[:, 1:] * attention_mask[:, :-1]).bool()


def part_nll(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
             parts: list[Tensor], chunk: int = 512) -> list[Tensor]:
    """For each part (a `[B, T-1]` target mask), each row's mean next-token cross-entropy over its targets.

    One forward serves every part. Logits are computed from the final hidden states `chunk` positions at a
    time under activation checkpointing, so the float32 full-vocabulary logits of the whole context never
    exist at once.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state[:, :-1]
    head, scale = model.get_output_embeddings(), getattr(model.config, "logits_scaling", 1.0)
    targets = input_ids[:, 1:]
    weights = [part.float() for part in parts]
    totals = [hidden.new_zeros(input_ids.shape[0], dtype=torch.float32) for _ in parts]
    for start in range(0, targets.shape[1], chunk):
        span = slice(start, start + chunk)
        ce = checkpoint(_token_ce, head, hidden[:, span], targets[:, span], scale, use_reentrant=False)
        totals = [total + (ce * w[:, span]).sum(-1) for total, w in zip(totals, weights)]
    return [total / w.sum(-1).clamp(min=1) for total, w in zip(totals, weights)]


def _token_ce(head: nn.Module, hidden: Tensor, targets: Tensor, scale: float) -> Tensor:
    logits = head(hidden).float() / scale
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def adapt_rows(model: nn.Module, table: DeltaTable, input_ids: Tensor, attention_mask: Tensor,
               state: DeltaState, cfg: RerouteConfig, reuse_lower: bool = True,
               full_backward: bool = False) -> PhaseResult:
    """One adaptation phase for stacked row states (`[B, L, E]`, updated in place).

    Work the fitted deltas cannot change is done once: every backward (the first one too) stops at the
    lowest selected layer, since each layer's delta is its own autograd leaf, and later forwards start
    from the hidden states entering that layer, kept from the first forward. Rows the guard stops leave
    the batch. `reuse_lower=False` and `full_backward=True` (the first backward through every layer) undo
    the two savings, so `ttscale bench` can measure them.
    """
    if not cfg.keep_optimizer:
        state.reset_optimizer()
    rows, n_slots = input_ids.shape[0], len(table.sites)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    valid = target_mask(attention_mask)
    fit, held = holdout_split(valid, cfg.guard_holdout) if cfg.guard == "holdout" else (valid, None)
    guard = PhaseGuard(cfg, state) if cfg.guard != "none" else None
    counts = {name: torch.zeros(rows, dtype=torch.long) for name in ("forward", "backward")}
    skipped = {name: torch.zeros(rows, dtype=torch.long) for name in ("forward", "backward")}
    losses: list[list[float]] = [[] for _ in range(rows)]
    lower = LowerLayers(decoder_layers(model, table)) if reuse_lower else None
    active, trainable = torch.arange(rows), set()
    entropy_after = torch.full((rows,), math.nan)      # after the last step, where a guarded phase measured it
    last = cfg.steps if guard is not None else cfg.steps - 1     # a guarded phase also evaluates its last step
    try:
        for step in range(last + 1):
            if guard is not None:
                active = active[guard.active[active]]
            if len(active) == 0:
                break
            first, evaluate_only = step == 0, step == cfg.steps
            table.load(state.delta[active])
            table.record = (RoutingRecord(logp={} if first and cfg.guard == "trust" else None)
                            if first or evaluate_only else None)
            table.train(set(range(n_slots)) if first else set() if evaluate_only else trainable)
            with (lower.skipping(active) if lower is not None and not first else nullcontext()):
                parts = part_nll(model, input_ids[active], attention_mask[active], position_ids[active],
                                 [fit[active]] + ([held[active]] if held is not None else []))
            counts["forward"][active] += 1
            if first:
                score, entropy = table.record.per_row(attention_mask)
                entropy = entropy.mean(-1)
                mask, lr = select_layers(score, cfg)
                trainable = set(mask.any(0).nonzero().flatten().tolist())
                lowest = min(table.layers[s] for s in trainable)
                if lower is not None:
                    lower.settle(lowest)
                if cfg.guard == "trust":
                    table.kl_ref = {slot: logp.reshape(-1, logp.shape[-1]) for slot, logp in table.record.logp.items()}
            elif lower is not None:
                skipped["forward"][active] += lowest
            if evaluate_only:
                entropy_after[active] = table.record.per_row(attention_mask[active])[1].mean(-1).cpu()
            if guard is not None:
                guard.observe(step, active, parts[1] if held is not None else None, state)
            for i, row in enumerate(active.tolist()):
                losses[row].append(float(parts[0][i].detach()))
            if evaluate_only:
                break
            going = torch.ones(len(active), dtype=torch.bool) if guard is None else guard.active[active]
            stepping = active[going]
            if not len(stepping):
                break
            loss = parts[0]
            if cfg.guard == "trust" and not first:
                loss = loss + cfg.guard_kl * _mean_kl(table, attention_mask[active], n_slots)
            wanted = range(n_slots) if first and full_backward else sorted(trainable)
            grads = dict(zip(wanted, torch.autograd.grad(loss[going].sum(), [table.leaves[slot] for slot in wanted])))
            counts["backward"][stepping] += 1
            skipped["backward"][stepping] += 0 if first and full_backward else lowest
            table.kl = {}
            if guard is not None:
                guard.stepped(stepping)
            with torch.no_grad():
                grad = torch.zeros(len(active), n_slots, state.delta.shape[-1], device=state.delta.device)
                for slot in trainable:
                    grad[:, slot] = grads[slot]
                sub = DeltaState(*(t[stepping] for t in state.tensors()))
                optimizer_step(sub, grad[going], mask[stepping], lr[stepping], cfg)
                for mine, theirs in zip(state.tensors(), sub.tensors()):
                    mine[stepping] = theirs
    finally:
        table.leaves, table.record, table.kl_ref, table.kl = None, None, None, {}
        if lower is not None:
            lower.release()
    decisions = guard.finish(state, entropy, entropy_after) if guard is not None else None
    return PhaseResult(mask, losses, entropy, counts["forward"], counts["backward"], skipped["forward"],
                       skipped["backward"], decisions)


def _mean_kl(table: DeltaTable, attention_mask: Tensor, n_slots: int) -> Tensor:
    """`[B]`: mean over tokens and MoE layers of the routing KL from the phase's start (skipped layers: 0)."""
    weights = attention_mask.float() / attention_mask.float().sum(-1, keepdim=True).clamp(min=1)
    return sum((kl * weights).sum(-1) for kl in table.kl.values()) / n_slots


def decoder_layers(model: nn.Module, table: DeltaTable) -> nn.ModuleList:
    """The model's list of decoder layers (the routers' `...layers.<i>...` parent)."""
    name = table.sites[0].name
    return model.get_submodule(name[:name.index(f"layers.{table.sites[0].layer}")] + "layers")


class LowerLayers:
    """The decoder layers below the lowest layer an adaptation phase fits: their output does not depend on
    the deltas being fitted, so the phase's first forward keeps it (hooks on every layer, settled to one once
    the layers are selected) and later forwards skip those layers."""

    def __init__(self, layers: nn.ModuleList):
        self.layers, self.layer, self.kept, self._outputs = layers, 0, None, {}
        self._hooks = [layer.register_forward_hook(self._keeper(i)) for i, layer in enumerate(layers)]

    def _keeper(self, index: int):
        def keep(module, args, output):
            self._outputs[index] = output.detach()
        return keep

    def settle(self, layer: int) -> None:
        """Keep the hidden states entering decoder layer `layer` (the output of the one below)."""
        self.release()
        self.layer, self.kept, self._outputs = layer, self._outputs.get(layer - 1), {}

    @contextmanager
    def skipping(self, rows: Tensor) -> Iterator[None]:
        """Within: the layers below `layer` return the kept hidden states of `rows` instead of computing."""
        if self.layer == 0:
            yield
            return
        kept = self.kept[rows]
        for i in range(self.layer):
            self.layers[i].forward = (lambda hidden_states, *a, **k: hidden_states) if i < self.layer - 1 \
                else (lambda *a, **k: kept)
        try:
            yield
        finally:
            for i in range(self.layer):
                del self.layers[i].forward

    def release(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
