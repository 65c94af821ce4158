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
from ttscale.routing.reroute import RerouteConfig, optimizer_step


def context_losses(backend, branches: Sequence[Branch], deltas: torch.Tensor) -> torch.Tensor:
    """`[B]`: mean next-token NLL of each branch's context under `deltas` `[B, L, E]` (one scoring pass)."""
    probes = []
    for b, delta in zip(branches, deltas):
        probe = copy.copy(b)
        probe.compute = copy.deepcopy(b.compute)
        probe.delta = DeltaState(delta, *b.delta.tensors()[1:]) if b.delta else DeltaState(
            delta, torch.zeros_like(delta), torch.zeros_like(delta), torch.zeros(delta.shape[0]))
        probes.append(probe)
    scores = backend.score(probes, start=1)
    return torch.tensor([-sum(s) / max(len(s), 1) for s in scores])


def spsa_adapt(backend, branches: Sequence[Branch], cfg: RerouteConfig, scale: float = 0.05,
               seed: int = 0) -> list[Branch]:
    """One gradient-free adaptation phase on each branch's deltas (2 * cfg.steps scoring passes)."""
    states = [(b.delta or backend.zero_state()).clone() for b in branches]
    for s in states:
        if not cfg.keep_optimizer:
            s.reset_optimizer()
    stacked = DeltaState(*(torch.stack(parts) for parts in zip(*(s.tensors() for s in states))))
    stacked = DeltaState(*(t.cpu() for t in stacked.tensors()))
    generator = torch.Generator().manual_seed(seed)
    every_layer = torch.ones(stacked.delta.shape[:2], dtype=torch.bool)
    lr = torch.full(stacked.delta.shape[:2], cfg.lr)
    losses = []
    for _ in range(cfg.steps):
        direction = torch.randint(0, 2, stacked.delta.shape, generator=generator).float() * 2 - 1
        plus = context_losses(backend, branches, stacked.delta + scale * direction)
        minus = context_losses(backend, branches, stacked.delta - scale * direction)
        losses.append((plus + minus) / 2)
        grad = ((plus - minus) / (2 * scale))[:, None, None] * direction
        optimizer_step(stacked, grad, every_layer, lr, cfg)
    info = backend.info
    for row, b in enumerate(branches):
        b.delta = DeltaState(*(t[row].clone() for t in stacked.tensors()))
        b.cycles.append(Cycle(at_token=len(b.generated), layers=list(info.moe_layers),
                              losses=[float(step[row]) for step in losses], entropy_before=None))
        b.compute.adapt_forward_tokens += 2 * cfg.steps * len(b.tokens)
    return list(branches)
