"""KV-cached decoding of one batch of rows: a dynamic cache, or static caches with a compiled step.

A run is made by its prefill (left-padded ids and mask, deltas already in the `DeltaTable`), then
alternates `step` (one token per live row, returns their next-token logits) and `select` (rows that
stay). `DynamicRun` grows a `DynamicCache` and shrinks the batch as rows leave: right for CPU and
eager use. `StaticRun` writes into preallocated `StaticCache`s whose batch size is a bucket (a power
of two) and whose length is a power of two; rows that leave keep computing until the live ones fit a
smaller bucket, then they are compacted into that bucket's cache. So a handful of shapes serve every
batch, and a compiled (CUDA-graph) step per shape never recompiles: the deltas live in the table's
persistent per-bucket buffers, updated in place.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache, StaticCache

from ttscale.routing.deltas import DeltaTable

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MIN_LENGTH = 256


def cache_arg(model, cache) -> dict:
    """The cache keyword of `model.forward`: `cache` (transformers >= 5.2x; `past_key_values` is deprecated
    there and warns on every call) or `past_key_values` (older releases)."""
    return {_cache_keyword(type(model)): cache}


@functools.cache
def _cache_keyword(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def bucket(n: int) -> int:
    """The smallest batch bucket holding n rows."""
    for size in BUCKETS:
        if size >= n:
            return size
    raise ValueError(f"batch of {n} rows exceeds the largest static bucket ({BUCKETS[-1]}); lower --batch-size")


def cache_length(n: int) -> int:
    """Static cache length for n tokens: a power of two, at least MIN_LENGTH."""
    length = MIN_LENGTH
    while length < n:
        length *= 2
    return length


def positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded batch (pads get 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class DynamicRun:
    """A batch decoded on a growing `DynamicCache`; rows that leave are dropped from it, and rows prefilled
    apart can join it (`join`), so a batch stays full while its rows come and go."""

    def __init__(self, model, table: DeltaTable, ids: Tensor, mask: Tensor):
        self.model, self.table, self.mask = model, table, mask
        self.prefill_mask = mask
        self.cache = DynamicCache(config=model.config)
        self.logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                            **cache_arg(model, self.cache), use_cache=True, logits_to_keep=1).logits[:, -1]
        self.can_join = not any(getattr(layer, "is_sliding", False) for layer in self.cache.layers)

    @classmethod
    def resumed(cls, model, table: DeltaTable, paused: PausedRow, last_token: int) -> DynamicRun:
        """A one-row run continuing a paused row's cache: its last token (sampled, not yet run) is run now."""
        run = cls.__new__(cls)
        run.model, run.table, run.can_join = model, table, True
        run.mask = run.prefill_mask = paused.mask
        run.cache = DynamicCache(config=model.config)
        for layer, (keys, values) in zip(run.cache.layers, paused.layers):
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        run.logits = run.step(torch.tensor([last_token], device=paused.mask.device))
        return run

    def pause(self, row: int, delta: Tensor) -> PausedRow:
        """Row `row`'s cache without its left padding, copied out of the batch, and the deltas it was made under."""
        start = int((self.mask[row] == 0).sum())
        layers = [(layer.keys[row:row + 1, :, start:].clone(), layer.values[row:row + 1, :, start:].clone())
                  for layer in self.cache.layers]
        return PausedRow(self.mask[row:row + 1, start:].clone(), layers, delta.clone())

    def join(self, other: DynamicRun, deltas: Tensor) -> None:
        """Append `other`'s rows (their deltas `[B, L, E]` follow this run's in `deltas`): caches and masks
        are left-padded to one length; positions come from the mask, so padding changes no row's values."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(other.mask, width, 1)])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
            mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
        self.table.load(deltas)

    def select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.table.load(self.table.rows()[index])

    def step(self, tokens: Tensor) -> Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        return self.model(input_ids=tokens[:, None], attention_mask=self.mask,
                          position_ids=self.mask.sum(-1, keepdim=True) - 1,
                          **cache_arg(self.model, self.cache), use_cache=True).logits[:, -1]


@dataclass
class PausedRow:
    """The cache of a row that left its batch at its budget and will come back for more (a rerouting chunk):
    valid as long as its deltas are the ones it was made under."""
    mask: Tensor                                # [1, T]
    layers: list[tuple[Tensor, Tensor]]         # per layer: keys, values [1, H, T, D]
    delta: Tensor                               # [L, E]

    @property
    def length(self) -> int:
        """Tokens in the cache: the branch's context but its last token."""
        return self.mask.shape[1]


class StaticKV:
    """Static caches per (batch bucket, length), reused across calls, and the decode step (compiled or not)."""

    def __init__(self, model, compile_options: dict | None = None):
        self.model = model
        self.cache_keyword = _cache_keyword(type(model))     # resolved here: the compiled step traces no lookup
        self._caches: dict[tuple[int, int], StaticCache] = {}
        self.step = self._forward
        if compile_options is not None:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.step = torch.compile(self._forward, **compile_options)

    def _forward(self, ids: Tensor, position_ids: Tensor, mask: Tensor, cache: StaticCache) -> Tensor:
        return self.model(input_ids=ids, position_ids=position_ids, attention_mask=mask,
                          **{self.cache_keyword: cache}, use_cache=True).logits[:, -1]

    def cache(self, batch: int, length: int) -> StaticCache:
        """An empty cache of this shape; caches of other lengths are freed (one length is live at a time)."""
        for key in [k for k in self._caches if k[1] != length]:
            del self._caches[key]
        cache = self._caches.get((batch, length))
        if cache is None:
            cache = self._caches[(batch, length)] = StaticCache(config=self.model.config, max_cache_len=length)
        cache.reset()
        return cache


def supports_static(model) -> bool:
    """Static decoding needs full attention in every layer (sliding-window layers roll their cache)."""
    cache = StaticCache(config=model.config, max_cache_len=MIN_LENGTH)
    return not any(getattr(layer, "is_sliding", False) for layer in cache.layers)


class StaticRun:
    """A batch decoded on static caches: rows sit in slots of a bucket-sized batch."""
    can_join = False

    def __init__(self, kv: StaticKV, table: DeltaTable, ids: Tensor, mask: Tensor, new_tokens: int):
        self.kv, self.table = kv, table
        self.slots = list(range(len(ids)))                # physical slot of each live row
        self.length = cache_length(ids.shape[1] + new_tokens)
        size = bucket(len(ids))
        ids, mask = _pad_rows(ids, size), _pad_rows(mask, size)
        table.load(_pad_rows(table.rows(), size))
        self.prefill_mask = mask
        self.mask = torch.zeros(size, self.length, dtype=mask.dtype, device=mask.device)
        self.mask[:, :ids.shape[1]] = mask
        self.write = ids.shape[1]                          # cache index the next token goes to
        self.next_position = mask.sum(-1)
        self.cache = kv.cache(size, self.length)
        logits = kv.model(input_ids=ids, attention_mask=self.mask, position_ids=positions(mask),
                          **cache_arg(kv.model, self.cache), use_cache=True, logits_to_keep=1).logits[:, -1]
        self.logits = logits[:len(self.slots)]

    def select(self, keep: list[int]) -> None:
        self.slots = [self.slots[i] for i in keep]
        size = bucket(len(self.slots))
        if size < len(self.mask):
            self._compact(size)

    def _compact(self, size: int) -> None:
        index = _pad_rows(torch.tensor(self.slots, device=self.mask.device), size)
        cache = self.kv.cache(size, self.length)
        for old, new in zip(self.cache.layers, cache.layers):
            keys, values = old.keys.index_select(0, index), old.values.index_select(0, index)
            if not new.is_initialized:
                new.lazy_initialization(keys, values)
            new.keys.copy_(keys)
            new.values.copy_(values)
            new.cumulative_length.copy_(old.cumulative_length)
        self.cache, self.slots = cache, list(range(len(self.slots)))
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        self.table.load(self.table.rows()[index])

    def step(self, tokens: Tensor) -> Tensor:
        if self.write >= self.length:
            raise RuntimeError(f"static cache of {self.length} tokens is full")
        full = tokens.new_zeros(len(self.mask))
        full[self.slots] = tokens
        self.mask[:, self.write] = 1
        logits = self.kv.step(full[:, None], self.next_position[:, None], self.mask, self.cache)
        self.write += 1
        self.next_position = self.next_position + 1
        return logits[self.slots]


def _left_pad(t: Tensor, width: int, dim: int) -> Tensor:
    """Zeros before `t` along `dim` up to `width`."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _pad_rows(t: Tensor, size: int) -> Tensor:
    """Fill a batch up to `size` rows by repeating its last row (filler rows are real data, never NaN)."""
    if len(t) == size:
        return t
    return torch.cat([t, t[-1:].expand(size - len(t), *t.shape[1:])])
