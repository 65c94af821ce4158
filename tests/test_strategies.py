"""Strategies that compose: the grammar, presets, votes, searches and their compute ledger."""

import pytest
import torch

from ttscale.aggregate import best, vote
from ttscale.backends.hf import HFBackend
from ttscale.backends.sampling import Sampling
from ttscale.generators import RerouteGenerator
from ttscale.routing.reroute import RerouteConfig
from ttscale.scorers import RewardModel
from ttscale.search import SEARCHES
from ttscale.search.bon import BestOfN
from ttscale.spec import parse_spec, resolve_settings
from ttscale.strategy import Strategy
from ttscale.tasks.base import Problem
from ttscale.tasks.jsonl import JsonlTask
from ttscale.tiny import save_tiny_reward_model

PROBLEM = Problem(id="p", prompt="What is 12 plus 30?", answer="42")
TASK = JsonlTask("unused.jsonl")


@pytest.fixture(scope="module")
def backend(model_dirs):
    return HFBackend(str(model_dirs["olmoe"]))


@pytest.mark.parametrize("text, generator, search", [
    ("greedy", "plain", "greedy"), ("sc", "plain", "sc"), ("bon", "plain", "bon"), ("beam", "plain", "beam"),
    ("reroute", "reroute", "greedy"), ("reroute+sc", "reroute", "sc"), ("reroute+bon", "reroute", "bon"),
    ("reroute+beam", "reroute", "beam"), ("sc+reroute", "reroute", "sc"), ("reroute+greedy", "reroute", "greedy"),
    ("paper-sc", "reroute", "sc"),
])
def test_every_valid_spec_parses(text, generator, search):
    spec, _ = parse_spec(text)
    assert (spec.generator, spec.search) == (generator, search)
    Strategy.from_spec(text, n=1 if search == "greedy" else 4)


@pytest.mark.parametrize("text, message", [
    ("reroute+scc", "did you mean sc"), ("rerout", "did you mean reroute"), ("sc+bon", "at most one"),
    ("reroute+reroute+sc", "at most one"), ("beem", "did you mean beam"),
])
def test_invalid_specs_fail_with_suggestions(text, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(text)


def test_presets_then_named_presets_then_overrides(tmp_path):
    settings = resolve_settings(parse_spec("reroute+sc")[0])
    assert (settings["reroute"].lr, settings["reroute"].steps, settings["reroute"].interval) == (0.05, 5, 128)
    (tmp_path / "sc.toml").write_text("[sc]\ntemperature = 0.5\nvote = 'weighted'\n")
    (tmp_path / "mine.toml").write_text("spec = 'reroute+sc'\n[sc]\ntemperature = 0.9\n[reroute]\nsteps = 2\n")
    spec, named = parse_spec("mine", tmp_path)
    settings = resolve_settings(spec, ["reroute.lr=0.1"], named, tmp_path)
    assert (settings["sc"].temperature, settings["sc"].vote) == (0.9, "weighted")
    assert (settings["reroute"].steps, settings["reroute"].lr) == (2, 0.1)
    with pytest.raises(ValueError, match="expects a float"):
        resolve_settings(spec, ["sc.temperature=hot"], named, tmp_path)
    (tmp_path / "bad.toml").write_text("spec = 'sc'\n[sc]\ntemprature = 0.9\n")
    spec, named = parse_spec("bad", tmp_path)
    with pytest.raises(ValueError, match="did you mean sc.temperature"):
        resolve_settings(spec, (), named, tmp_path)


def test_majority_vote_groups_equivalent_answers_and_breaks_ties_by_seed():
    keys = [TASK.answer_key(a) for a in ["1,000", "7", "1000.", "7", "1000", None]]
    assert keys[vote(keys)] == "1000"
    tied = ["a", "b", "c", "b", "a", "c"]
    picks = {seed: vote(tied, seed=seed) for seed in range(20)}
    assert all(vote(tied, seed=seed) == pick for seed, pick in picks.items())
    assert len({tied[i] for i in picks.values()}) > 1          # the seed, not the order, decides
    assert vote([None, None]) is None
    assert tied[vote(tied, weights=[1, 1, 1, 1, 1, 3])] == "c"
    assert best([0.1, 0.7, 0.7]) == 1


def test_sc_draws_n_seeded_samples_and_counts_their_tokens(backend):
    strategy = Strategy.from_spec("sc", n=8, overrides=["sample.max_new_tokens=10"])
    outcome = strategy.solve(PROBLEM, TASK, backend, seed=3)
    assert len(outcome.samples) == 8 and len({b.seed for b in outcome.samples}) == 8
    assert len({tuple(b.tokens) for b in outcome.samples}) > 1
    assert sum(b.compute.generated_tokens for b in outcome.spent) == sum(len(b.generated) for b in outcome.samples)
    assert sum(b.compute.prompt_tokens for b in outcome.spent) == 8 * outcome.samples[0].prompt_len
    assert outcome.chosen is not None and outcome.prediction == outcome.answers[outcome.chosen]


def test_reroute_sc_shares_prefill_deltas_then_diverges(backend):
    strategy = Strategy.from_spec("reroute+sc", n=4, overrides=["sample.max_new_tokens=12", "reroute.interval=5"])
    outcome = strategy.solve(PROBLEM, TASK, backend)
    prefill = [b.cycles[0] for b in outcome.samples]
    assert all(c.at_token == 0 and c.losses == prefill[0].losses for c in prefill)
    assert len({tuple(b.delta.delta.flatten().tolist()) for b in outcome.samples}) == 4
    prompt_len, steps = outcome.samples[0].prompt_len, strategy.generator.cfg.steps
    shared = prompt_len * steps                               # the prefill phase, charged once
    later = sum((prompt_len + c.at_token) * steps for b in outcome.samples for c in b.cycles[1:])
    assert sum(b.compute.adapt_forward_tokens for b in outcome.spent) == shared + later


def test_beam_keeps_w_beams_that_inherit_their_parents_deltas(backend):
    sets = ["sample.max_new_tokens=12", "beam.step_tokens=4", "beam.max_steps=3", "reroute.interval=1000000"]
    outcome = Strategy.from_spec("reroute+beam", n=3, overrides=sets).solve(PROBLEM, TASK, backend)
    assert len(outcome.samples) == 3 and all(b.finished for b in outcome.samples)
    root = next(b for b in outcome.spent if b.parent is None)
    assert all(len(b.cycles) == 1 and torch.equal(b.delta.delta, outcome.spent[1].delta.delta) for b in outcome.samples)
    assert root.delta is None                 # the root was forked before adapting; its children share one phase
    by_id = {b.id: b for b in outcome.spent}
    for b in outcome.samples:                 # lineage: each step's child descends from a kept beam
        assert b.tokens[:len(by_id[b.parent].tokens)] == by_id[b.parent].tokens
    assert outcome.scores[outcome.chosen] == max(outcome.scores)
    assert outcome.scores == sorted(outcome.scores, reverse=True)
    assert outcome.scores[0] == pytest.approx(sum(outcome.samples[0].logprobs))

    adapting = Strategy.from_spec("reroute+beam", n=2, overrides=sets[:3] + ["reroute.interval=4"])
    readapted = adapting.solve(PROBLEM, TASK, backend)
    assert all(len(b.cycles) >= 2 for b in readapted.samples)


def test_bon_with_a_reward_model_picks_its_argmax(backend, tmp_path):
    rm = RewardModel(str(save_tiny_reward_model(tmp_path / "rm")))
    search = BestOfN(BestOfN.Params(), 6, Sampling(max_new_tokens=8), scorer=rm)
    outcome = Strategy(RerouteGenerator(RerouteConfig(steps=1)), search).solve(PROBLEM, TASK, backend)
    independent = rm.score(outcome.samples, PROBLEM, TASK)
    assert outcome.scores == pytest.approx(independent, abs=1e-5)
    assert outcome.chosen == max(range(6), key=independent.__getitem__)
    assert len(set(independent)) > 1
    assert all(b.compute.reward_tokens > 0 for b in outcome.samples)


def test_every_registered_search_solves(backend):
    for name in SEARCHES:
        outcome = Strategy.from_spec(name, n=1 if name == "greedy" else 2,
                                     overrides=["sample.max_new_tokens=6"]).solve(PROBLEM, TASK, backend)
        assert outcome.samples and outcome.chosen is not None
