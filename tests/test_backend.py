"""The HF backend: batching, sampling, stop strings, scoring, chunked growth."""

import pytest

from ttscale.tiny import save_tiny_model
from ttscale.backends.hf import HFBackend
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch

MESSAGES = [{"role": "user", "content": "What is 12 plus 30?"}]


@pytest.fixture(scope="module")
def backend(model_dirs):
    return HFBackend(str(model_dirs["qwen3_moe"]), batch_size=4)


def test_chat_template_is_applied_when_present(backend, tmp_path):
    assert backend.tokenizer.decode(backend.encode(MESSAGES)) == "<|user|>What is 12 plus 30?\n<|assistant|>"
    plain = HFBackend(str(save_tiny_model("olmoe", tmp_path / "plain", chat_template=False)))
    assert plain.tokenizer.decode(plain.encode(MESSAGES)) == "What is 12 plus 30?"


def test_seeds_fix_samples_whatever_the_batch(backend):
    other = [{"role": "user", "content": "def add(a, b):"}]
    batch = [backend.new_branch(MESSAGES, seed=1), backend.new_branch(other, seed=2),
             backend.new_branch(MESSAGES, seed=1), backend.new_branch(MESSAGES, seed=3)]
    backend.extend(batch, Sampling(temperature=1.0, top_p=0.95, max_new_tokens=16))
    assert batch[0].tokens == batch[2].tokens
    assert batch[0].tokens != batch[3].tokens
    assert all(len(b.generated) == 16 or b.finish_reason == "eos" for b in batch)
    assert all(b.finish_reason in ("eos", "length") and b.finished for b in batch)


def test_growth_in_chunks_on_a_kept_cache_equals_one_pass(backend):
    whole = [backend.new_branch(MESSAGES, seed=s) for s in (5, 6)]
    chunked = [backend.new_branch(MESSAGES, seed=s) for s in (5, 6)]
    sampling = Sampling(temperature=0.8, max_new_tokens=20)
    backend.extend(whole, sampling)
    for _ in range(5):
        backend.extend(chunked, sampling, max_new_tokens=4, keep_cache=True)
    assert [b.tokens for b in whole] == [b.tokens for b in chunked]
    assert all(b.compute.prefill_tokens == b.compute.prompt_tokens for b in chunked)


def test_stop_strings_end_and_trim_the_text(backend):
    free = backend.new_branch(MESSAGES)
    backend.extend([free], Sampling(max_new_tokens=24))
    stop = free.text[6:8]
    assert stop
    stopped = backend.new_branch(MESSAGES)
    backend.extend([stopped], Sampling(max_new_tokens=24), stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:free.text.find(stop)]
    assert len(stopped.generated) < len(free.generated)


def test_score_reproduces_generation_logprobs(backend):
    branches = [backend.new_branch(MESSAGES, seed=s) for s in (1, 2)]
    backend.extend(branches, Sampling(temperature=1.0, max_new_tokens=10))
    for b, scored in zip(branches, backend.score(branches)):
        assert scored == pytest.approx(b.logprobs, abs=1e-4)


def test_score_top_ranks_the_whole_distribution(backend):
    """score_top: the same log-probs as score, and at each position the k most likely tokens of the full
    next-token distribution, most likely first, batched rows as single ones."""
    import torch

    branches = [backend.new_branch(MESSAGES), backend.new_branch([{"role": "user", "content": "def add(a, b):"}])]
    backend.extend(branches, Sampling(temperature=1.0, max_new_tokens=6))
    scored = backend.score_top(branches, 3, start=1)
    for b, s in zip(branches, scored):
        assert s.logprobs == backend.score([b], start=1)[0]
        [alone] = backend.score_top([b], 3, start=1)
        assert s.logprobs == pytest.approx(alone.logprobs, abs=1e-5)
        with torch.no_grad():
            logits = backend.model(input_ids=torch.tensor([b.tokens])).logits[0, :-1].float().log_softmax(-1)
        assert [[t for t, _ in top] for top in s.top] == logits.topk(3).indices.tolist()
        assert [v for top in s.top for _, v in top] == pytest.approx(logits.topk(3).values.flatten().tolist(), abs=1e-5)
        assert all(lp <= top[0][1] + 1e-6 for lp, top in zip(s.logprobs, s.top))
    assert backend.score_top(branches, 0)[0].top == []


def test_a_branch_at_the_context_length_finishes_with_length(tmp_path):
    """The budget is capped at the context (both backends: `runnable`); the cut branch finishes with "length"."""
    from ttscale.backends.base import PromptTooLong

    short = HFBackend(str(save_tiny_model("olmoe", tmp_path / "short", max_position_embeddings=40)))
    assert short.info.context_length == 40
    b = short.new_branch(MESSAGES)
    assert b.prompt_len < 39
    short.extend([b], Sampling(temperature=1.0, max_new_tokens=100))
    assert b.finished and b.finish_reason == "length"
    assert len(b.tokens) == 39 and len(b.logprobs) == len(b.generated)
    again = short.new_branch(MESSAGES)
    short.extend([again], Sampling(temperature=1.0, max_new_tokens=100), max_new_tokens=3)   # in chunks
    while not again.finished:
        short.extend([again], Sampling(temperature=1.0, max_new_tokens=100), max_new_tokens=3, keep_cache=True)
    assert again.tokens == b.tokens and again.finish_reason == b.finish_reason
    with pytest.raises(PromptTooLong, match=r"^prompt of \d+ tokens is longer than the model's context \(40 tokens"):
        short.new_branch([{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 3}])
    long = Branch(tokens=list(range(5, 55)), prompt_len=50)       # built by hand: extend checks it too
    with pytest.raises(PromptTooLong, match=r"^the prompt \(50 tokens\) is not shorter than the model's context "
                                            r"length \(40 tokens\)$"):
        short.extend([long], Sampling(max_new_tokens=4))
    long.meta["problem"] = "demo/test/7"            # the run loop names the problem (branch.meta)
    with pytest.raises(PromptTooLong, match=r"^problem demo/test/7: the prompt \(\d+ tokens\)"):
        short.extend([long], Sampling(max_new_tokens=4))
