"""`ttscale bench`: decode speed, adaptation cost and rerouting overhead on a real model shape.

The model is built from a known config with random weights (nothing is downloaded), so the numbers
measure the runtime, not the weights. The memory-bandwidth floor of decoding is the bytes of weights
one decode step touches (all non-expert weights, plus the experts a batch of B tokens is expected to
hit: E * (1 - (1 - k/E)^B) per MoE layer) over the device's measured copy bandwidth.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ttscale.backends.hf import HFBackend, load_config
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch
from ttscale.generators import PlainGenerator, RerouteGenerator
from ttscale.routing.reroute import RerouteConfig, adapt_rows
from ttscale.tiny import tiny_tokenizer
from ttscale.inflight import drive

# Published configs of the paper's models (and a tiny one for CPU smoke runs).
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "olmoe-1b-7b": ("olmoe", dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
                                  num_key_value_heads=16, num_experts=64, num_experts_per_tok=8,
                                  intermediate_size=1024, vocab_size=50304)),
    "qwen1.5-moe-a2.7b": ("qwen2_moe", dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                                            num_key_value_heads=16, num_experts=60, num_experts_per_tok=4,
                                            moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                                            intermediate_size=5632, vocab_size=151936)),
    "deepseek-v2-lite": ("deepseek_v2", dict(hidden_size=2048, num_hidden_layers=27, num_attention_heads=16,
                                             num_key_value_heads=16, n_routed_experts=64, num_experts_per_tok=6,
                                             n_shared_experts=2, moe_intermediate_size=1408, intermediate_size=10944,
                                             first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=512,
                                             qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                                             topk_method="greedy", n_group=1, topk_group=1, vocab_size=102400)),
    "tiny": ("olmoe", dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                           num_experts=8, num_experts_per_tok=2, intermediate_size=128, vocab_size=1024,
                           eos_token_id=None)),    # OLMoE's default EOS id lies outside this vocabulary
}


@dataclass
class BenchConfig:
    shape: str = "tiny"
    model: str | None = None             # a hub id or directory whose *config* is used instead of a shape
    layers: int | None = None            # keep only this many decoder layers (small CPU runs)
    device: str | None = None
    dtype: str | None = None
    decode: str = "auto"                 # HFBackend decode mode (auto: dynamic)
    batches: tuple[int, ...] = (1, 8, 32)
    prompt_tokens: int = 512             # context of the prefill and adaptation measurements
    new_tokens: int = 512                # output length of the strategy comparisons
    decode_tokens: int = 64              # tokens per decode-speed measurement
    repeats: int = 3


def build_backend(cfg: BenchConfig) -> HFBackend:
    if cfg.model:
        config = load_config(cfg.model)
    elif cfg.shape in SHAPES:
        family, values = SHAPES[cfg.shape]
        config = AutoConfig.for_model(family, **values)
    else:
        raise ValueError(f"unknown shape {cfg.shape!r}; choose from {', '.join(SHAPES)} or pass --model")
    if cfg.layers:
        config.num_hidden_layers = cfg.layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:cfg.layers]
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    backend = HFBackend.from_model(model, tiny_tokenizer(chat_template=False), batch_size=max(cfg.batches),
                                   name=cfg.model or cfg.shape, decode=cfg.decode)
    backend.eos_ids = set()                   # random weights: fixed-length outputs
    return backend


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median wall time of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Bytes per second of a device-to-device copy (read + write)."""
    src = torch.empty(megabytes * 2 ** 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / _seconds(lambda: dst.copy_(src), device, 5)


def step_bytes(backend: HFBackend, batch: int) -> float:
    """Weight bytes one decode step reads at this batch size (expected distinct experts per layer)."""
    info, experts = backend.info, backend.info.routed_expert_params
    element = next(backend.model.parameters()).element_size()
    hit = 1 - (1 - info.top_k / info.n_experts) ** batch
    return element * (info.total_params - info.embedding_params - experts + experts * hit)


def _branches(backend: HFBackend, count: int, length: int, seed: int = 0) -> list[Branch]:
    generator = torch.Generator().manual_seed(seed)
    vocab = backend.info.vocab_size
    return [Branch(tokens=torch.randint(3, vocab, (length,), generator=generator).tolist(), prompt_len=length,
                   seed=seed + i) for i in range(count)]


SAVINGS = {   # name -> adapt_rows switches; "none" is the phase as it was before any of them
    "none": dict(reuse_lower=False, full_backward=True),
    "backward stops at the lowest fitted layer": dict(reuse_lower=False, full_backward=False),
    "layers below it run once": dict(reuse_lower=True, full_backward=True),
    "both": dict(reuse_lower=True, full_backward=False),
}


def adaptation_savings(backend: HFBackend, cfg: BenchConfig, steps: int = 5) -> list[dict[str, Any]]:
    """Seconds of one adaptation phase (one context of `prompt_tokens`) with each saving on, against none, per
    layer selection, with the largest difference its deltas show from the phase without savings; and a
    holdout-guarded phase, whose rows stop once the held-out loss stops improving."""
    context = _branches(backend, 1, cfg.prompt_tokens)[0]
    ids, mask = backend._batch([context])
    rows = []

    def phase(reroute: RerouteConfig, **switches) -> tuple[float, Any, Any]:
        def once():
            state = backend._stacked([context])
            with torch.enable_grad():
                result = adapt_rows(backend.model, backend.table, ids, mask, state, reroute, **switches)
            return state, result
        seconds = _seconds(once, backend.device, cfg.repeats)
        return seconds, *once()

    for select in ("confident", "all"):
        reroute = RerouteConfig(steps=steps, select=select, lr=0.2)
        base_s, base_state, base = phase(reroute, **SAVINGS["none"])
        lowest = min(backend.info.moe_layers[s] for s in base.slots[0].nonzero().flatten().tolist())
        for name, switches in SAVINGS.items():
            seconds, state, _ = phase(reroute, **switches)
            rows.append({"select": select, "lowest_layer": lowest, "saving": name, "seconds": seconds,
                         "speedup": base_s / seconds, "max_delta_diff": float((state.delta - base_state.delta).abs().max())})
        guarded = RerouteConfig(steps=steps, select=select, lr=0.2, guard="holdout")
        seconds, _, result = phase(guarded)
        rows.append({"select": select, "lowest_layer": lowest, "saving": "holdout guard (stops early)",
                     "seconds": seconds, "speedup": base_s / seconds, "steps_run": result.guard[0].steps_run})
    return rows


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    backend = build_backend(cfg)
    device, info = backend.device, backend.info
    out: dict[str, Any] = {"config": asdict(cfg), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                           else "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "model": asdict(info), "decode_mode": backend.decode,
                           "attention": backend.model.config._attn_implementation,
                           "experts": getattr(backend.model.config, "_experts_implementation", None)}
    bandwidth = copy_bandwidth(device)
    out["copy_bandwidth_gb_s"] = bandwidth / 1e9

    def prefill() -> None:   # a prompt and one sampled token
        backend.extend(_branches(backend, 1, cfg.prompt_tokens), Sampling(max_new_tokens=1))
    out["prefill_tok_s"] = cfg.prompt_tokens / _seconds(prefill, device, cfg.repeats)

    out["decode"] = []
    for batch in cfg.batches:
        def decode() -> None:
            backend.extend(_branches(backend, batch, 16), Sampling(max_new_tokens=cfg.decode_tokens))
        seconds = _seconds(decode, device, cfg.repeats)
        floor = batch * bandwidth / step_bytes(backend, batch)
        out["decode"].append({"batch": batch, "tok_s": batch * cfg.decode_tokens / seconds, "floor_tok_s": floor})

    out["adapt_savings"] = adaptation_savings(backend, cfg)
    reroute = RerouteConfig(steps=1)
    for batch in (1, 8):
        contexts = _branches(backend, batch, cfg.prompt_tokens)
        out[f"adapt_step_s_batch{batch}"] = _seconds(lambda: backend.adapt(contexts, reroute), device, cfg.repeats)

    def grow(generator, n: int, temperature: float) -> Callable[[], None]:
        def once() -> None:
            prompt = _branches(backend, 1, 64)[0]
            branches = [Branch(tokens=list(prompt.tokens), prompt_len=64, seed=i) for i in range(n)]
            drive(backend, generator.grow(branches, Sampling(temperature=temperature, max_new_tokens=cfg.new_tokens)))
        return once

    paper = RerouteGenerator(RerouteConfig())
    timings = {name: _seconds(fn, device, cfg.repeats) for name, fn in {
        "greedy": grow(PlainGenerator(), 1, 0.0), "reroute": grow(paper, 1, 0.0),
        "sc@8": grow(PlainGenerator(), 8, 0.7), "reroute+sc@8": grow(paper, 8, 0.7)}.items()}
    out["strategy_seconds"] = timings
    out["reroute_over_greedy"] = timings["reroute"] / timings["greedy"]
    out["reroute_sc_over_sc"] = timings["reroute+sc@8"] / timings["sc@8"]
    return out
