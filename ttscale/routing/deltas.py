"""Row-indexed router deltas installed into a model's MoE routers.

`DeltaTable.values[slot, row, expert]` (float32) holds one delta vector per MoE layer (slot) and
batch row. Each router's forward is replaced by: logits from the family's rule, plus the row's delta
(routers see tokens flattened row-major, `[B*T, H]`), then the family's routing. The table is one
persistent tensor per batch size, updated in place, so static caches, `torch.compile` and CUDA graphs
keep working: a batch size seen before gets its old buffer back.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ttscale.routing.families import RouterSite, find_routers


@dataclass
class RoutingRecord:
    """Per-slot, per-token routing statistics from one recorded forward, as `[B, T]` tensors."""
    chosen_nll: dict[int, Tensor] = field(default_factory=dict)   # -(1/k) sum log p(chosen expert)
    entropy: dict[int, Tensor] = field(default_factory=dict)      # entropy of the router distribution
    chosen: dict[int, Tensor] = field(default_factory=dict)       # [B, T, k]: the experts picked
    logp: dict[int, Tensor] | None = None                         # [B, T, E] log-probs, when asked for (trust guard)

    def per_row(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """`[B, L]` means over each row's valid tokens (`mask` is `[B, T]`): confidence score C and entropy."""
        weights = mask.float() / mask.float().sum(-1, keepdim=True).clamp(min=1)
        slots = sorted(self.chosen_nll)
        score = torch.stack([(self.chosen_nll[s] * weights).sum(-1) for s in slots], dim=-1)
        entropy = torch.stack([(self.entropy[s] * weights).sum(-1) for s in slots], dim=-1)
        return score, entropy


class DeltaTable:
    """The router deltas of every MoE layer of one model, one row per batch row."""

    def __init__(self, model: nn.Module):
        self.sites: list[RouterSite] = find_routers(model)
        self.num_experts = self.sites[0].num_experts
        device = self.sites[0].router.weight.device
        self.values = torch.zeros(len(self.sites), 1, self.num_experts, device=device)
        self._buffers = {1: self.values}          # batch size -> its persistent buffer
        self.leaves: list[Tensor] | None = None   # adaptation: one `[B, E]` autograd leaf per slot, used instead of `values`
        self.record: RoutingRecord | None = None  # when set, routers write their statistics into it
        self.kl_ref: dict[int, Tensor] | None = None  # trust guard: `[B*T, E]` reference log-probs per slot
        self.kl: dict[int, Tensor] = {}           # ... and each slot's KL from them, `[B, T]`, with gradient
        for slot, site in enumerate(self.sites):
            _install(site, slot, self)

    @property
    def layers(self) -> list[int]:
        """Decoder-layer index of each slot."""
        return [site.layer for site in self.sites]

    @property
    def family(self) -> str:
        return self.sites[0].rule.family

    def load(self, rows: Tensor) -> None:
        """Set the deltas from `[B, L, E]` (one row per branch), in place in the buffer of batch size B."""
        rows = rows.to(self.values.device, torch.float32).transpose(0, 1)
        batch = rows.shape[1]
        if batch not in self._buffers:
            self._buffers[batch] = torch.zeros(rows.shape, device=rows.device)
        self.values = self._buffers[batch]
        with torch.no_grad():
            self.values.copy_(rows)

    def clear(self, batch: int = 1) -> None:
        self.load(torch.zeros(batch, len(self.sites), self.num_experts))

    def rows(self) -> Tensor:
        """The current deltas as `[B, L, E]`."""
        return self.values.detach().transpose(0, 1).clone()

    def train(self, slots: set[int]) -> None:
        """Make the given slots' deltas autograd leaves (`leaves`) for the next forward; the others stay
        constant, and a gradient asked of some leaves only runs the backward down to the lowest of them."""
        self.leaves = [self.values[s].detach().clone().requires_grad_(s in slots) for s in range(len(self.sites))]

    def token_deltas(self, slot: int, n_tokens: int) -> Tensor:
        """`[n_tokens, E]`: each token gets its row's delta (tokens are row-major)."""
        delta = self.values[slot] if self.leaves is None else self.leaves[slot]
        batch = delta.shape[0]
        if n_tokens % batch:
            raise RuntimeError(f"router saw {n_tokens} tokens, not a multiple of the delta table's {batch} rows")
        return delta.repeat_interleave(n_tokens // batch, dim=0)


def add_delta(router_logits: Tensor, delta: Tensor) -> Tensor:
    """Where a delta enters, on every backend: added to the router logits in float32, before the family's
    routing (softmax/sigmoid, top-k), which then runs on the float32 sum."""
    return router_logits.float() + delta


def _install(site: RouterSite, slot: int, table: DeltaTable) -> None:
    rule, router = site.rule, site.router

    def forward(self, hidden_states: Tensor):
        hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
        logits = rule.logits(self, hidden)
        z = add_delta(logits, table.token_deltas(slot, hidden.shape[0]))
        weights, indices = rule.route(self, z, hidden.dtype)
        if table.record is not None:
            _observe(table, slot, rule.probs(self, z.detach()), indices)
        if table.kl_ref is not None:
            logp = rule.probs(self, z).clamp_min(1e-30).log()
            table.kl[slot] = (logp.exp() * (logp - table.kl_ref[slot])).sum(-1).view(table.values.shape[1], -1)
        return z.to(logits.dtype), weights, indices

    router.forward = types.MethodType(forward, router)


def _observe(table: DeltaTable, slot: int, probs: Tensor, indices: Tensor) -> None:
    batch = table.values.shape[1]
    logp = probs.clamp_min(1e-30).log()
    table.record.chosen_nll[slot] = -logp.gather(1, indices).mean(-1).view(batch, -1)
    table.record.entropy[slot] = -(probs * logp).sum(-1).view(batch, -1)
    table.record.chosen[slot] = indices.view(batch, -1, indices.shape[-1])
    if table.record.logp is not None:
        table.record.logp[slot] = logp.view(batch, -1, logp.shape[-1])
