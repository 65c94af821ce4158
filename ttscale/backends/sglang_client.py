"""What the two SGLang backends share: branches as SGLang generate requests, responses back into branches.

Each branch is one request with its own rid, router delta and sampling seed (never `n > 1`, which
would share one delta). Deltas travel in `sampling_params.custom_params`, which SGLang hands to the
model only when a request carries a custom logit processor, so every request carries a no-op one.
Zero-delta contexts shared by several branches are prefilled once first; a branch with a delta salts
the prefix cache with a digest of its delta, so KV computed under one delta is never reused under
another (the HF backend's `kv=recompute`). Adaptation runs on a differentiable transformers copy of
the model (`hf`, where its weights are local) or gradient-free by SPSA on SGLang's prompt scoring.

A subclass only says how a batch of requests reaches SGLang (`_submit`: in-process `sglang.Engine`
or a server's HTTP API); every row of one call is submitted at once, so SGLang's scheduler batches
them, whichever problems they belong to.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer

from ttscale.backends.base import ChatBranches, ExtendRequest, ModelInfo, Scored, at_length_limit, runnable
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch, DeltaState
from ttscale.routing.reroute import RerouteConfig
from ttscale.routing.spsa import spsa_adapt
from ttscale.sglang_models.processor import serialized
from ttscale.sglang_models.runtime import DELTA_KEY, MOE_BLOCKS

SGLANG_VERSION = "0.5.23"       # the release the model package was written against (pinned by ttscale[sglang])
ADAPTERS = ("auto", "hf", "spsa")
ZERO_SALT = ""                  # the cache salt of zero-delta requests (SGLang reads "" as no salt)


def describe_for_sglang(model: str) -> ModelInfo:
    """The model's facts from its config, or a clear error when SGLang cannot reroute it."""
    from ttscale.backends.hf import describe_model

    info, why = describe_model(model)
    if info is None:
        raise ValueError(why)
    if info.family not in MOE_BLOCKS:
        raise ValueError(f"{info.family} is unsupported on sglang (supported: {', '.join(MOE_BLOCKS)}); "
                         f"use --backend hf")
    return info


def usable_context(context_len: int, max_req_input_len: int) -> int:
    """The context length ttscale uses on an SGLang engine: a branch holds fewer tokens than this
    (`base.runnable`), so it can always be sent again as input or scored. SGLang's scheduler accepts
    only inputs shorter than `max_req_input_len` = min(context, KV pool) − 1 − 5 reserved tokens, and
    caps input + new tokens at min(context, KV pool) − 2: the input bound is the tighter one."""
    return min(context_len, max_req_input_len)


def has_local_weights(model: str) -> bool:
    path = Path(model).expanduser()
    return path.is_dir() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


class SGLangClient(ChatBranches):
    """The backend protocol over SGLang generate requests; subclasses provide `_submit` and `close`."""
    info: ModelInfo
    model_path: str

    def _setup(self, model: str, info: ModelInfo, context_length: int, adapter: str, trainer_device: str,
               dtype: str | None, batch_size: int) -> None:
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
        self.model_path, self.name, self.batch_size = model, model, batch_size
        self.info = replace(info, context_length=context_length)     # what the server accepts
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.device = torch.device("cpu")            # where branch deltas live on the client
        self.adapter = adapter
        self._trainer_device, self._trainer_dtype, self._trainer = trainer_device, dtype, None
        self._rids = itertools.count()
        self._rid_prefix = f"ttscale-{uuid.uuid4().hex[:8]}"
        self._processor = serialized()

    def _submit(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the requests to SGLang all at once; their outputs, in order."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def zero_state(self) -> DeltaState:
        return DeltaState.zeros(len(self.info.moe_layers), self.info.n_experts)

    # --- requests -----------------------------------------------------------------------------

    def _row(self, b: Branch, sampling_params: dict[str, Any], return_logprob: bool = False,
             logprob_start_len: int = -1, top_logprobs: int = 0) -> dict[str, Any]:
        """One generate request for the branch: its context, its delta (when nonzero) with the matching
        cache salt, and the pass-through processor that makes SGLang hand the delta to the model."""
        delta = None if b.delta is None else b.delta.delta.detach().float().cpu()
        custom, salt = {}, ZERO_SALT
        if delta is not None and bool(delta.any()):
            custom = {DELTA_KEY: delta.flatten().tolist()}
            salt = hashlib.sha1(delta.numpy().tobytes()).hexdigest()[:16]
        return {"input_ids": list(b.tokens), "sampling_params": {**sampling_params, "custom_params": custom},
                "rid": f"{self._rid_prefix}-{b.id}-{next(self._rids)}", "cache_salt": salt,
                "custom_logit_processor": self._processor, "return_logprob": return_logprob,
                "logprob_start_len": logprob_start_len, **({"top_logprobs_num": top_logprobs} if top_logprobs else {})}

    def _warm(self, branches: Sequence[Branch]) -> None:
        """Prefill once each zero-delta context that several branches share."""
        counts: dict[tuple[int, ...], int] = {}
        for b in branches:
            if b.delta is None or not bool(b.delta.delta.any()):
                counts[tuple(b.tokens)] = counts.get(tuple(b.tokens), 0) + 1
        shared = {c: next(b for b in branches if tuple(b.tokens) == c) for c, n in counts.items() if n > 1}
        if shared:
            self._submit([self._row(b, {"max_new_tokens": 0}) for b in shared.values()])

    # --- the backend protocol -------------------------------------------------------------------

    def extend_requests(self, requests: Sequence[ExtendRequest], keep_cache: bool = False) -> None:
        """Grow the branches as one request each; `keep_cache` is implicit (the radix cache keeps prefixes)."""
        rows = runnable(requests, self.info.context_length)
        if not rows:
            return
        self._warm([r.branch for r, _ in rows])
        start = time.perf_counter()
        outputs = self._submit([self._row(r.branch, _sampling_params(r, budget), return_logprob=True)
                                for r, budget in rows])
        seconds = (time.perf_counter() - start) / len(rows)
        for (r, _), out in zip(rows, outputs):
            self._absorb(r, out, seconds)

    def _absorb(self, r: ExtendRequest, out: dict[str, Any], seconds: float) -> None:
        """A generate response into its branch: tokens, log-probs, compute, and how it ended."""
        b, meta = r.branch, out["meta_info"]
        new, context = list(out["output_ids"]), len(b.tokens)
        if not b.generated:
            b.compute.prompt_tokens += b.prompt_len
        b.tokens.extend(new)
        b.logprobs.extend(float(lp) for lp, *_ in meta["output_token_logprobs"])
        cached = meta.get("cached_tokens", 0)
        b.compute.generated_tokens += len(new)
        b.compute.prefill_tokens += meta["prompt_tokens"] - cached
        b.compute.attention_pairs_forward += (_triangle(context) - _triangle(cached)          # prefill, then
                                              + sum(range(context, context + len(new))))   # each new token
        b.compute.add_seconds("decode", seconds)
        reason = meta.get("finish_reason") or {}
        kind, matched = reason.get("type"), reason.get("matched")
        if kind == "stop" and isinstance(matched, int):
            b.finished, b.finish_reason = True, "eos"
        elif kind == "stop" and matched in r.stop:
            b.finished, b.finish_reason = True, "stop"
        elif at_length_limit(b, r.sampling, self.info.context_length):
            b.finished, b.finish_reason = True, "length"
        # otherwise paused: at a step end or out of this call's budget
        self.set_text(b, r.stop)

    def score(self, branches: Sequence[Branch], start: int | None = None) -> list[list[float]]:
        return [s.logprobs for s in self.score_top(branches, 0, start)]

    def score_top(self, branches: Sequence[Branch], k: int, start: int | None = None) -> list[Scored]:
        """Log-probs (and the k most likely tokens) of the branches' tokens from `start` on, under each
        branch's delta (`logprob_start_len` caps prefix reuse, so they are recomputed under its own delta)."""
        firsts = [max(1, b.prompt_len if start is None else start) for b in branches]
        outputs = self._submit([self._row(b, {"max_new_tokens": 0}, return_logprob=True,
                                          logprob_start_len=min(first, len(b.tokens)) - 1, top_logprobs=k)
                                for b, first in zip(branches, firsts)])
        scores = []
        for b, first, out in zip(branches, firsts, outputs):
            meta = out["meta_info"]
            values = [lp for lp, *_ in meta["input_token_logprobs"] if lp is not None]
            wanted = max(0, len(b.tokens) - first)
            tops = (meta.get("input_top_logprobs") or [])[-wanted:] if k and wanted else []
            scores.append(Scored([float(v) for v in values[len(values) - wanted:]] if wanted else [],
                                 [[(int(i), float(v)) for v, i, *_ in row or []] for row in tops]))
            b.compute.score_tokens += len(b.tokens)
            b.compute.attention_pairs_forward += _triangle(len(b.tokens))
        return scores

    def adapt(self, branches: Sequence[Branch], cfg: RerouteConfig) -> list[Branch]:
        adapter = self.adapter if cfg.adapter == "auto" else cfg.adapter
        if adapter == "spsa":
            return spsa_adapt(self, branches, cfg)
        trainer = self._hf_trainer()
        for b in branches:
            if b.delta is not None:
                b.delta = b.delta.to(trainer.device)
        trainer.adapt(branches, cfg)
        for b in branches:
            b.delta = b.delta.to(self.device)
        return list(branches)

    def _hf_trainer(self):
        """The differentiable transformers copy of the model, loaded on first use."""
        if self._trainer is None:
            from ttscale.backends.hf import HFBackend
            if not has_local_weights(self.model_path) and not self._weights_cached():
                raise ValueError(f"the hf adapter needs the weights of {self.model_path} on this machine; "
                                 f"use --set reroute.adapter=spsa")
            self._trainer = HFBackend(self.model_path, device=self._trainer_device, dtype=self._trainer_dtype,
                                      batch_size=self.batch_size, decode="dynamic")
        return self._trainer

    def _weights_cached(self) -> bool:
        """A hub id whose weights are in the local hub cache."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        return any(isinstance(try_to_load_from_cache(self.model_path, name), str)
                   for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def auto_adapter(adapter: str, model: str, weights_local: bool) -> str:
    """`auto`: the HF copy where the weights are here, SPSA otherwise."""
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
    return ("hf" if weights_local else "spsa") if adapter == "auto" else adapter


def _sampling_params(r: ExtendRequest, budget: int) -> dict[str, Any]:
    p: Sampling = r.sampling
    return {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k or -1, "max_new_tokens": budget,
            "stop": _stops(r), "no_stop_trim": True, "sampling_seed": _seed(r.branch)}


def _stops(r: ExtendRequest) -> list[str]:
    """The request's stop strings, and its step end (which pauses rather than finishes the branch)."""
    return list(r.stop) + ([r.step_end] if r.step_end and r.step_end not in r.stop else [])


def _seed(b: Branch) -> int:
    """A sampling seed per (branch seed, position), so a branch's draws do not depend on its batch."""
    return int.from_bytes(hashlib.sha1(f"{b.seed}:{len(b.generated)}".encode()).digest()[:4], "little") >> 1


def _triangle(n: int) -> int:
    """(query, key) pairs of causal attention over n tokens."""
    return n * (n + 1) // 2
