"""`ttscale run` end to end, as a user runs it: records, summary, errors."""

import json
import os
import subprocess
import sys

import pytest

from ttscale.tiny import save_tiny_model

PROBLEMS = [{"id": "p1", "prompt": "What is 12 plus 30?", "answer": "42"},
            {"id": "p2", "prompt": "def add(a, b):"},
            {"id": "p3", "prompt": "The quick brown fox", "answer": "jumps"}]


def ttscale(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def test_run_reroute_writes_the_record_contract(model_dirs, task_file, tmp_path):
    out = tmp_path / "run"
    done = ttscale("run", "--model", str(model_dirs["mixtral"]), "--task", str(task_file), "--strategy", "reroute",
                   "--out", str(out), "--set", "sample.max_new_tokens=12", "--set", "reroute.interval=5",
                   "--set", "reroute.steps=2", "--save-deltas", "--limit", "2")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["p1", "p2"]
    for r in records:
        assert {"id", "prediction", "gold", "correct", "samples", "compute", "seed"} <= set(r)
        sample = r["samples"][0]
        assert {"text", "answer", "tokens", "logprob", "routing"} <= set(sample)
        routing = sample["routing"]
        assert routing["layers"] and set(routing["deltas"]) == {"0", "1"}
        assert all(len(row) == 8 for row in routing["deltas"].values())
        assert set(routing["delta_norms"]) == {str(layer) for layer in routing["layers"]}
        assert len(routing["cycles"]) == 1 + (sample["tokens"] - 1) // 5
        compute = r["compute"]
        assert compute["generated_tokens"] == sample["tokens"]
        assert compute["adapt_token_passes"]["forward"] == compute["adapt_token_passes"]["backward"] > 0
        assert compute["flops"] > 0 and compute["seconds"]["adapt"] > 0
    assert records[0]["correct"] is False and records[1]["correct"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 2 and summary["graded"] == 1 and summary["accuracy"] == 0.0
    assert summary["config"]["settings"]["reroute"]["interval"] == 5


def test_greedy_run_records_no_rerouting_and_a_rerun_is_refused(model_dirs, task_file, tmp_path):
    """greedy records carry no routing change; a rerun into the same --out is refused, not clobbered."""
    out = tmp_path / "greedy"
    args = ("run", "--model", str(model_dirs["olmoe"]), "--task", str(task_file), "--out", str(out),
            "--set", "sample.max_new_tokens=8")
    assert ttscale(*args).returncode == 0
    records = (out / "records.jsonl").read_text()
    assert all(json.loads(line)["samples"][0]["routing"]["layers"] == [] for line in records.splitlines())
    again = ttscale(*args)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    assert (out / "records.jsonl").read_text() == records


@pytest.mark.parametrize("extra, message", [
    (["--set", "reroute.lrr=0.1"], "did you mean reroute.lr"),
    (["--strategy", "rerote"], "did you mean reroute"),
    (["--set", "reroute.select=sideways"], "invalid reroute setting select"),
    (["--n", "4"], "pass --n 1"),
])
def test_bad_input_gets_one_line_and_nonzero_exit(model_dirs, task_file, tmp_path, extra, message):
    done = ttscale("run", "--model", str(model_dirs["olmoe"]), "--task", str(task_file), "--out",
                   str(tmp_path / "x"), *extra)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_dense_model_and_missing_arguments_are_refused(task_file, tmp_path):
    dense = save_tiny_model("llama", tmp_path / "dense")
    done = ttscale("run", "--model", str(dense), "--task", str(task_file), "--out", str(tmp_path / "d"))
    assert done.returncode == 2 and "no MoE routers" in done.stderr
    assert ttscale("run").returncode == 2


def test_run_reroute_sc_records_every_sample_and_the_pick(model_dirs, task_file, tmp_path):
    out = tmp_path / "sc"
    done = ttscale("run", "--model", str(model_dirs["qwen2_moe"]), "--task", str(task_file), "--strategy",
                   "reroute+sc", "--n", "4", "--limit", "1", "--out", str(out), "--set", "sample.max_new_tokens=8",
                   "--set", "sc.vote=weighted")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "records.jsonl").read_text())
    assert len(record["samples"]) == 4 and len({s["seed"] for s in record["samples"]}) == 4
    assert record["prediction"] == record["samples"][record["chosen"]]["answer"]
    assert all("score" in s and s["compute"]["generated_tokens"] == s["tokens"] for s in record["samples"])
    assert record["compute"]["generated_tokens"] == sum(s["tokens"] for s in record["samples"])


def test_strategies_lists_components_and_presets():
    done = ttscale("strategies")
    assert done.returncode == 0
    for name in ("reroute.lr", "sc.vote", "bon.scorer", "beam.expansions", "paper-sc"):
        assert name in done.stdout


def test_custom_scorer_recipe_runs(model_dirs, task_file):
    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "custom_scorer.py")
    done = subprocess.run([sys.executable, recipe, str(model_dirs["olmoe"]), str(task_file)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["p1", "p2", "p3"]
