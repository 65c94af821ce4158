"""Static-cache decoding: bucketed batches, compaction as rows leave, a compiled step that never recompiles."""

import pytest
import torch

from ttscale.backends.hf import HFBackend
from ttscale.backends.kv import BUCKETS, StaticKV, bucket, cache_length
from ttscale.backends.sampling import Sampling
from ttscale.routing.reroute import RerouteConfig

PROMPTS = ["What is 12 plus 30?", "def add(a, b):", "The quick brown fox jumps over the lazy dog.", "Hi", "7 * 6 = ?"]


def _grow(backend: HFBackend, delta_seed: int = 0) -> list:
    """Five branches with different prompts, deltas, budgets and sampling; rows leave at different steps."""
    branches = [backend.new_branch([{"role": "user", "content": p}], seed=i) for i, p in enumerate(PROMPTS)]
    for i, b in enumerate(branches):
        b.delta = backend.zero_state()
        b.delta.delta.normal_(generator=torch.Generator().manual_seed(delta_seed + i))
    params = [Sampling(temperature=0.0 if i % 2 else 0.9, max_new_tokens=6 + 5 * i) for i in range(len(branches))]
    return backend.extend(branches, params)


def test_buckets_and_lengths():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 33)] == [1, 2, 4, 8, 8, 16, 64]
    assert [cache_length(n) for n in (1, 256, 257, 700)] == [256, 256, 512, 1024]
    with pytest.raises(ValueError, match="largest static bucket"):
        bucket(BUCKETS[-1] + 1)


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "deepseek_v2", "granitemoe"])
def test_static_decode_matches_dynamic(family, model_dirs):
    dynamic = _grow(HFBackend(str(model_dirs[family]), decode="dynamic"))
    static = _grow(HFBackend(str(model_dirs[family]), decode="static"))
    assert [b.tokens for b in static] == [b.tokens for b in dynamic]
    for s, d in zip(static, dynamic):
        assert s.logprobs == pytest.approx(d.logprobs, abs=1e-4)
        assert s.finish_reason == d.finish_reason


def test_compiled_step_compiles_once_per_bucket_and_follows_delta_changes(model_dirs):
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    eager = HFBackend(str(model_dirs["olmoe"]), decode="static")
    compiled = HFBackend(str(model_dirs["olmoe"]), decode="static")
    compiled.static = StaticKV(compiled.model, dict(backend=counting_backend, fullgraph=True, dynamic=False))
    first = _grow(compiled)
    buckets_used = len(graphs)
    assert buckets_used == 4                        # 5 rows: buckets 8, 4, 2, 1 as rows finish
    assert [b.tokens for b in first] == [b.tokens for b in _grow(eager)]
    second = _grow(compiled, delta_seed=100)       # new deltas, same shapes: no recompilation
    assert len(graphs) == buckets_used
    assert [b.tokens for b in second] == [b.tokens for b in _grow(eager, delta_seed=100)]
    assert [b.tokens for b in second] != [b.tokens for b in first]


def test_sliding_window_models_refuse_static_decode(model_dirs):
    with pytest.raises(ValueError, match="full attention"):
        HFBackend(str(model_dirs["gpt_oss"]), decode="static")
    assert HFBackend(str(model_dirs["gpt_oss"])).decode == "dynamic"
    with pytest.raises(ValueError, match="--decode must be one of"):
        HFBackend(str(model_dirs["olmoe"]), decode="fast")


def test_backward_stops_below_the_lowest_adapted_layer(model_dirs):
    """After the first step (which needs every layer's routing to choose), weights are frozen and unselected
    deltas detached, so layers below the first adapted one keep no autograd graph."""
    backend = HFBackend(str(model_dirs["olmoe"]))
    graph_from = {}
    for select in ("confident", "uncertain"):    # with 2 MoE layers and ratio 0.5 these pick opposite layers
        needs_grad = {}

        def watch(index):
            def hook(module, args, out):
                needs_grad[index] = out.requires_grad   # the last step's forward
            return hook
        hooks = [layer.register_forward_hook(watch(i)) for i, layer in enumerate(backend.model.model.layers)]
        branch = backend.new_branch([{"role": "user", "content": PROMPTS[0]}])
        backend.adapt([branch], RerouteConfig(select=select, ratio=0.5, steps=2))
        for hook in hooks:
            hook.remove()
        (layer,) = branch.cycles[-1].layers
        graph_from[layer] = needs_grad
    assert graph_from == {0: {0: True, 1: True}, 1: {0: False, 1: True}}
