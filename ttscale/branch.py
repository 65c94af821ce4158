"""A branch: one growing completion with its own router-delta state, telemetry and compute."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:        # torch is imported where tensors are made, so that specs and settings load without it
    import torch
    from torch import Tensor

_ids = itertools.count()


@dataclass
class DeltaState:
    """Router deltas of every MoE layer (`[L, E]`, float32) and their optimiser state."""
    delta: Tensor
    exp_avg: Tensor          # Adam first moment, [L, E]
    exp_avg_sq: Tensor       # Adam second moment, [L, E]
    steps: Tensor            # Adam steps taken per layer, [L]

    @classmethod
    def zeros(cls, n_layers: int, n_experts: int, device: torch.device | str = "cpu") -> DeltaState:
        import torch

        z = torch.zeros(n_layers, n_experts, device=device)
        return cls(z, z.clone(), z.clone(), torch.zeros(n_layers, device=device))

    def clone(self) -> DeltaState:
        return DeltaState(self.delta.clone(), self.exp_avg.clone(), self.exp_avg_sq.clone(), self.steps.clone())

    def to(self, device: torch.device | str) -> DeltaState:
        return DeltaState(*(t.to(device) for t in self.tensors()))

    def reset_optimizer(self) -> None:
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.steps.zero_()

    def same_as(self, other: DeltaState) -> bool:
        return all(a.equal(b) for a, b in zip(self.tensors(), other.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.delta, self.exp_avg, self.exp_avg_sq, self.steps


@dataclass
class Compute:
    """What a branch spent, in tokens and seconds; shared work is counted on one branch only."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0          # tokens run through prefill forwards (prompt and cache rebuilds)
    adapt_forward_tokens: int = 0
    adapt_backward_tokens: int = 0
    score_tokens: int = 0
    attention_pairs_forward: int = 0      # (query, key) pairs attended, all forwards
    attention_pairs_backward: int = 0
    skipped_layer_tokens_forward: int = 0   # adaptation: (token, decoder layer) passes not run below the fitted layers
    skipped_layer_tokens_backward: int = 0
    skipped_layer_pairs_forward: int = 0    # ... and their attention (query, key) pairs, times layers
    skipped_layer_pairs_backward: int = 0
    reward_tokens: int = 0                # tokens read by a reward model
    reward_flops: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)

    def add_seconds(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def __iadd__(self, other: Compute) -> Compute:
        for name, value in other.__dict__.items():
            if name != "seconds":
                setattr(self, name, getattr(self, name) + value)
        for phase, s in other.seconds.items():
            self.add_seconds(phase, s)
        return self

    def __add__(self, other: Compute) -> Compute:
        out = copy.deepcopy(self)
        out += other
        return out

    def __sub__(self, other: Compute) -> Compute:
        """What was spent since `other`, an earlier copy of this compute."""
        out = copy.deepcopy(self)
        for name, value in other.__dict__.items():
            if name != "seconds":
                setattr(out, name, getattr(out, name) - value)
        for phase, s in other.seconds.items():
            out.add_seconds(phase, -s)
        return out


@dataclass
class Cycle:
    """One adaptation phase of a branch."""
    at_token: int                    # generated tokens when it ran
    layers: list[int]                # decoder layers updated
    losses: list[float]              # context NLL before each step
    entropy_before: float | None     # mean routing entropy over MoE layers at the phase's first forward (None: unseen)
    entropy_after: float | None = None   # the same, at the next forward over the context (cache rebuild)
    guard: dict[str, Any] | None = None  # what the rerouting guard saw and decided (ttscale.routing.guard.Decision)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Branch:
    tokens: list[int]                # the whole context: prompt then generated tokens
    prompt_len: int
    seed: int = 0
    text: str = ""                   # generated text (stop string excluded)
    logprobs: list[float] = field(default_factory=list)  # model log-prob of each generated token
    finished: bool = False
    finish_reason: str | None = None     # "eos" | "stop" | "length"
    delta: DeltaState | None = None
    cycles: list[Cycle] = field(default_factory=list)
    compute: Compute = field(default_factory=Compute)
    id: int = field(default_factory=lambda: next(_ids))
    parent: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)   # searches keep scores, step counts, ... here

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len:]

    def fork(self, seed: int | None = None) -> Branch:
        """A child sharing this branch's history; its delta state is copied, its compute starts at zero."""
        child = copy.copy(self)
        child.tokens, child.logprobs = list(self.tokens), list(self.logprobs)
        child.delta = None if self.delta is None else self.delta.clone()
        child.cycles = [copy.copy(c) for c in self.cycles]
        child.meta = {k: v for k, v in self.meta.items() if k != "shared_compute"}   # it spent nothing yet
        child.compute = Compute()
        child.id, child.parent = next(_ids), self.id
        child.seed = self.seed if seed is None else seed
        return child
