"""The embedded default backend: a transformers MoE model in-process, CPU or GPU.

Branches are batched with left padding; each batch row carries its branch's router deltas through
the model's `DeltaTable`. Generation is a plain KV-cached decode loop (not `generate`), because
every row has its own sampling parameters, seed, stop strings and deltas; rows that finish leave
the batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from ttscale.backends.base import (ChatBranches, ExtendRequest, ModelInfo, Scored, at_length_limit,
                                   check_local_dir, runnable)
from ttscale.backends.kv import DynamicRun, PausedRow, StaticKV, StaticRun, supports_static
from ttscale.backends.options import check_options, torch_device
from ttscale.backends.sampler import sample
from ttscale.backends.sampling import Sampling, uniform
from ttscale.branch import Branch, Compute, Cycle, DeltaState
from ttscale.demo import resolve_model
from ttscale.hub import load_error, load_options
from ttscale.routing.deltas import DeltaTable, RoutingRecord
from ttscale.routing.families import UnsupportedModelError
from ttscale.routing.reroute import RerouteConfig, adapt_rows, decoder_layers

log = logging.getLogger(__name__)

@dataclass
class _Row:
    """A branch in a decode batch, with what its request allows it."""
    request: ExtendRequest
    budget: int                      # tokens this call may add
    start: int                       # generated tokens when the call began
    produced: int = 0
    done: bool = False               # left the batch: finished, out of budget, or at a step end

    @property
    def branch(self) -> Branch:
        return self.request.branch

    @property
    def params(self) -> Sampling:
        return self.request.sampling

    def append(self, token: int, logprob: float) -> None:
        self.branch.tokens.append(token)
        self.branch.logprobs.append(logprob)
        self.branch.compute.generated_tokens += 1
        self.branch.compute.attention_pairs_forward += len(self.branch.tokens) - 1
        self.produced += 1


@dataclass
class _Kept:
    """A decode batch's KV cache, kept so the same branches can continue on it (`kv=keep`)."""
    run: DynamicRun
    keys: list[tuple[int, int]]      # (branch id, context length) per row


class HFBackend(ChatBranches):
    joins = True        # extend_requests takes `refill`: rows of other problems join a running batch
    def __init__(self, model: str, device: str | None = None, dtype: str | None = None, batch_size: int = 32,
                 experts_implementation: str | None = None, decode: str = "auto", solo_contexts: bool | None = None):
        """Load a hub id or local directory (cuda when available, bf16 there; else cpu and fp32). `solo_contexts`
        (default: on CPU) runs every forward over whole contexts one context at a time (see `SoloContexts`)."""
        check_options(device, dtype, batch_size, decode)
        device = torch_device(device)
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
        options = {"experts_implementation": experts_implementation} if experts_implementation else {}
        check_local_dir(model)
        hf_logging.disable_progress_bar()
        hub = load_options(model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, **hub)
            loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **options, **hub)
        except (OSError, ValueError) as e:
            raise load_error(model, "model", e) from None
        self._attach(loaded.to(device), tokenizer, batch_size, model, decode, solo_contexts)

    @classmethod
    def from_model(cls, model, tokenizer, batch_size: int = 32, name: str = "in-memory",
                   decode: str = "auto", solo_contexts: bool | None = None) -> HFBackend:
        """A backend over a model already built (benchmarks, notebooks)."""
        backend = cls.__new__(cls)
        backend._attach(model, tokenizer, batch_size, name, decode, solo_contexts)
        return backend

    def _attach(self, model, tokenizer, batch_size: int, name: str, decode: str, solo_contexts: bool | None) -> None:
        check_options(batch_size=batch_size, decode=decode)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.batch_size, self.name = tokenizer, batch_size, name
        self.device = next(model.parameters()).device
        self.table = DeltaTable(model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_ids = _eos_ids(model, tokenizer)
        self.info = model_info(model, self.table)
        if self.device.type == "cpu" and self.info.active_params < SMALL_MODEL and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)   # see SMALL_MODEL
        self._kept: _Kept | None = None
        self._paused: dict[int, PausedRow] = {}       # branch id -> its cache, from a resumable request (oldest first)
        self.decode = _decode_mode(decode, self.device, model)
        self.solo_contexts = self.device.type == "cpu" if solo_contexts is None else solo_contexts
        self.static = None if self.decode == "dynamic" else StaticKV(
            model, _compile_options(self.device) if self.decode == "compiled" else None)

    def describe(self) -> dict:
        """What the records depend on beyond the run's config: where and how the model runs."""
        return {"backend": "hf", "device": str(self.device), "dtype": str(self.model.dtype).removeprefix("torch."),
                "batch_size": self.batch_size, "decode": self.decode, "solo_contexts": self.solo_contexts}

    # --- branches ---------------------------------------------------------------------------

    def zero_state(self) -> DeltaState:
        return DeltaState.zeros(len(self.table.sites), self.table.num_experts, self.device)

    def _stacked(self, branches: Sequence[Branch]) -> DeltaState:
        states = [b.delta or self.zero_state() for b in branches]
        return DeltaState(*(torch.stack(parts) for parts in zip(*(s.tensors() for s in states))))

    def _batch(self, branches: Sequence[Branch]) -> tuple[Tensor, Tensor]:
        """Left-padded input ids and attention mask of the branches' whole contexts."""
        width = max(len(b.tokens) for b in branches)
        ids = torch.full((len(branches), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(branches), width), dtype=torch.long)
        for row, b in enumerate(branches):
            ids[row, width - len(b.tokens):] = torch.tensor(b.tokens)
            mask[row, width - len(b.tokens):] = 1
        return ids.to(self.device), mask.to(self.device)

    # --- extend -----------------------------------------------------------------------------

    def extend_requests(self, requests: Sequence[ExtendRequest], keep_cache: bool = False,
                        refill: Refill | None = None) -> None:
        """Rows decode together, at most `batch_size` at a time; on the dynamic cache a row that leaves is
        replaced at once by a waiting one. `refill(done)` is told of every request as it completes and may
        return new requests, which join this call (the in-flight driver's way to keep the batch full)."""
        if not keep_cache:
            self._kept = None
        queue: deque[_Row] = deque()
        self._enqueue(list(requests), queue, refill)
        self._decode(queue, refill, keep_cache and len(queue) <= self.batch_size)

    def _enqueue(self, requests: list[ExtendRequest], queue: deque[_Row], refill: Refill | None) -> None:
        """Queue the requests with tokens to make; report the others as done at once."""
        while requests:
            growing = runnable(requests, self.info.context_length)     # the others are finished
            queue.extend(_Row(r, budget, len(r.branch.generated)) for r, budget in growing)
            done = [r for r in requests if r.branch.finished]
            requests = refill(done) if refill and done else []

    @torch.no_grad()
    def _decode(self, queue: deque[_Row], refill: Refill | None, keep_cache: bool) -> None:
        rows: list[_Row] = []
        run, logits = None, None
        while True:
            if queue and len(rows) < self.batch_size and (run is None or run.can_join):
                joining = [queue.popleft() for _ in range(min(len(queue), self.batch_size - len(rows)))]
                run, logits = self._start(run, logits, rows, joining, keep_cache)
                rows += joining
            if not rows:
                return
            start, step_rows = time.perf_counter(), [row.branch for row in rows]
            tokens, logprobs = sample(logits, [row.params for row in rows],
                                      [uniform(b.seed, len(b.generated)) for b in step_rows])
            for row, tok, lp in zip(rows, tokens.tolist(), logprobs.tolist()):
                row.append(tok, lp)
                self._check_finished(row, tok)
            stay = [i for i, row in enumerate(rows) if not row.done]
            if not stay and keep_cache:   # the batch is done: keep the unfinished rows' cache
                kept = [i for i, row in enumerate(rows) if not row.branch.finished]
                run.select(kept)
                self._kept = _Kept(run, [(rows[i].branch.id, len(rows[i].branch.tokens)) for i in kept])
            if len(stay) < len(rows):     # finished, paused or out of budget: leave the batch
                self._pause([i for i, row in enumerate(rows) if row.done], rows, run)
                left = [row for row in rows if row.done]
                for row in left:
                    self.set_text(row.branch, row.request.stop)
                if stay:
                    run.select(stay)
                else:
                    run = None
                tokens, rows = tokens[stay], [rows[i] for i in stay]
                if refill:
                    self._enqueue(refill([row.request for row in left]), queue, refill)
            if rows:
                logits = run.step(tokens)
            _share(step_rows, "decode", time.perf_counter() - start)

    def _start(self, run, logits: Tensor | None, rows: list[_Row], joining: list[_Row], keep_cache: bool):
        """Prefill the joining rows (or resume their kept cache) and add them to the running batch."""
        branches = [row.branch for row in joining]
        before = self.table.rows() if run is not None else None
        self.table.load(self._stacked(branches).delta)
        start = time.perf_counter()
        fresh = self._resume(branches) if keep_cache else None
        if fresh is None:
            fresh = self._prefill(branches, static=not keep_cache and run is None,
                                  new_tokens=max(row.budget for row in joining))
        _share(branches, "prefill", time.perf_counter() - start)
        if run is None:
            return fresh, fresh.logits
        run.join(fresh, torch.cat([before, self.table.rows()]))
        return run, torch.cat([logits, fresh.logits])

    # --- score and adapt -----------------------------------------------------------------------

    def score(self, branches: Sequence[Branch], start: int | None = None) -> list[list[float]]:
        return [s.logprobs for s in self.score_top(branches, 0, start)]

    @torch.no_grad()
    def score_top(self, branches: Sequence[Branch], k: int, start: int | None = None) -> list[Scored]:
        scores = []
        for chunk in _chunks(branches, self._context_batch):
            ids, mask = self._batch(chunk)
            self.table.load(self._stacked(chunk).delta)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                use_cache=False).logits
            distribution = logits[:, :-1].float().log_softmax(-1)
            logprobs = distribution.gather(2, ids[:, 1:, None]).squeeze(2)
            top = distribution.topk(min(k, distribution.shape[-1]), dim=-1) if k else None
            for row, b in enumerate(chunk):
                first = max(1, b.prompt_len if start is None else start)
                at = ids.shape[1] - len(b.tokens) - 1 + first      # logprobs[row, at + i] scores token first + i
                best = [] if top is None else [list(zip(i, v)) for i, v in zip(top.indices[row, at:].tolist(),
                                                                               top.values[row, at:].tolist())]
                scores.append(Scored(logprobs[row, at:].tolist(), best))
                b.compute.score_tokens += len(b.tokens)
                b.compute.attention_pairs_forward += _triangle(len(b.tokens))
        return scores

    def adapt(self, branches: Sequence[Branch], cfg: RerouteConfig) -> list[Branch]:
        for chunk in _chunks(branches, self._context_batch):
            ids, mask = self._batch(chunk)
            state = self._stacked(chunk)
            start = time.perf_counter()
            with torch.enable_grad():
                result = adapt_rows(self.model, self.table, ids, mask, state, cfg)
            _share(chunk, "adapt", time.perf_counter() - start)
            for row, b in enumerate(chunk):
                b.delta = DeltaState(*(part[row].clone() for part in state.tensors()))
                guard = result.guard[row] if result.guard else None
                kept = guard is None or guard.accepted
                layers = [self.table.layers[s] for s in result.slots[row].nonzero().flatten().tolist()] if kept else []
                b.cycles.append(Cycle(at_token=len(b.generated), layers=layers, losses=result.losses[row],
                                      entropy_before=float(result.entropy[row]),
                                      guard=None if guard is None else guard.as_dict()))
                charge_adaptation(b.compute, len(b.tokens), int(result.forwards[row]), int(result.backwards[row]),
                                  int(result.skipped_forward[row]), int(result.skipped_backward[row]))
        return list(branches)

    @property
    def _context_batch(self) -> int:
        """Contexts per forward when a whole context runs (prefill, adaptation, scoring)."""
        return 1 if self.solo_contexts else self.batch_size

    def _pause(self, leaving: list[int], rows: list[_Row], run) -> None:
        """Keep the cache of rows leaving at their budget that will come back (resumable requests): if their
        deltas are unchanged then (a phase the rerouting guard rejected), they continue on it, no rebuild."""
        if not isinstance(run, DynamicRun) or not run.can_join:
            return
        deltas = self.table.rows()
        for i in leaving:
            row = rows[i]
            if row.request.resumable and not row.branch.finished:
                self._paused[row.branch.id] = run.pause(i, deltas[i])
        while len(self._paused) > self.batch_size:       # rows that never came back go first
            del self._paused[next(iter(self._paused))]

    def _unpause(self, b: Branch) -> DynamicRun | None:
        """A run continuing `b`'s paused cache, if it holds b's context but its last token under b's deltas."""
        paused = self._paused.pop(b.id, None)
        delta = self._stacked([b]).delta
        if paused is None or paused.length != len(b.tokens) - 1 or not torch.equal(paused.delta, delta[0]):
            return None
        self.table.load(delta)
        return DynamicRun.resumed(self.model, self.table, paused, b.tokens[-1])

    def _prefill(self, rows: list[Branch], static: bool, new_tokens: int) -> DynamicRun | StaticRun:
        """A run over the rows: prefilled together (static, or contexts batched), else one context at a time
        (`solo_contexts`) or continuing a paused cache, and joined."""
        if static and self.static is not None:
            return self._prefill_batch(rows, static, new_tokens)
        resumed = {b.id: run for b in rows if b.id in self._paused and (run := self._unpause(b)) is not None}
        if not resumed and (not self.solo_contexts or len(rows) == 1):
            return self._prefill_batch(rows, False, new_tokens)
        deltas = self._stacked(rows).delta
        run = None
        for row, b in enumerate(rows):
            self.table.load(deltas[row:row + 1])
            fresh = resumed.get(b.id) or self._prefill_batch([b], static=False, new_tokens=new_tokens)
            if run is None:
                run, logits = fresh, [fresh.logits]
            else:
                run.join(fresh, deltas[:row + 1])
                logits.append(fresh.logits)
        run.logits = torch.cat(logits)
        return run

    def _prefill_batch(self, rows: list[Branch], static: bool, new_tokens: int) -> DynamicRun | StaticRun:
        ids, mask = self._batch(rows)
        self.table.record = RoutingRecord()
        try:
            if static and self.static is not None:
                run = StaticRun(self.static, self.table, ids, mask, new_tokens)
            else:
                run = DynamicRun(self.model, self.table, ids, mask)
            _, entropy = self.table.record.per_row(run.prefill_mask)
        finally:
            self.table.record = None
        for b, ent in zip(rows, entropy.mean(-1).tolist()):
            if not b.generated:
                b.compute.prompt_tokens += len(b.tokens)
            b.compute.prefill_tokens += len(b.tokens)
            b.compute.attention_pairs_forward += _triangle(len(b.tokens))
            if b.cycles and b.cycles[-1].entropy_after is None:
                b.cycles[-1].entropy_after = ent
        return run

    def _resume(self, rows: list[Branch]) -> DynamicRun | None:
        """Continue on the kept cache when it holds exactly these branches' contexts but their last token."""
        kept, self._kept = self._kept, None
        if kept is None:
            return None
        where = {key: i for i, key in enumerate(kept.keys)}
        index = [where.get((b.id, len(b.tokens))) for b in rows]
        if None in index:
            return None
        run = kept.run
        run.select(index)
        self.table.load(self._stacked(rows).delta)
        run.logits = run.step(torch.tensor([b.tokens[-1] for b in rows], device=self.device))
        return run

    def _check_finished(self, row: _Row, token: int) -> None:
        """Finish the branch on EOS, a stop string or its length cap; pause it at the end of a step."""
        b, stop, step_end = row.branch, row.request.stop, row.request.step_end
        if token in self.eos_ids:
            b.finished, b.finish_reason = True, "eos"
        elif stop and any(s in self._tail(b.generated) for s in stop):
            b.finished, b.finish_reason = True, "stop"
        elif at_length_limit(b, row.params, self.info.context_length):
            b.finished, b.finish_reason = True, "length"
        row.done = (b.finished or row.produced >= row.budget
                    or (step_end is not None and step_end in self._tail(b.generated[row.start:])))

    def _tail(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens[-_STOP_WINDOW:], skip_special_tokens=True)


# Below this many active parameters a CPU forward is tiny matrices: intra-op threads add no speed, and
# threads that wait on each other collapse when the cores are shared (the default demo run on two busy
# cores: 169 s with 2 threads, 41 s with 1). Such models run single-threaded unless OMP_NUM_THREADS is set.
SMALL_MODEL = 20_000_000

Refill = Callable[[list[ExtendRequest]], list[ExtendRequest]]

_STOP_WINDOW = 32   # generated tokens decoded to look for a stop string

def _decode_mode(decode: str, device: torch.device, model) -> str:
    """`auto` is `dynamic` everywhere: the only decode loop measured on every device so far (the static and
    CUDA-graph loops are opt-in until a GPU run of them is recorded, docs/performance.md)."""
    if decode == "auto":
        return "dynamic"
    if decode != "dynamic" and not supports_static(model):
        raise ValueError(f"--decode {decode} needs full attention in every layer; use --decode dynamic")
    if decode == "compiled" and device.type == "cpu":
        log.warning("--decode compiled on CPU compiles the decode step once per batch and cache shape (about a "
                    "minute each on 2 cores) and is rarely faster here; --decode dynamic is the CPU default")
    return decode


def _compile_options(device: torch.device) -> dict:
    """torch.compile settings of the static decode step: one CUDA graph per shape on GPU, inductor elsewhere."""
    options = dict(fullgraph=True, dynamic=False)
    return options | {"mode": "reduce-overhead"} if device.type == "cuda" else options


def load_config(model: str):
    """The transformers config of a hub id, local directory or bundled model name (`demo`)."""
    model = resolve_model(model)
    check_local_dir(model)
    try:
        return AutoConfig.from_pretrained(model, **load_options(model))
    except (OSError, ValueError) as e:
        raise load_error(model, "the config of", e) from None


def describe_model(model: str) -> tuple[ModelInfo | None, str | None]:
    """A model's MoE facts from its config alone (no weights loaded), or why reroute cannot run on it."""
    config = load_config(model)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
    try:
        return model_info(net, DeltaTable(net)), None
    except UnsupportedModelError as e:
        return None, str(e)


def charge_adaptation(c: Compute, tokens: int, forwards: int, backwards: int, skipped_forward: int,
                      skipped_backward: int) -> None:
    """What adaptation passes over a context of `tokens` cost; `skipped_*`: decoder layers not run, summed over
    those passes."""
    c.adapt_forward_tokens += tokens * forwards
    c.adapt_backward_tokens += tokens * backwards
    c.attention_pairs_forward += _triangle(tokens) * forwards
    c.attention_pairs_backward += _triangle(tokens) * backwards
    c.skipped_layer_tokens_forward += tokens * skipped_forward
    c.skipped_layer_tokens_backward += tokens * skipped_backward
    c.skipped_layer_pairs_forward += _triangle(tokens) * skipped_forward
    c.skipped_layer_pairs_backward += _triangle(tokens) * skipped_backward


def _triangle(n: int) -> int:
    """(query, key) pairs of causal attention over n tokens."""
    return n * (n + 1) // 2


def _chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _share(rows: Sequence[Branch], phase: str, seconds: float) -> None:
    """Split a batched phase's wall time equally among its rows."""
    for b in rows:
        b.compute.add_seconds(phase, seconds / len(rows))


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def model_info(model, table: DeltaTable) -> ModelInfo:
    total = sum(p.numel() for p in model.parameters())
    top_k, n_experts = table.sites[0].router.top_k, table.num_experts
    routed = 0
    for site in table.sites:
        experts = getattr(model.get_submodule(site.name.rsplit(".", 1)[0]), "experts", None)
        routed += sum(p.numel() for p in experts.parameters()) if experts is not None else 0
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    qk_dim = getattr(config, "qk_head_dim", None) or head_dim
    v_dim = getattr(config, "v_head_dim", None) or head_dim
    layers = sum(p.numel() for p in decoder_layers(model, table).parameters())
    layer_params = (layers - routed * (n_experts - top_k) // n_experts) // config.num_hidden_layers
    return ModelInfo(family=table.family, n_layers=config.num_hidden_layers, moe_layers=tuple(table.layers),
                     n_experts=n_experts, top_k=top_k, total_params=total,
                     active_params=total - routed * (n_experts - top_k) // n_experts, routed_expert_params=routed,
                     embedding_params=0 if embedding is head else embedding.numel(), vocab_size=config.vocab_size,
                     attention_flops_per_pair=2 * heads * (qk_dim + v_dim) * config.num_hidden_layers,
                     context_length=getattr(config, "max_position_embeddings", None), layer_params=layer_params)
