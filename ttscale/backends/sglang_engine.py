"""The SGLang backend: each branch is a request on an in-process `sglang.Engine` carrying its own deltas.

The engine loads the model through ttscale's model package (`ttscale.sglang_models`, registered with
`SGLANG_EXTERNAL_MODEL_PACKAGE`), whose MoE blocks add each request's router deltas to the logits
before top-k. Deltas travel in `sampling_params.custom_params` (SGLang hands those to the model only
when a request carries a custom logit processor, so every request carries a no-op one). Every branch
is its own request (never `n > 1`, which would share one delta); prompts shared by zero-delta
branches are prefilled once first; a branch with a delta salts the prefix cache with a digest of its
delta, so KV computed under one delta is never reused under another. Adaptation runs on a
differentiable transformers copy of the model (`adapter="hf"`) or gradient-free by SPSA on SGLang's
prompt scoring (`adapter="spsa"`). Beam search is client-side (ttscale's own), so each beam keeps its delta.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer

from ttscale.backends.base import ChatBranches, ExtendRequest, check_local_dir
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch, DeltaState
from ttscale.routing.reroute import RerouteConfig
from ttscale.routing.spsa import spsa_adapt

SGLANG_VERSION = "0.5.23"       # the release the model package was written against (pinned by ttscale[sglang])
MODEL_PACKAGE = "ttscale.sglang_models"
ADAPTERS = ("hf", "spsa")


def require_sglang():
    try:
        import sglang
    except ImportError:
        raise ValueError("the sglang backend needs sglang on a CUDA machine: pip install 'ttscale[sglang]'") from None
    return sglang


class SGLangBackend(ChatBranches):
    def __init__(self, model: str, device: str | None = None, dtype: str | None = None, batch_size: int = 32,
                 decode: str = "auto", adapter: str = "hf", tp_size: int = 1, mem_fraction_static: float | None = None,
                 **engine_args: Any):
        """Start an engine on `model` (a local directory or hub id of a supported MoE family)."""
        from ttscale.backends.hf import describe_model
        from ttscale.sglang_models.runtime import DELTA_KEY, MOE_BLOCKS, ROWS

        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
        if device not in (None, "cuda") or decode not in ("auto", "compiled"):
            raise ValueError("the sglang backend runs on CUDA with its own CUDA-graph decode (no --device/--decode)")
        sglang = require_sglang()
        check_local_dir(model)
        info, why = describe_model(model)
        if info is None:
            raise ValueError(why)
        if info.family not in MOE_BLOCKS:
            raise ValueError(f"{info.family} is unsupported on sglang (supported: {', '.join(MOE_BLOCKS)}); "
                             f"use --backend hf")
        os.environ["SGLANG_EXTERNAL_MODEL_PACKAGE"] = MODEL_PACKAGE     # read by the spawned scheduler
        self.model_path, self.dtype, self.adapter, self.batch_size = model, dtype, adapter, batch_size
        self.info, self.name, self.delta_key = info, model, DELTA_KEY
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.device = torch.device("cpu")            # where branch deltas live on the client
        self._trainer = None
        self._rids = itertools.count()
        self.engine = sglang.Engine(
            model_path=model, dtype=dtype or "auto", tp_size=tp_size,
            # the HF copy used for adaptation shares the GPU: leave it room
            mem_fraction_static=mem_fraction_static or (0.45 if adapter == "hf" else 0.85),
            enable_custom_logit_processor=True, max_running_requests=min(ROWS - 1, 1024),
            enable_dp_attention=False, enable_two_batch_overlap=False, **engine_args)
        self._noop = _noop_processor()

    def close(self) -> None:
        self.engine.shutdown()

    def zero_state(self) -> DeltaState:
        return DeltaState.zeros(len(self.info.moe_layers), self.info.n_experts)

    # --- requests -----------------------------------------------------------------------------

    def _request(self, b: Branch) -> dict[str, Any]:
        """The per-branch request fields: its delta (when nonzero) and the matching cache salt."""
        delta = None if b.delta is None else b.delta.delta.detach().float().cpu()
        if delta is None or not bool(delta.any()):
            return {"custom_params": {}, "cache_salt": None}
        salt = hashlib.sha1(delta.numpy().tobytes()).hexdigest()[:16]
        return {"custom_params": {self.delta_key: delta.flatten().tolist()}, "cache_salt": salt}

    def _generate(self, branches: Sequence[Branch], sampling_params: list[dict[str, Any]], **kwargs) -> list[dict]:
        fields = [self._request(b) for b in branches]
        for params, f in zip(sampling_params, fields):
            params["custom_params"] = f["custom_params"]
        outputs = self.engine.generate(
            input_ids=[list(b.tokens) for b in branches], sampling_params=sampling_params,
            custom_logit_processor=[self._noop] * len(branches), cache_salt=[f["cache_salt"] for f in fields],
            rid=[f"ttscale-{b.id}-{next(self._rids)}" for b in branches], **kwargs)
        return outputs if isinstance(outputs, list) else [outputs]

    def _warm(self, branches: Sequence[Branch]) -> None:
        """Prefill once each zero-delta context that several branches share."""
        contexts: dict[tuple[int, ...], int] = {}
        for b in branches:
            if self._request(b)["cache_salt"] is None:
                contexts[tuple(b.tokens)] = contexts.get(tuple(b.tokens), 0) + 1
        shared = [list(c) for c, count in contexts.items() if count > 1]
        if shared:
            self.engine.generate(input_ids=shared, sampling_params=[{"max_new_tokens": 0} for _ in shared])

    # --- the backend protocol -------------------------------------------------------------------

    def extend_requests(self, requests: Sequence[ExtendRequest], keep_cache: bool = False) -> None:
        """Grow the branches as one request each; `keep_cache` is implicit (the radix cache keeps prefixes)."""
        rows = []
        for r in requests:
            if r.branch.finished:
                continue
            if r.budget() <= 0:
                r.branch.finished, r.branch.finish_reason = True, "length"
                continue
            rows.append(r)
        if not rows:
            return
        self._warm([r.branch for r in rows])
        start = time.perf_counter()
        outputs = self._generate([r.branch for r in rows], [
            {"temperature": r.sampling.temperature, "top_p": r.sampling.top_p, "top_k": r.sampling.top_k or -1,
             "max_new_tokens": r.budget(), "stop": _stops(r), "no_stop_trim": True, "sampling_seed": _seed(r.branch)}
            for r in rows], return_logprob=True)
        seconds = (time.perf_counter() - start) / len(rows)
        for r, out in zip(rows, outputs):
            b, meta = r.branch, out["meta_info"]
            new = list(out["output_ids"])
            b.tokens.extend(new)
            b.logprobs.extend(float(lp) for lp, *_ in meta["output_token_logprobs"])
            if len(b.generated) == len(new):          # the branch's first growth
                b.compute.prompt_tokens += b.prompt_len
            b.compute.generated_tokens += len(new)
            b.compute.prefill_tokens += meta["prompt_tokens"] - meta.get("cached_tokens", 0)
            b.compute.add_seconds("decode", seconds)
            self._finish(b, r.sampling, meta["finish_reason"], r.stop)
            self.set_text(b, r.stop)

    @staticmethod
    def _finish(b: Branch, p: Sampling, reason: dict[str, Any] | None, stop: Sequence[str]) -> None:
        kind, matched = (reason or {}).get("type"), (reason or {}).get("matched")
        if kind == "stop" and isinstance(matched, int):
            b.finished, b.finish_reason = True, "eos"
        elif kind == "stop" and matched in stop:
            b.finished, b.finish_reason = True, "stop"
        elif len(b.generated) >= p.max_new_tokens:
            b.finished, b.finish_reason = True, "length"
        # otherwise paused: at a step end or out of this call's budget

    def score(self, branches: Sequence[Branch], start: int | None = None) -> list[list[float]]:
        """Prompt log-probs under each branch's delta (`logprob_start_len` caps prefix reuse, so they are
        recomputed under the branch's own delta)."""
        firsts = [max(1, b.prompt_len if start is None else start) for b in branches]
        outputs = self._generate(branches, [{"max_new_tokens": 0} for _ in branches], return_logprob=True,
                                 logprob_start_len=firsts)
        scores = []
        for b, first, out in zip(branches, firsts, outputs):
            values = [lp for lp, *_ in out["meta_info"]["input_token_logprobs"] if lp is not None]
            scores.append([float(v) for v in values[-(len(b.tokens) - first):]])
            b.compute.score_tokens += len(b.tokens)
        return scores

    def adapt(self, branches: Sequence[Branch], cfg: RerouteConfig) -> list[Branch]:
        if self.adapter == "spsa":
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
        """The differentiable transformers copy of the model, loaded on first use (same GPU, eager)."""
        if self._trainer is None:
            from ttscale.backends.hf import HFBackend
            self._trainer = HFBackend(self.model_path, device="cuda", dtype=self.dtype, batch_size=self.batch_size,
                                      decode="dynamic")
        return self._trainer


def _stops(r: ExtendRequest) -> list[str]:
    """The request's stop strings, and its step end (which pauses rather than finishes the branch)."""
    return list(r.stop) + ([r.step_end] if r.step_end and r.step_end not in r.stop else [])


def _seed(b: Branch) -> int:
    """A sampling seed per (branch seed, position), so a branch's draws do not depend on its batch."""
    return int.from_bytes(hashlib.sha1(f"{b.seed}:{len(b.generated)}".encode()).digest()[:4], "little") >> 1


def _noop_processor() -> str:
    """A serialised custom logit processor that changes nothing: its presence makes SGLang pass
    `custom_params` (the deltas) to the model."""
    from ttscale.sglang_models.processor import PassThrough
    return PassThrough().to_str()
