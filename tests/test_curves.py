"""Curves and reports from run directories: exact pooled estimators, bootstrap CIs, files written."""

import csv
import itertools
import json
import random

import pytest

from ttscale.aggregate import best
from ttscale.curves import best_at, compute_of, majority_at, run_points, subsets_mean, vote_share, write_curve
from ttscale.report import markdown, report_rows


def test_exact_majority_estimator_matches_brute_force():
    rng = random.Random(0)
    for _ in range(150):
        N = rng.randint(1, 9)
        keys = [rng.choice(["a", "b", "c", None]) for _ in range(N)]
        correct = {"a": True, "b": False, "c": rng.random() < 0.3}
        for n in range(1, N + 1):
            subsets = list(itertools.combinations(range(N), n))
            brute = sum(vote_share([keys[i] for i in s], correct) for s in subsets) / len(subsets)
            assert majority_at(keys, correct, n) == pytest.approx(brute, abs=1e-12)


def test_exact_best_of_n_estimator_matches_brute_force():
    rng = random.Random(1)
    for _ in range(100):
        N = rng.randint(1, 8)
        scores = [rng.choice([0.1, 0.3, 0.5, 0.9]) for _ in range(N)]
        right = [rng.random() < 0.5 for _ in range(N)]
        for n in range(1, N + 1):
            brute = subsets_mean(N, n, lambda s: right[s[best([scores[i] for i in s])]])
            assert best_at(scores, right, n) == pytest.approx(brute, abs=1e-12)


def write_run(directory, strategy, n, pools):
    """A finished run directory whose problems have the given (key, correct) sample pools."""
    directory.mkdir()
    records = []
    for i, pool in enumerate(pools):
        samples = [{"key": k, "answer": k, "correct": c, "score": -j, "tokens": 10} for j, (k, c) in enumerate(pool)]
        records.append({"id": f"p{i}", "correct": samples[0]["correct"], "samples": samples,
                        "compute": {"prompt_tokens": 5, "prefill_tokens": 5, "generated_tokens": 10 * len(pool),
                                    "adapt_token_passes": {"forward": 0, "backward": 0}, "flops": 1e6 * len(pool),
                                    "seconds": {"total": 0.1 * len(pool)}}})
    (directory / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"strategy": strategy, "n": n, "model": "m", "task": "t.jsonl", "settings": {"sc": {"vote": "majority"}}}
    summary = {"config": config, "accuracy": 0.5, "ci95": [0.1, 0.9], "problems": len(records),
               "mean_compute": records[0]["compute"]}
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def test_curve_reproduces_hand_computed_majority_accuracies(tmp_path):
    pool_1 = [("a", True), ("a", True), ("b", False), (None, False)]
    pool_2 = [("x", False), ("y", True), ("x", False), ("y", True)]
    run = write_run(tmp_path / "sc", "sc", 4, [pool_1, pool_2])
    points = run_points(run, "tokens")
    # pool_1: n=1 -> 2/4; n=2 -> (1 + .5 + .5 + 1 + 1 + 0)/6; n=4 -> 1.   pool_2: 1/2 at every n (ties split)
    expected = {1: (0.5 + 0.5) / 2, 2: (4 / 6 + 0.5) / 2, 4: (1.0 + 0.5) / 2}
    assert {p.n: p.accuracy for p in points} == pytest.approx(expected)
    assert [p.x for p in points] == pytest.approx([11.25, 22.5, 45.0])  # 45 token-passes per problem, scaled by n/N
    assert all(p.low <= p.accuracy <= p.high for p in points)


def test_curve_and_report_write_their_files(tmp_path):
    pooled = write_run(tmp_path / "sc", "reroute+sc", 2, [[("a", True), ("b", False)]] * 3)
    single = write_run(tmp_path / "greedy", "greedy", 1, [[("a", True)], [("b", False)]])
    points = write_curve([pooled, single], tmp_path / "plots" / "curve.png", x="flops")
    for suffix in (".png", ".svg", ".csv"):
        assert (tmp_path / "plots" / f"curve{suffix}").stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "plots" / "curve.csv").open()))
    assert [(r["strategy"], r["n"]) for r in rows] == [("reroute+sc@2", "1"), ("reroute+sc@2", "2"), ("greedy", "1")]
    assert float(rows[2]["accuracy"]) == 0.5 == points[2].accuracy
    table = markdown(report_rows([pooled, single]))
    assert "| sc | reroute+sc | 2 |" in table and "| greedy | greedy | 1 |" in table
    with pytest.raises(ValueError, match="no summary.json"):
        report_rows([tmp_path])
    write_curve([pooled, single], tmp_path / "named.png", labels=["rerouted, tuned", "baseline"])
    rows = list(csv.DictReader((tmp_path / "named.csv").open()))
    assert [r["strategy"] for r in rows] == ["rerouted, tuned"] * 2 + ["baseline"]


def test_pooled_reroute_curve_at_n1_costs_what_a_reroute_run_costs(tmp_path):
    """The shared prefill adaptation counts once at every n, not spread over the pool's N branches."""
    from ttscale.backends import load_backend
    from ttscale.runs import RunConfig, execute

    backend = load_backend("hf", "demo")
    for strategy, n in (("reroute", 1), ("reroute+sc", 4)):
        execute(RunConfig(model="demo", task="demo", strategy=strategy, n=n, limit=3), tmp_path / strategy,
                backend=backend)
    records = [json.loads(line) for line in (tmp_path / "reroute+sc" / "records.jsonl").read_text().splitlines()]
    for x in ("flops", "tokens"):
        (single,) = run_points(tmp_path / "reroute", x)
        pooled = run_points(tmp_path / "reroute+sc", x)
        assert [p.n for p in pooled] == [1, 2, 4]
        assert pooled[0].x == pytest.approx(single.x, rel=0.05)
        assert pooled[-1].x == pytest.approx(sum(compute_of(r["compute"], x) for r in records) / 3)
        assert pooled[0].x < pooled[1].x < pooled[2].x < 2 * pooled[0].x     # the adaptation dominates


def test_runs_on_different_tasks_are_named_and_said(tmp_path, caplog):
    first = write_run(tmp_path / "a", "greedy", 1, [[("a", True)], [("b", False)]])
    second = write_run(tmp_path / "b", "greedy", 1, [[("a", True)]] * 3)
    summary = json.loads((second / "summary.json").read_text())
    summary["config"]["task"] = "demo-shift"
    (second / "summary.json").write_text(json.dumps(summary))
    points = write_curve([first, second], tmp_path / "c.png")
    assert [p.label for p in points] == ["greedy on t.jsonl", "greedy on demo-shift"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "different tasks (t.jsonl, demo-shift)" in warning
    caplog.clear()
    same = write_run(tmp_path / "c", "greedy", 1, [[("b", False)]])
    assert [p.label for p in write_curve([first, same], tmp_path / "d.png")] == ["greedy (a)", "greedy (c)"]
    assert not caplog.records


def test_a_single_answer_point_has_the_report_s_interval(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("run", "--limit", 5, "--set", "sample.max_new_tokens=24", "--out", out)[0] == 0
    (point,) = run_points(out)
    (row,) = report_rows([out])
    assert f"{point.low:.3f}-{point.high:.3f}" == row["95% CI"]
