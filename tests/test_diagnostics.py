"""The testbed's diagnostics on the bundled model, and the paired test of two runs."""

import json

import pytest

from ttscale.backends.hf import HFBackend
from ttscale.demo import DEMO_MODEL
from ttscale.diagnostics import STATES, diagnose, group_shares, profile
from ttscale.report import paired
from ttscale.routing.reroute import RerouteConfig
from ttscale.tasks.registry import TaskSettings, load_task

GROUPS = json.loads((DEMO_MODEL / "training.json").read_text())["experts_per_domain"]


@pytest.fixture(scope="module")
def backend():
    return HFBackend(str(DEMO_MODEL))


def test_bundled_experts_specialise_by_domain(backend):
    """The router sends each domain's solution tokens to that domain's experts when the cue is truthful,
    and to the partner's experts when the cue names the partner rule: the shift the testbed is built on."""
    for shift in (False, True):
        task = load_task("demo-shift" if shift else "demo", TaskSettings(seed=5))
        problems = task.load(8)
        branches = [backend.new_branch(task.messages(p)) for p in problems]
        for b, p in zip(branches, problems):
            b.prompt_len, b.tokens = len(b.tokens), b.tokens + backend.tokenizer(task.reference(p)).input_ids
        for p, prof in zip(problems, profile(backend, branches, [backend.zero_state()] * len(problems))):
            shares = group_shares(prof.usage, GROUPS)
            assert shares[p.meta["cue"]] > 0.7, (p.meta, shares)     # chance: 0.25


def test_oracle_fits_the_reference_and_reroute_fits_the_prompt(backend):
    task = load_task("demo-shift", TaskSettings(seed=5))
    problems = [p for p in task.load(8) if p.meta["domain"] in ("rev", "dup")]   # additions may agree in both bases
    rows = diagnose(backend, task, problems, RerouteConfig(lr=0.05, steps=5, select="all"))
    assert [r["id"] for r in rows] == [p.id for p in problems]
    for r in rows:
        assert set(STATES) <= r.keys() and r["oracle_correct"] in (True, False)
        assert r["oracle"]["reference_nll"] < r["none"]["reference_nll"]
        assert r["reroute"]["context_nll"] < r["none"]["context_nll"]
        usage = r["none"]["usage"]
        assert len(usage) == 4 and all(abs(sum(layer) - 1) < 1e-5 for layer in usage)


def _run(path, outcomes):
    path.mkdir()
    ids = [f"p{i}" for i in range(len(outcomes))]
    (path / "records.jsonl").write_text("".join(json.dumps({"id": i, "correct": c}) + "\n" for i, c in zip(ids, outcomes)))
    (path / "summary.json").write_text(json.dumps({"ids": ids}))
    return path


def test_paired_counts_discordant_problems_and_gives_the_exact_mcnemar_p(tmp_path, cli):
    base = _run(tmp_path / "a", [False] * 7 + [True, True, False, None])
    other = _run(tmp_path / "b", [True] * 7 + [True, False, False, True])
    r = paired(base, other)
    assert (r["problems"], r["wins"], r["losses"], r["ties"]) == (10, 7, 1, 2)
    assert r["p"] == pytest.approx(18 / 256)           # two-sided binomial: 2 * P(X <= 1), X ~ B(8, 1/2)
    assert paired(base, base)["p"] == 1.0
    code, out, _ = cli("compare", base, other)
    assert code == 0 and "7 wins, 1 losses, 2 ties" in out and "p = 0.0703" in out
    code, _, err = cli("compare", base, tmp_path / "missing")
    assert code == 2 and "no summary.json" in err
