"""Routing control for every supported family: zero deltas are invisible, deltas steer only their row."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from ttscale.tiny import FAMILIES, save_tiny_model
from ttscale.backends.hf import HFBackend
from ttscale.backends.sampling import Sampling
from ttscale.routing.deltas import DeltaTable
from ttscale.routing.families import SUPPORTED_FAMILIES, UnsupportedModelError
from ttscale.routing.reroute import RerouteConfig

IDS = torch.tensor([[5, 17, 40, 99, 123, 7, 64, 250, 31, 8],
                    [9, 12, 13, 200, 201, 202, 17, 18, 19, 20],
                    [300, 2, 3, 4, 44, 55, 66, 77, 88, 99]])


def load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


def chosen_experts(table: DeltaTable, model, ids):
    """Top-k expert indices `[B, T, k]` per router, from the routers' own outputs."""
    seen = {}
    hooks = [site.router.register_forward_hook(lambda m, a, out, slot=slot: seen.__setitem__(slot, out[2]))
             for slot, site in enumerate(table.sites)]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    return {slot: idx.view(ids.shape[0], ids.shape[1], -1) for slot, idx in seen.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_deltas_are_bit_identical(family, model_dirs):
    plain, patched = load(model_dirs[family]), load(model_dirs[family])
    table = DeltaTable(patched)
    table.clear(batch=IDS.shape[0])
    with torch.no_grad():
        assert torch.equal(plain(IDS).logits, patched(IDS).logits)
    backend = HFBackend(str(model_dirs[family]))
    branch = backend.new_branch([{"role": "user", "content": "What is 12 plus 30?"}])
    backend.extend([branch], Sampling(max_new_tokens=12))
    reference = load(model_dirs[family]).generate(torch.tensor([branch.tokens[:branch.prompt_len]]), do_sample=False,
                                                  max_new_tokens=12, pad_token_id=0)
    assert branch.tokens == reference[0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_delta_on_one_row_steers_only_that_row(family, model_dirs):
    model = load(model_dirs[family])
    table = DeltaTable(model)
    table.clear(batch=3)
    with torch.no_grad():
        before_logits = model(IDS).logits
    before = chosen_experts(table, model, IDS)
    rows = torch.zeros(3, len(table.sites), table.num_experts)
    rows[0, :, -2:] = 30.0                        # force the last two experts for row 0
    table.load(rows)
    with torch.no_grad():
        after_logits = model(IDS).logits
    after = chosen_experts(table, model, IDS)
    for slot in after:
        assert set(after[slot][0].flatten().tolist()) == {table.num_experts - 2, table.num_experts - 1}
        assert not torch.equal(after[slot][0], before[slot][0])
        assert torch.equal(after[slot][1:], before[slot][1:])
    assert (after_logits[0] - before_logits[0]).abs().max() > 1e-3
    torch.testing.assert_close(after_logits[1:], before_logits[1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_deltas_and_adaptation_lowers_nll(family, model_dirs):
    backend = HFBackend(str(model_dirs[family]))
    branches = [backend.new_branch([{"role": "user", "content": text}])
                for text in ("What is 12 plus 30?", "def add(a, b): return a + b")]
    ids, mask = backend._batch(branches)
    backend.table.clear(batch=2)
    backend.table.values.requires_grad_(True)
    logits = backend.model(input_ids=ids, attention_mask=mask).logits
    grad, = torch.autograd.grad(logits.logsumexp(-1).sum(), backend.table.values)
    backend.table.values.requires_grad_(False)
    assert (grad.abs().sum(-1) > 0).all(), "every layer and row gets gradient"

    nll_before = [-sum(s) / len(s) for s in backend.score(branches, start=1)]
    backend.adapt(branches, RerouteConfig(steps=5, select="all", lr=0.001))   # small steps: selection stays put
    nll_after = [-sum(s) / len(s) for s in backend.score(branches, start=1)]
    for b, before, after in zip(branches, nll_before, nll_after):
        assert after < before
        assert b.cycles[0].losses[0] == pytest.approx(before, abs=1e-4)


def test_unsupported_and_dense_models_are_refused(tmp_path):
    phimoe = save_tiny_model("phimoe", tmp_path / "phimoe", num_local_experts=4, num_experts_per_tok=2)
    with pytest.raises(UnsupportedModelError, match="PhiMoE.*supported families: olmoe"):
        HFBackend(str(phimoe))
    dense = save_tiny_model("llama", tmp_path / "llama")
    with pytest.raises(UnsupportedModelError, match="no MoE routers.*supported families: " + SUPPORTED_FAMILIES):
        HFBackend(str(dense))


def test_compiled_model_follows_in_place_delta_updates_without_recompiling(model_dirs):
    import torch._dynamo

    model = load(model_dirs["olmoe"])
    table = DeltaTable(model)
    table.clear(batch=IDS.shape[0])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    rows = torch.zeros(IDS.shape[0], len(table.sites), table.num_experts)
    rows[0, :, -2:] = 30.0
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(compiled(IDS).logits, model(IDS).logits)
        table.load(rows)                       # same batch size: an in-place update of the same tensor
        steered = compiled(IDS).logits
        torch.testing.assert_close(steered, model(IDS).logits)
    assert (steered[0] - load(model_dirs["olmoe"])(IDS).logits[0]).abs().max() > 1e-3
