"""The SGLang backend against a real `sglang.Engine` on CPU (bf16), on the bundled demo model.

Run by tests/test_sglang_cpu.py in a process of its own in the SGLang environment (tests/sglang_env.py);
one engine for the module (started once, ~30 s). Checks:
zero-delta parity with the hf backend, scoring with the most likely tokens, a delta changing only its own
request in a mixed batch, every strategy end to end with its records compared to the hf backend's, the context limit, and the
issue-16 defects (zero-delta rows refused, the tiny OLMoE not loading, requests past the context).
"""

import json
import os
import subprocess
import sys

import pytest

from ttscale.backends.base import PromptTooLong
from ttscale.backends.sampling import Sampling
from ttscale.demo import DEMO_MODEL, DEMO_TASK

# bf16 (SGLang's CPU kernels) against the hf backend's fp32. The demo router spreads its mass evenly over a
# domain's 8 experts, so bf16 rounding can swap which 4 of them a token picks: a token's log-prob then
# moves by up to ~0.5 (measured 0.497), and now and then greedy decoding takes another token (on the first
# 12 demo problems SGLang's answer line left hf's argmax on 2, by 4.2 and 11.3 nats; the hf backend itself
# in bf16 leaves its fp32 argmax on 2 of them as well, by 3.2 and 18.3). So parity is checked teacher-forced:
# the hf backend scores SGLang's tokens, which must be its argmax nearly everywhere, with equal log-probs
LOGPROB_TOLERANCE = 0.75
ARGMAX_AGREEMENT = 0.9         # share of SGLang's greedy tokens that are the hf backend's argmax (measured 0.99)
TYPICAL_DRIFT = 0.02           # median |log-prob difference| over the tokens where both agree (measured ~0.001)
PARITY_PROBLEMS = 12
STRATEGIES = ["greedy", "sc", "bon", "beam", "reroute", "reroute+sc"]
GREEDY = {"greedy", "reroute"}          # strategies that decode greedily: their answers are compared
PROBLEMS = 3
OVERRIDES = ["reroute.interval=16", "reroute.steps=2"]


def samples(strategy: str) -> int:
    """--n: 1 where the strategy draws one sample."""
    return 1 if strategy in ("greedy", "reroute") else 3


@pytest.fixture(scope="module")
def engines():
    from ttscale.backends.hf import HFBackend
    from ttscale.backends.sglang_engine import SGLangBackend

    sgl = SGLangBackend(str(DEMO_MODEL), device="cpu")
    yield sgl, HFBackend(str(DEMO_MODEL), device="cpu", decode="dynamic")
    sgl.close()


@pytest.fixture(scope="module")
def prompts():
    from ttscale.tasks import load_task

    task = load_task(DEMO_TASK)
    return [task.messages(p) for p in task.load(PROBLEMS)]



def test_zero_deltas_match_the_hf_backend(engines):
    sgl, hf = engines
    # the answer line: past it the model writes a next question of random characters, near-ties in bf16
    ours = sgl.extend([sgl.new_branch(m) for m in parity_prompts()], Sampling(max_new_tokens=32), stop=("\n",))
    assert_greedy_parity(ours, hf)
    # SGLang's own prefill scoring against its decode: the same bf16 near-ties, so position by position
    close = [abs(x - y) <= LOGPROB_TOLERANCE
             for a, s in zip(ours, sgl.score(ours)) for x, y in zip(a.logprobs, s, strict=True)]
    assert sum(close) / len(close) >= ARGMAX_AGREEMENT, (sum(close), len(close))


def parity_prompts() -> list:
    from ttscale.tasks import load_task

    task = load_task(DEMO_TASK)
    return [task.messages(p) for p in task.load(PARITY_PROBLEMS)]


def assert_greedy_parity(ours: list, hf) -> None:
    """SGLang's greedy branches (zero deltas) against the hf backend, teacher-forced: SGLang's tokens are hf's
    argmax but for bf16 flips (ARGMAX_AGREEMENT), with hf's log-probs where they agree, and every branch
    agrees up to its first flip."""
    agree, drift = [], []
    for b, s in zip(ours, hf.score_top(ours, 1)):
        assert len(s.logprobs) == len(b.generated) == len(b.logprobs)
        same = [top[0][0] == token for token, top in zip(b.generated, s.top)]
        agree += same
        drift += [abs(x - y) for x, y, ok in zip(b.logprobs, s.logprobs, same) if ok]
        first_flip = same.index(False) if False in same else len(same)
        assert b.logprobs[:first_flip] == pytest.approx(s.logprobs[:first_flip], abs=LOGPROB_TOLERANCE)
    assert sum(agree) / len(agree) >= ARGMAX_AGREEMENT, (sum(agree), len(agree))
    assert sorted(drift)[len(drift) // 2] <= TYPICAL_DRIFT, sorted(drift)[len(drift) // 2]


def test_score_top_gives_the_most_likely_tokens(engines):
    """score_top (log-probs with the k most likely tokens, for `ttscale serve`'s logprobs): the same
    log-probs as score, k alternatives per position, most likely first, the scored token never above the
    first; the ranking agrees with the hf backend's but for bf16 near-ties."""
    from ttscale.branch import Branch
    from ttscale.demo.task import DemoTask

    sgl, hf = engines
    task = DemoTask()
    branches = [Branch(tokens=hf.tokenizer(p.prompt + task.reference(p)).input_ids, prompt_len=1)
                for p in task.load(PROBLEMS)]
    ours, theirs = sgl.score_top(branches, 3), hf.score_top(branches, 3)
    for b, s, t in zip(branches, ours, theirs):
        assert s.logprobs == sgl.score([b])[0] and len(s.top) == len(s.logprobs) == len(b.tokens) - 1
        for lp, top in zip(s.logprobs, s.top):
            values = [v for _, v in top]
            assert len(top) == 3 and values == sorted(values, reverse=True) and lp <= values[0] + 1e-3
        agree = sum(a[0][0] == c[0][0] for a, c in zip(s.top, t.top)) / len(s.top)
        assert agree > 0.8, agree


def test_zero_delta_and_delta_rows_go_in_one_batch(engines, prompts):
    """Defect 1: a batch mixing zero-delta rows (no cache salt) with delta rows was refused."""
    sgl, _ = engines
    branches = [sgl.new_branch(prompts[0], seed=s) for s in range(3)]
    branches[1].delta = sgl.zero_state()
    branches[1].delta.delta[:, 0] = 1.0
    sgl.extend(branches, Sampling(max_new_tokens=4))
    assert all(len(b.generated) > 0 for b in branches)


def test_a_delta_changes_only_its_own_request(engines, prompts):
    sgl, _ = engines
    # greedy: sampled tokens are not reproducible across runs in bf16 (a prefix served from the radix
    # cache carries other rounding than a recomputed one), and one near-tie flips a sample
    sampling = Sampling(max_new_tokens=24)
    plain = sgl.extend([sgl.new_branch(prompts[i % 2], seed=i) for i in range(4)], sampling)
    branches = [sgl.new_branch(prompts[i % 2], seed=i) for i in range(4)]
    branches[1].delta = sgl.zero_state()
    branches[1].delta.delta[:, 2:4] = 8.0            # force experts 2 and 3 in every layer
    pushed = sgl.extend(branches, sampling)
    for i in (0, 2, 3):
        assert pushed[i].generated == plain[i].generated
    assert pushed[1].logprobs[:len(plain[1].logprobs)] != plain[1].logprobs


def test_a_branch_at_the_context_length_finishes_with_length_on_both(engines):
    """Defect 3: the budget is capped at the context; both backends stop there the same way."""
    sgl, hf = engines
    assert hf.info.context_length == 2048         # the demo model's max_position_embeddings
    assert sgl.info.context_length == 2048 - 6    # SGLang's scheduler reserves 6 tokens (usable_context)
    for backend in (sgl, hf):
        limit = backend.info.context_length
        b = backend.new_branch([{"role": "user", "content": "7"}])
        b.tokens = b.tokens[:1] * (limit - 4)
        b.prompt_len = len(b.tokens)
        backend.extend([b], Sampling(max_new_tokens=64))
        assert b.finished and b.finish_reason in ("length", "eos")
        if b.finish_reason == "length":
            assert len(b.tokens) == limit - 1
        assert backend.score([b])                          # a full branch can still be scored
        chunked = backend.new_branch([{"role": "user", "content": "7"}])
        chunked.tokens, chunked.prompt_len = b.tokens[:limit - 4], limit - 4
        for _ in range(8):                                 # one token per call: it must finish, not stall
            backend.extend([chunked], Sampling(max_new_tokens=64), max_new_tokens=1)
            if chunked.finished:
                break
        assert chunked.finished and chunked.tokens == b.tokens and chunked.finish_reason == b.finish_reason
        long = backend.new_branch([{"role": "user", "content": "7"}])
        long.tokens = long.tokens[:1] * limit
        long.prompt_len = limit
        with pytest.raises(PromptTooLong, match=f"context length \\({limit} tokens\\)"):
            backend.extend([long], Sampling(max_new_tokens=8))


def _records(path):
    return {r["id"]: r for r in map(json.loads, (path / "records.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def hf_runs(engines, tmp_path_factory):
    from ttscale.runs import RunConfig, execute

    _, hf = engines
    root = tmp_path_factory.mktemp("hf")
    for strategy in STRATEGIES:
        execute(RunConfig(model=str(DEMO_MODEL), task=DEMO_TASK, strategy=strategy, n=samples(strategy),
                          limit=PROBLEMS, overrides=OVERRIDES), root / strategy, backend=hf)
    return root


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_end_to_end_match_the_hf_backend(engines, hf_runs, tmp_path, strategy):
    from ttscale.runs import RunConfig, execute

    sgl, _ = engines
    summary = execute(RunConfig(model=str(DEMO_MODEL), task=DEMO_TASK, strategy=strategy, n=samples(strategy),
                                limit=PROBLEMS, backend="sglang", overrides=OVERRIDES),
                      tmp_path / strategy, backend=sgl)
    assert summary["problems"] == PROBLEMS
    compare_records(_records(tmp_path / strategy), _records(hf_runs / strategy), strategy)


def compare_records(ours: dict, theirs: dict, strategy: str) -> None:
    """Same problems; both ledgers filled; where both decode greedily, all answers but a bf16 flip equal."""
    assert ours.keys() == theirs.keys()
    for pid, record in ours.items():
        other = theirs[pid]
        check_filled(record, strategy)
        check_filled(other, strategy)
    if strategy in GREEDY:           # a bf16 flip may change one answer (see LOGPROB_TOLERANCE); most must agree
        same = [ours[pid]["prediction"] == theirs[pid]["prediction"] for pid in ours]
        assert sum(same) >= len(same) - 1, same


def check_filled(record: dict, strategy: str) -> None:
    """A record with samples and a filled compute ledger (adaptation counted for reroute)."""
    compute = record["compute"]
    assert record["samples"]
    assert compute["generated_tokens"] > 0 and compute["prompt_tokens"] > 0 and compute["flops"] > 0
    assert sum(compute["seconds"].values()) > 0
    if strategy.startswith("reroute"):
        assert compute["adapt_token_passes"]["forward"] > 0
        assert all(s["routing"]["cycles"] for s in record["samples"])


def test_cli_runs_the_engine_on_cpu_and_starts_the_tiny_olmoe(model_dirs, tmp_path):
    """`ttscale run --backend sglang --device cpu` end to end; defect 2: the shared tiny OLMoE loads."""
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"id": "p1", "prompt": "What is 12 plus 30?", "answer": "42"}) + "\n"
                    + json.dumps({"id": "p2", "prompt": "The quick brown fox", "answer": "jumps"}) + "\n")
    outs = {}
    for backend in ("sglang", "hf"):
        outs[backend] = tmp_path / backend
        done = subprocess.run([sys.executable, "-m", "ttscale.cli", "run", "--backend", backend, "--device", "cpu",
                               "--model", str(model_dirs["olmoe"]), "--task", str(task), "--strategy", "greedy",
                               "--set", "sample.max_new_tokens=8", "--out", str(outs[backend])],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
    compare_records(_records(outs["sglang"]), _records(outs["hf"]), "greedy")
