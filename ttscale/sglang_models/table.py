"""Per-request router deltas inside an SGLang model runner, safe under CUDA graphs (plain torch).

`delta[slot, row, expert]` (float32) holds one delta vector per MoE layer (slot) and table row;
row 0 is all zeros and serves every request without a delta. `tok_row[token]` names the row of
each token of the current forward batch. Both are allocated once, before CUDA-graph capture, and
only ever written in place: `prepare` (eager, before each forward or graph replay) maps request ids
to rows, uploads the deltas of requests it has not seen, and fills `tok_row`; inside the graph a
router adds `delta[slot].index_select(0, tok_row[:T])` to its logits. Tokens of padded graph slots
read stale rows, and their outputs are discarded.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor

from ttscale.routing.deltas import add_delta


class RowMap:
    """Request id -> table row (1..rows-1), least recently used rows evicted first."""

    def __init__(self, rows: int):
        self.free = list(range(rows - 1, 0, -1))
        self.rows: OrderedDict[str, int] = OrderedDict()

    def get(self, rid: str) -> int | None:
        row = self.rows.get(rid)
        if row is not None:
            self.rows.move_to_end(rid)
        return row

    def assign(self, rid: str, pinned: set[int]) -> int:
        """A row for a new request, evicting the least recently used one not `pinned` (in use now)."""
        if not self.free:
            victim = next((r for r, row in self.rows.items() if row not in pinned), None)
            if victim is None:
                raise RuntimeError(f"router-delta table full: {len(self.rows)} rows all in this batch; "
                                   f"raise TTSCALE_SGLANG_DELTA_ROWS")
            self.free.append(self.rows.pop(victim))
        row = self.rows[rid] = self.free.pop()
        return row


def token_rows(rows: Sequence[int], counts: Sequence[int]) -> Tensor:
    """Each request's row repeated once per token it contributes to the batch (tokens are request-major)."""
    return torch.repeat_interleave(torch.tensor(rows, dtype=torch.long), torch.tensor(counts, dtype=torch.long))


class RouterDeltaTable:
    def __init__(self, n_slots: int, n_experts: int, rows: int, max_tokens: int, device: torch.device | str):
        self.delta = torch.zeros(n_slots, rows, n_experts, dtype=torch.float32, device=device)
        self.tok_row = torch.zeros(max_tokens, dtype=torch.long, device=device)
        self.map = RowMap(rows)
        self.n_slots, self.n_experts = n_slots, n_experts

    def prepare(self, rids: Sequence[str], counts: Sequence[int], payloads: Sequence[Sequence[float] | None]) -> None:
        """Rows for this batch's requests (`counts` tokens each, `payloads` their flat `[slots*experts]`
        deltas or None for zero), then `tok_row` for its tokens."""
        rows, pinned = [], set()
        for rid, payload in zip(rids, payloads):
            row = self._row(rid, payload, pinned)
            pinned.add(row)
            rows.append(row)
        expanded = token_rows(rows, counts)
        if len(expanded) > len(self.tok_row):
            raise RuntimeError(f"forward batch of {len(expanded)} tokens exceeds the delta table's "
                               f"{len(self.tok_row)}; lower --chunked-prefill-size")
        self.tok_row[:len(expanded)].copy_(expanded, non_blocking=True)

    def _row(self, rid: str, payload: Sequence[float] | None, pinned: set[int]) -> int:
        if payload is None:
            return 0
        row = self.map.get(rid)
        if row is None:
            row = self.map.assign(rid, pinned)
            values = torch.as_tensor(payload, dtype=torch.float32)
            if values.numel() != self.n_slots * self.n_experts:
                raise ValueError(f"request {rid}: router delta has {values.numel()} values, "
                                 f"the model needs {self.n_slots} layers x {self.n_experts} experts")
            self.delta[:, row].copy_(values.view(self.n_slots, self.n_experts), non_blocking=True)
        return row

    def apply(self, slot: int, router_logits: Tensor) -> Tensor:
        """Router logits of the batch's `T` tokens plus each token's delta (graph-safe: no host sync)."""
        rows = self.tok_row[:router_logits.shape[0]]
        return add_delta(router_logits, self.delta[slot].index_select(0, rows))
