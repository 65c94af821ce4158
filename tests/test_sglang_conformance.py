"""SGLang API conformance: every sglang internal the model package and backend rely on still exists.

CI installs sglang without its GPU dependencies in an environment of its own (`.ci/run`, named by
TTSCALE_SGLANG_PYTHON); the first test reruns this file there. The others import sglang's model,
batch and engine modules on CPU, so a release that renames something we use fails here.
"""

import dataclasses
import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from ttscale.backends.sglang_client import SGLANG_VERSION


SGLANG_PYTHON = os.environ.get("TTSCALE_SGLANG_PYTHON")


def _sglang_here() -> bool:
    try:
        import sglang  # noqa: F401
    except ImportError:
        return False
    return True


def _import(module: str):
    """Import an sglang module (on CPU: see `_import_torchvision` in conftest.py)."""
    if not _sglang_here():
        if os.environ.get("CI") and not SGLANG_PYTHON:
            pytest.fail("CI must install sglang (.ci/run) for the conformance tests")
        pytest.skip("sglang is not installed in this environment")
    return __import__(module, fromlist=["_"])


@pytest.mark.skipif(not SGLANG_PYTHON or _sglang_here(), reason="sglang is importable here, or has no environment")
def test_conformance_in_the_sglang_environment():
    """Run the rest of this file in the environment where sglang is installed."""
    result = subprocess.run([SGLANG_PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                            env={**os.environ, "TTSCALE_SGLANG_PYTHON": ""})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and ("skipped" not in summary or " 1 skipped" in summary)   # only this test


BLOCKS = {   # family -> (sglang module, CausalLM, MoE block, the block's method that calls self.topk)
    "olmoe": ("olmoe", "OlmoeForCausalLM", "OlmoeMoE", "forward"),
    "qwen2_moe": ("qwen2_moe", "Qwen2MoeForCausalLM", "Qwen2MoeSparseMoeBlock", "_forward_router_experts"),
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3MoeSparseMoeBlock", "forward_normal"),
    "mixtral": ("mixtral", "MixtralForCausalLM", "MixtralMoE", "forward"),
}


def test_installed_sglang_is_the_pinned_release():
    sglang = _import("sglang")
    assert sglang.__version__ == SGLANG_VERSION


def test_external_package_replaces_the_builtin_classes():
    registry = _import("sglang.srt.models.registry")
    from ttscale.sglang_models.runtime import MOE_BLOCKS, Rerouted

    assert "SGLANG_EXTERNAL_MODEL_PACKAGE" in inspect.getsource(registry)
    classes = registry.import_model_classes("ttscale.sglang_models", strict=True)
    assert set(BLOCKS) == set(MOE_BLOCKS)
    for family, (module, causal_lm, block, _) in BLOCKS.items():
        builtin = getattr(_import(f"sglang.srt.models.{module}"), causal_lm)
        ours = classes[causal_lm]
        assert issubclass(ours, builtin) and issubclass(ours, Rerouted) and ours.family == family
        assert MOE_BLOCKS[family] == block


@pytest.mark.parametrize("family", sorted(BLOCKS))
def test_moe_blocks_route_through_their_topk_module(family):
    module, _, block, method = BLOCKS[family]
    cls = getattr(_import(f"sglang.srt.models.{module}"), block)
    init = inspect.getsource(cls.__init__)
    assert "self.gate = " in init and "self.topk = TopK(" in init and "self.experts = " in init
    path = inspect.getsource(getattr(cls, method))
    assert "self.gate(" in path and "self.topk(" in path


def test_topk_takes_hidden_states_and_router_logits():
    topk = _import("sglang.srt.layers.moe.topk")
    assert list(inspect.signature(topk.TopK.forward_native).parameters)[1:3] == ["hidden_states", "router_logits"]
    assert "forward" in vars(topk.TopK.__mro__[1]) and "backend" in inspect.signature(topk.TopK.forward).parameters
    from ttscale.sglang_models.runtime import delta_topk_class
    delta = delta_topk_class(topk.TopK)
    assert issubclass(delta, topk.TopK) and delta_topk_class(topk.TopK) is delta


def test_model_runner_calls_prepare_for_forward_before_every_forward():
    runner = _import("sglang.srt.model_executor.model_runner")
    assert "prepare_for_forward" in inspect.getsource(runner.ModelRunner._forward_raw)


def _forward_batch(mode: str, rids, lens=None, custom=None):
    info = _import("sglang.srt.model_executor.forward_batch_info")
    sampling = _import("sglang.srt.sampling.sampling_batch_info")
    required = [f.name for f in dataclasses.fields(info.ForwardBatch)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    batch = info.ForwardBatch(**{name: None for name in required})
    batch.forward_mode, batch.rids, batch.extend_seq_lens_cpu = info.ForwardMode[mode], rids, lens
    batch.sampling_info = sampling.SamplingBatchInfo.__new__(sampling.SamplingBatchInfo)
    batch.sampling_info.custom_params = custom
    return batch


def test_batch_requests_reads_real_forward_batches():
    from ttscale.sglang_models.runtime import DELTA_KEY, batch_requests

    delta = {DELTA_KEY: [0.5]}
    assert batch_requests(_forward_batch("EXTEND", ["a", "b"], [3, 2], [delta, None])) == (
        ["a", "b"], [3, 2], [[0.5], None])
    assert batch_requests(_forward_batch("DECODE", ["a", "b"], None, None)) == (["a", "b"], [1, 1], [None, None])
    assert batch_requests(_forward_batch("MIXED", ["a", "b"], [4, 1], [None, delta]))[1] == [4, 1]
    assert batch_requests(_forward_batch("IDLE", [])) is None
    assert batch_requests(_forward_batch("DECODE", None)) is None          # CUDA-graph capture
    with pytest.raises(RuntimeError, match="TARGET_VERIFY"):
        batch_requests(_forward_batch("TARGET_VERIFY", ["a"], [2]))


def test_request_fields_the_backend_sends_exist():
    engine = _import("sglang.srt.entrypoints.engine")
    params = inspect.signature(engine.Engine.generate).parameters
    for name in ("input_ids", "sampling_params", "rid", "cache_salt", "custom_logit_processor", "return_logprob",
                 "logprob_start_len", "return_routed_experts"):
        assert name in params, name
    for name in ("cached_tokens", "prompt_tokens", "finish_reason", "output_token_logprobs", "input_token_logprobs"):
        assert name in inspect.getsource(_import("sglang.srt.managers.tokenizer_manager")), name
    fields = {f.name for f in dataclasses.fields(_import("sglang.srt.managers.io_struct").GenerateReqInput)}
    for name in ("input_ids", "sampling_params", "rid", "cache_salt", "custom_logit_processor", "return_logprob",
                 "logprob_start_len"):       # what the HTTP client posts to /generate
        assert name in fields, name
    assert callable(engine.Engine.shutdown)
    sampling = _import("sglang.srt.sampling.sampling_params").SamplingParams(
        max_new_tokens=3, custom_params={"rr_delta": [0.0]}, sampling_seed=7, no_stop_trim=True, stop=["\n"])
    assert (sampling.custom_params, sampling.sampling_seed, sampling.no_stop_trim) == ({"rr_delta": [0.0]}, 7, True)
    batch_info = _import("sglang.srt.sampling.sampling_batch_info").SamplingBatchInfo
    assert "custom_params" in {f.name for f in dataclasses.fields(batch_info)}


def test_the_pass_through_processor_round_trips_and_changes_nothing():
    processor = _import("sglang.srt.sampling.custom_logit_processor").CustomLogitProcessor
    from ttscale.sglang_models.processor import PassThrough, serialized

    logits = torch.randn(2, 5)
    restored = processor.from_str(serialized())
    assert isinstance(restored, PassThrough) and isinstance(restored, processor)
    assert torch.equal(restored(logits, [{}, {}]), logits)
    assert processor.from_str(PassThrough.to_str()).__class__ is PassThrough


def test_requests_of_zero_and_nonzero_deltas_pass_sglang_validation(model_dirs):
    """Issue 16, defect 1: zero-delta rows carried `cache_salt=None`, which sglang refuses in a batch."""
    io = _import("sglang.srt.managers.io_struct")
    from ttscale.backends.sglang_client import SGLangClient, describe_for_sglang

    model = str(model_dirs["olmoe"])
    client = SGLangClient.__new__(SGLangClient)
    client._setup(model, describe_for_sglang(model), 512, "spsa", "cpu", None, 8)
    branches = [client.new_branch([{"role": "user", "content": "hi"}], seed=s) for s in range(3)]
    branches[1].delta = client.zero_state()
    branches[1].delta.delta[0, 1] = 0.5
    rows = [client._row(b, {"max_new_tokens": 4}, return_logprob=True) for b in branches]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    request = io.GenerateReqInput(**columns)
    request.normalize_batch_and_arguments()
    assert request.cache_salt[0] is None and request.cache_salt[2] is None and request.cache_salt[1]
    assert request.sampling_params[1]["custom_params"]["rr_delta"][1] == 0.5
    single = io.GenerateReqInput(**rows[0])        # what the HTTP client posts: one request per row
    single.normalize_batch_and_arguments()
    contract = _import("sglang.api.v1.api_types").GenerateRequest   # the HTTP server's JSON schema gate
    for row in rows:
        contract.from_json_value(json.loads(json.dumps(row)))


def test_unsupported_families_and_settings_fail_clearly(model_dirs):
    _import("sglang")
    from ttscale.backends.sglang_engine import SGLangBackend

    with pytest.raises(ValueError, match="deepseek_v2 is unsupported on sglang"):
        SGLangBackend(str(model_dirs["deepseek_v2"]))
    with pytest.raises(ValueError, match="unknown adapter"):
        SGLangBackend(str(model_dirs["olmoe"]), adapter="adam")
    with pytest.raises(ValueError, match="runs on cuda or cpu"):
        SGLangBackend(str(model_dirs["olmoe"]), device="mps")
