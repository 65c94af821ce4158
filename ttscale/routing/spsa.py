"""Gradient-free adaptation (SPSA) for backends that can score but not differentiate.

Each step perturbs every row's deltas along one random ±1 direction, scores the context under
delta + c·dir and delta − c·dir (two forward passes, no backward), and feeds the finite-difference
gradient estimate to the same optimiser as gradient adaptation. Without router probabilities there
is no layer-confidence score, so every MoE layer is adapted.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from ttscale.branch import Branch, Cycle, DeltaState
from ttscale.routing.guard import PhaseGuard, holdout_split
from ttscale.routing.reroute import RerouteConfig, optimizer_step


def context_losses(backend, branches: Sequence[Branch], deltas: torch.Tensor,
                   parts: Sequence[torch.Tensor] | None = None) -> torch.Tensor | list[torch.Tensor]:
    """`[B]`: mean next-token NLL of each branch's context under `deltas` `[B, L, E]` (one scoring pass); with
    `parts` (`[B, T-1]` target masks over each context's tokens 1..), one such mean per part."""
    probes = []
    for b, delta in zip(branches, deltas):
        probe = copy.copy(b)
        probe.compute = copy.deepcopy(b.compute)
        probe.delta = DeltaState(delta, *b.delta.tensors()[1:]) if b.delta else DeltaState(
            delta, torch.zeros_like(delta), torch.zeros_like(delta), torch.zeros(delta.shape[0]))
        probes.append(probe)
    scores = backend.score(probes, start=1)
    if parts is None:
        return torch.tensor([-sum(s) / max(len(s), 1) for s in scores])
    nll = [torch.tensor([-v for v in s]) for s in scores]
    return [torch.stack([(row * w[:len(row)]).sum() / w[:len(row)].sum().clamp(min=1) for row, w in zip(nll, part.float())])
            for part in parts]


def spsa_adapt(backend, branches: Sequence[Branch], cfg: RerouteConfig, scale: float = 0.05,
               seed: int = 0) -> list[Branch]:
    """One gradient-free adaptation phase on each branch's deltas (2 * cfg.steps scoring passes; with the
    holdout guard a third per step measures the held-out NLL where the deltas stand, and rows stop early)."""
    if cfg.guard == "trust":
        raise ValueError("reroute.guard=trust needs router probabilities, which the spsa adapter does not have; "
                         "use reroute.guard=holdout or reroute.adapter=hf")
    states = [(b.delta or backend.zero_state()).clone() for b in branches]
    for s in states:
        if not cfg.keep_optimizer:
            s.reset_optimizer()
    stacked = DeltaState(*(torch.stack(parts) for parts in zip(*(s.tensors() for s in states))))
    stacked = DeltaState(*(t.cpu() for t in stacked.tensors()))
    generator = torch.Generator().manual_seed(seed)
    every_layer = torch.ones(stacked.delta.shape[:2], dtype=torch.bool)
    lr = torch.full(stacked.delta.shape[:2], cfg.lr)
    guard = PhaseGuard(cfg, stacked) if cfg.guard == "holdout" else None
    parts = None
    if guard is not None:
        width = max(len(b.tokens) for b in branches) - 1
        valid = torch.stack([torch.arange(width) < len(b.tokens) - 1 for b in branches])
        parts = list(holdout_split(valid, cfg.guard_holdout))
    losses: list[list[float]] = [[] for _ in branches]
    passes = torch.zeros(len(branches), dtype=torch.long)
    for step in range(cfg.steps + (1 if guard else 0)):
        live = guard.active if guard is not None else torch.ones(len(branches), dtype=torch.bool)
        if not live.any():
            break
        rows = live.nonzero().flatten()
        subset = [branches[i] for i in rows.tolist()]
        if guard is not None:     # where the deltas stand: the fitted and the held-out loss
            fit, held = context_losses(backend, subset, stacked.delta[rows], [p[rows] for p in parts])
            passes[rows] += 1
            guard.observe(step, rows, held, stacked)
            for i, row in enumerate(rows.tolist()):
                losses[row].append(float(fit[i]))
            if step == cfg.steps:
                break
            rows = guard.active.nonzero().flatten()
            subset = [branches[i] for i in rows.tolist()]
            if not len(rows):
                break
        direction = torch.randint(0, 2, stacked.delta.shape, generator=generator).float() * 2 - 1
        plus = context_losses(backend, subset, (stacked.delta + scale * direction)[rows], parts and [parts[0][rows]])
        minus = context_losses(backend, subset, (stacked.delta - scale * direction)[rows], parts and [parts[0][rows]])
        if parts:
            plus, minus = plus[0], minus[0]
        else:
            for i, row in enumerate(rows.tolist()):
                losses[row].append(float((plus[i] + minus[i]) / 2))
        passes[rows] += 2
        if guard is not None:
            guard.stepped(rows)
        grad = ((plus - minus) / (2 * scale))[:, None, None] * direction[rows]
        sub = DeltaState(*(t[rows] for t in stacked.tensors()))
        optimizer_step(sub, grad, every_layer[rows], lr[rows], cfg)
        for mine, theirs in zip(stacked.tensors(), sub.tensors()):
            mine[rows] = theirs
    decisions = guard.finish(stacked, None, None) if guard is not None else None
    info = backend.info
    for row, b in enumerate(branches):
        b.delta = DeltaState(*(t[row].clone() for t in stacked.tensors()))
        decision = decisions[row] if decisions else None
        kept = decision is None or decision.accepted
        b.cycles.append(Cycle(at_token=len(b.generated), layers=list(info.moe_layers) if kept else [],
                              losses=losses[row], entropy_before=None,
                              guard=None if decision is None else decision.as_dict()))
        b.compute.adapt_forward_tokens += int(passes[row]) * len(b.tokens)
    return list(branches)
