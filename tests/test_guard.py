"""The rerouting guard and the cheaper adaptation phase: per-row decisions from the problem's own context,
and work the fitted deltas cannot change done once."""

import random

import pytest
import torch

from ttscale import ledger
from ttscale.backends.hf import HFBackend
from ttscale.demo import DEMO_MODEL
from ttscale.demo.data import example, solved
from ttscale.routing.reroute import RerouteConfig, adapt_rows
from ttscale.routing.spsa import spsa_adapt
from ttscale.runs import RunConfig, solve
from ttscale.tasks import load_task
from ttscale.tiny import save_tiny_model

TESTBED = dict(lr=0.2, steps=20, select="all")


@pytest.fixture(scope="module")
def demo():
    return HFBackend(str(DEMO_MODEL), device="cpu", solo_contexts=False)     # rows of one call share a batch


def contexts():
    """Three solved base-8 additions cued `add` (a shifted context), then two more examples: truthful base-10
    ones in the first context (the held-out end contradicts what the start teaches), shifted ones in the
    second (it confirms it)."""
    rng = random.Random(3)
    start = "".join(example(*solved("oct", rng, cue="add")) for _ in range(3))
    return [start + "".join(example(*solved(rule, rng, cue="add")) for _ in range(2)) for rule in ("add", "oct")]


def branches(backend, texts):
    return [backend.new_branch([{"role": "user", "content": t}]) for t in texts]


def test_a_row_whose_held_out_end_gets_worse_keeps_its_deltas_and_stops_early(demo):
    cfg = RerouteConfig(**TESTBED, guard="holdout", guard_holdout=0.3, guard_margin=0.1)
    contradicted, confirmed = rows = branches(demo, contexts())
    demo.adapt(rows, cfg)
    assert contradicted.delta.delta.abs().max() == 0           # ignoring the guard would move them
    rejected, accepted = contradicted.cycles[-1].guard, confirmed.cycles[-1].guard
    assert not rejected["accepted"] and rejected["alpha"] == 0 and rejected["step"] == 0
    assert rejected["held_best"] == rejected["held_before"]
    assert rejected["steps_run"] == cfg.guard_patience < cfg.steps
    assert contradicted.cycles[-1].layers == []
    tokens = len(contradicted.tokens)
    assert contradicted.compute.adapt_forward_tokens == tokens * (cfg.guard_patience + 1)
    assert contradicted.compute.adapt_backward_tokens == tokens * cfg.guard_patience
    assert accepted["accepted"] and accepted["alpha"] == 1 and accepted["step"] > 0
    assert accepted["held_best"] < (1 - cfg.guard_margin) * accepted["held_before"]
    assert confirmed.delta.delta.abs().max() > 0
    alone = branches(demo, contexts()[1:])
    demo.adapt(alone, cfg)                                      # the other row of the batch changed nothing
    torch.testing.assert_close(alone[0].delta.delta, confirmed.delta.delta, atol=1e-4, rtol=0)


def test_the_gradient_free_adapter_applies_the_same_guard(demo):
    cfg = RerouteConfig(lr=0.2, steps=8, guard="holdout", guard_holdout=0.3, guard_margin=0.1)
    rows = branches(demo, contexts())
    spsa_adapt(demo, rows, cfg, scale=0.1)
    decision = rows[0].cycles[-1].guard
    assert decision["kind"] == "holdout" and not decision["accepted"]
    assert rows[0].delta.delta.abs().max() == 0 and rows[0].cycles[-1].layers == []
    with pytest.raises(ValueError, match="trust"):
        spsa_adapt(demo, rows, RerouteConfig(guard="trust"))


def test_the_trust_region_moves_routing_less_and_resets_a_collapse(demo):
    free, bounded = branches(demo, contexts()[1:] * 2)
    demo.adapt([free], RerouteConfig(**TESTBED))
    demo.adapt([bounded], RerouteConfig(**TESTBED, guard="trust", guard_kl=5.0))
    assert bounded.delta.delta.norm() < 0.5 * free.delta.delta.norm()
    assert bounded.cycles[-1].guard["accepted"]
    collapsed, = branches(demo, contexts()[1:])
    demo.adapt([collapsed], RerouteConfig(**TESTBED, guard="trust", guard_kl=0.0, guard_collapse=1e-6))
    decision = collapsed.cycles[-1].guard
    assert decision["entropy_after"] < decision["entropy_before"] and not decision["accepted"]
    assert collapsed.delta.delta.abs().max() == 0


def test_guard_none_is_the_paper_phase(demo):
    rows = branches(demo, contexts())
    demo.adapt(rows, RerouteConfig(**TESTBED))
    assert all(b.cycles[-1].guard is None and len(b.cycles[-1].losses) == 20 for b in rows)
    assert all(b.compute.adapt_forward_tokens == 20 * len(b.tokens) for b in rows)


@pytest.mark.parametrize("family", ["olmoe", "qwen3_moe", "deepseek_v3", "gpt_oss"])
def test_skipping_the_layers_below_the_fitted_ones_changes_nothing_but_the_cost(family, tmp_path):
    deeper = {"num_hidden_layers": 4} | ({"layer_types": ["sliding_attention", "full_attention"] * 2}
                                         if family == "gpt_oss" else {})
    backend = HFBackend(str(save_tiny_model(family, tmp_path / family, **deeper)), device="cpu")
    configs = [RerouteConfig(lr=0.2, steps=4, select=select, ratio=0.25) for select in ("confident", "uncertain")]
    prompts = ["What is 12 plus 30?", "def add(a, b):", "The quick brown fox", "Sum 1 to 10."]
    results = {}
    for reuse in (True, False):
        results[reuse] = []
        for text, cfg in [(t, c) for c in configs for t in prompts]:
            b, = branches(backend, [text])
            ids, mask = backend._batch([b])
            state = backend._stacked([b])
            with torch.enable_grad():
                phase = adapt_rows(backend.model, backend.table, ids, mask, state, cfg, reuse_lower=reuse)
            results[reuse].append((state.delta, phase))
    for (fast, fast_phase), (slow, slow_phase) in zip(results[True], results[False]):
        torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)
        assert fast_phase.losses[0] == pytest.approx(slow_phase.losses[0], abs=1e-6)
        assert int(slow_phase.skipped_forward) == 0
        assert int(fast_phase.skipped_backward) == int(slow_phase.skipped_backward)   # backward: both stop
    lowest = [backend.table.layers[int(p.slots[0].nonzero()[0])] for _, p in results[True]]
    assert any(lowest), "some prompt should fit a layer above the first"
    for (_, phase), layer in zip(results[True], lowest):
        assert int(phase.skipped_forward) == layer * (4 - 1)
        assert int(phase.skipped_backward) == layer * 4


def test_skipped_layers_are_taken_off_the_flops(tmp_path):
    backend = HFBackend(str(save_tiny_model("olmoe", tmp_path / "m", num_hidden_layers=4)), device="cpu")
    cfg = RerouteConfig(steps=3, select="confident", ratio=0.25)
    for text in ["What is 12 plus 30?", "def add(a, b):", "The quick brown fox", "Sum 1 to 10."]:
        b, = branches(backend, [text])
        backend.adapt([b], cfg)
        flops = ledger.flops(b.compute, backend.info)
        skipped = b.compute.skipped_layer_tokens_forward + b.compute.skipped_layer_tokens_backward
        b.compute.skipped_layer_tokens_forward = b.compute.skipped_layer_tokens_backward = 0
        b.compute.skipped_layer_pairs_forward = b.compute.skipped_layer_pairs_backward = 0
        assert (flops < ledger.flops(b.compute, backend.info)) == (skipped > 0)


def test_each_record_says_what_the_guard_decided_per_phase():
    backend = HFBackend(str(DEMO_MODEL), device="cpu")
    task = load_task("demo-mix")
    cfg = RunConfig(model=str(DEMO_MODEL), task="demo-mix", strategy="reroute-testbed", limit=1,
                    overrides=["reroute.guard=holdout", "reroute.interval=8", "sample.max_new_tokens=17"])
    record = solve(task.load(1)[0], task, backend, cfg)
    cycles = record["samples"][0]["routing"]["cycles"]
    assert len(cycles) == 3
    for cycle in cycles:
        guard = cycle["guard"]
        assert {"kind", "accepted", "alpha", "step", "steps_run", "held_before", "held_best"} <= guard.keys()
        assert guard["kind"] == "holdout" and guard["accepted"] == (guard["step"] > 0)


@pytest.mark.parametrize("setting", ["reroute.guard=lucky", "reroute.guard_holdout=1.0", "reroute.guard_margin=-0.1",
                                     "reroute.guard_patience=0", "reroute.guard_kl=-1.0", "reroute.guard_collapse=0.0"])
def test_bad_guard_settings_are_one_line_exit_2(setting, cli, tmp_path):
    code, _, err = cli("run", "--strategy", "reroute", "--set", setting, "--limit", "1", "--out", tmp_path / "out")
    assert code == 2 and setting.split("=")[0].split(".")[1] in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_report_shows_the_share_of_phases_kept(cli, tmp_path):
    guarded, plain = tmp_path / "guarded", tmp_path / "plain"
    for out, guard in ((guarded, "holdout"), (plain, "none")):
        code, _, err = cli("run", "--task", "demo-mix", "--strategy", "reroute-testbed", "--limit", "2", "--set",
                           f"reroute.guard={guard}", "--set", "sample.max_new_tokens=8", "--out", out)
        assert code == 0, err
    code, _, err = cli("report", guarded, plain, "--markdown", tmp_path / "report.md")
    assert code == 0, err
    rows = (tmp_path / "report.md").read_text().splitlines()
    assert rows[0].endswith("| phases kept |")
    kept, total = rows[2].rsplit("|", 2)[1].strip().split(" of ")
    assert int(total) == 2 and 0 <= float(kept) <= 1          # one phase per problem (8 tokens < interval)
    assert rows[3].rsplit("|", 2)[1].strip() == "-"


def test_a_rejected_phase_costs_no_cache_rebuild_and_changes_nothing():
    """With every phase rejected, guarded rerouting is greedy decoding plus the guard's checks: the same tokens,
    and the rows continue on their cache instead of prefilling their context again after each phase."""
    backend = HFBackend(str(DEMO_MODEL), device="cpu")
    task = load_task("demo")
    problems = task.load(3)
    rejecting = RunConfig(model=str(DEMO_MODEL), task="demo", strategy="reroute-testbed",
                          overrides=["reroute.guard=holdout", "reroute.guard_margin=0.99", "reroute.interval=8"])
    greedy = RunConfig(model=str(DEMO_MODEL), task="demo", strategy="greedy")
    for problem in problems:
        guarded, plain = solve(problem, task, backend, rejecting), solve(problem, task, backend, greedy)
        sample = guarded["samples"][0]
        assert sample["text"] == plain["samples"][0]["text"] and sample["tokens"] > 8
        assert len(sample["routing"]["cycles"]) >= 2
        assert not any(c["guard"]["accepted"] for c in sample["routing"]["cycles"])
        assert guarded["compute"]["prefill_tokens"] == guarded["compute"]["prompt_tokens"]


def test_a_sticky_guard_stops_adapting_a_branch_it_rejected():
    backend = HFBackend(str(DEMO_MODEL), device="cpu")
    task = load_task("demo")
    problem = task.load(1)[0]
    sticky = RunConfig(model=str(DEMO_MODEL), task="demo", strategy="reroute-testbed",
                       overrides=["reroute.guard=holdout", "reroute.guard_margin=0.99", "reroute.interval=8",
                                  "reroute.guard_sticky=true"])
    record = solve(problem, task, backend, sticky)
    greedy = solve(problem, task, backend, RunConfig(model=str(DEMO_MODEL), task="demo", strategy="greedy"))
    cycles = record["samples"][0]["routing"]["cycles"]
    assert len(cycles) == 1 and not cycles[0]["guard"]["accepted"]
    assert record["samples"][0]["text"] == greedy["samples"][0]["text"] and record["samples"][0]["tokens"] > 8
