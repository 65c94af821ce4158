"""The SGLang backend end to end on a GPU (skipped without CUDA and sglang): parity with the HF
backend at zero deltas, per-request isolation of deltas, and reroute+sc."""

import pytest
import torch

from ttscale.backends.sampling import Sampling

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
sglang = pytest.importorskip("sglang") if torch.cuda.is_available() else None

MESSAGES = [{"role": "user", "content": "Question: what is 12 plus 30? Answer:"}]


@pytest.fixture(scope="module")
def backends(model_dirs):
    from ttscale.backends.hf import HFBackend
    from ttscale.backends.sglang_engine import SGLangBackend

    model = str(model_dirs["olmoe"])
    sgl = SGLangBackend(model, dtype="float32", enable_deterministic_inference=True, enable_return_routed_experts=True)
    yield sgl, HFBackend(model, dtype="float32", decode="dynamic")
    sgl.close()


def test_zero_deltas_match_the_hf_backend(backends):
    sgl, hf = backends
    ours = sgl.extend([sgl.new_branch(MESSAGES)], Sampling(max_new_tokens=24))[0]
    theirs = hf.extend([hf.new_branch(MESSAGES)], Sampling(max_new_tokens=24))[0]
    assert ours.generated == theirs.generated
    assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-3)


def test_a_delta_changes_only_its_own_request(backends):
    sgl, _ = backends
    plain = sgl.extend([sgl.new_branch(MESSAGES, seed=s) for s in range(3)], Sampling(max_new_tokens=24))
    branches = [sgl.new_branch(MESSAGES, seed=s) for s in range(3)]
    branches[1].delta = sgl.zero_state()
    branches[1].delta.delta[:, :2] = 8.0            # force experts 0 and 1 everywhere
    pushed = sgl.extend(branches, Sampling(max_new_tokens=24))
    assert pushed[0].generated == plain[0].generated and pushed[2].generated == plain[2].generated
    assert pushed[1].generated != plain[1].generated


def test_reroute_sc_end_to_end(backends, tmp_path):
    from ttscale.runs import RunConfig, execute

    sgl, _ = backends
    cfg = RunConfig(model=sgl.model_path, task="demo", strategy="reroute+sc", n=4, limit=2, backend="sglang")
    summary = execute(cfg, tmp_path / "run", backend=sgl)
    assert summary["problems"] == 2
