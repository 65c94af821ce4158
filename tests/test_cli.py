"""`ttscale run` end to end, as a user runs it: records, summary, errors."""

import json
import os
import subprocess
import sys

import pytest
from records_match import differences

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
    assert "Warning" not in done.stderr and "deprecated" not in done.stderr, done.stderr   # nothing to break the bar
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


def test_rerun_resumes_a_changed_config_is_refused_and_overwrite_replaces(model_dirs, task_file, tmp_path, cli):
    out = tmp_path / "greedy"
    args = ("run", "--model", model_dirs["olmoe"], "--task", task_file, "--out", out, "--set", "sample.max_new_tokens=8")
    assert cli(*args, "--limit", "2")[0] == 0
    records = (out / "records.jsonl").read_text()
    assert all(json.loads(line)["samples"][0]["routing"]["layers"] == [] for line in records.splitlines())
    assert cli(*args)[0] == 0                                  # same config, larger limit: resumes
    resumed = (out / "records.jsonl").read_text()
    assert resumed.startswith(records) and len(resumed.splitlines()) == 3
    code, _, err = cli(*args, "--set", "sample.top_k=5")
    assert code == 2 and "sample" in err and "--overwrite" in err
    assert (out / "records.jsonl").read_text() == resumed
    assert cli(*args, "--set", "sample.top_k=5", "--overwrite", "--limit", "1")[0] == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 1


def test_a_killed_run_resumes_to_the_same_records(model_dirs, tmp_path, cli):
    import signal
    import time

    tasks = tmp_path / "many.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i}?", "answer": str(2 * i)})
                             + "\n" for i in range(12)))
    args = ["run", "--model", str(model_dirs["olmoe"]), "--task", str(tasks), "--strategy", "reroute",
            "--set", "sample.max_new_tokens=48", "--set", "reroute.interval=16"]
    whole = tmp_path / "whole"
    assert cli(*args, "--out", whole)[0] == 0
    killed = tmp_path / "killed"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # two problems in flight, so records come one by one (the whole run had all twelve at once)
    proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", *args, "--concurrency", "2", "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = killed / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = records.read_text().count("\n")
    assert 2 <= partial < 12, "the kill landed mid-run"
    assert not (killed / "summary.json").exists()
    assert cli(*args, "--out", killed)[0] == 0

    def ordered(path):     # records come in the order problems finish
        return sorted((json.loads(line) for line in (path / "records.jsonl").read_text().splitlines()),
                      key=lambda r: int(r["id"][1:]))

    assert [r["id"] for r in ordered(killed)] == [f"q{i}" for i in range(12)]
    assert differences(ordered(killed), ordered(whole)) == []
    summaries = [json.loads((d / "summary.json").read_text()) for d in (whole, killed)]
    for key in ("accuracy", "ci95", "problems", "config"):
        assert summaries[0][key] == summaries[1][key]


@pytest.mark.parametrize("extra, message", [
    (["--set", "reroute.lrr=0.1"], "did you mean reroute.lr"),
    (["--strategy", "rerote"], "did you mean reroute"),
    (["--set", "reroute.select=sideways"], "invalid reroute setting select"),
    (["--n", "4"], "pass --n 1"),
])
def test_bad_input_gets_one_line_and_nonzero_exit(model_dirs, task_file, tmp_path, cli, extra, message):
    code, _, err = cli("run", "--model", model_dirs["olmoe"], "--task", task_file, "--out", tmp_path / "x", *extra)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_dense_model_is_refused(task_file, tmp_path, cli):
    dense = save_tiny_model("llama", tmp_path / "dense")
    code, _, err = cli("run", "--model", dense, "--task", task_file, "--out", tmp_path / "d")
    assert code == 2 and "no MoE routers" in err


def test_run_reroute_sc_records_every_sample_and_the_pick(model_dirs, task_file, tmp_path, cli):
    out = tmp_path / "sc"
    code, _, err = cli("run", "--model", model_dirs["qwen2_moe"], "--task", task_file, "--strategy", "reroute+sc",
                       "--n", "4", "--limit", "1", "--out", out, "--set", "sample.max_new_tokens=8",
                       "--set", "sc.vote=weighted")
    assert code == 0, err
    record = json.loads((out / "records.jsonl").read_text())
    assert len(record["samples"]) == 4 and len({s["seed"] for s in record["samples"]}) == 4
    assert record["prediction"] == record["samples"][record["chosen"]]["answer"]
    assert all("score" in s and s["compute"]["generated_tokens"] == s["tokens"] for s in record["samples"])
    assert record["compute"]["generated_tokens"] == sum(s["tokens"] for s in record["samples"])


def test_strategies_lists_components_and_presets(cli):
    code, out, _ = cli("strategies")
    assert code == 0
    for name in ("reroute.lr", "sc.vote", "bon.scorer", "beam.expansions", "paper-sc"):
        assert name in out


def test_custom_scorer_recipe_runs(model_dirs, task_file):
    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "custom_scorer.py")
    done = subprocess.run([sys.executable, recipe, str(model_dirs["olmoe"]), str(task_file)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["p1", "p2", "p3"]


def test_every_command_has_help():
    from typer.testing import CliRunner

    from ttscale.cli import app

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"run", "strategies", "curve", "report", "models"} <= set(names)
    for name in names:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output and len(result.output.splitlines()) > 3


def test_more_bad_inputs_get_one_line_errors(model_dirs, task_file, tmp_path, cli):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n')
    cases = [
        (["--model", "allenai/OLMoE-1B-7B-0924", "--task", str(task_file)], "cannot load model"),
        (["--model", str(tmp_path / "missing"), "--task", str(task_file)], "model directory not found"),
        (["--model", str(model_dirs["olmoe"]), "--task", "gsm9k"], "unknown task"),
        (["--model", str(model_dirs["olmoe"]), "--task", str(broken)], "broken.jsonl:2"),
        (["--model", str(model_dirs["olmoe"]), "--task", str(task_file), "--set", "reroute.lr"], "section.key=value"),
    ]
    for args, message in cases:
        code, _, err = cli("run", *args, "--out", tmp_path / "out")
        assert code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_paper_table_and_compare_recipes_run_on_tiny_models(model_dirs, tmp_path):
    recipes = os.path.join(os.path.dirname(__file__), "..", "recipes")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = tmp_path / "paper"
    done = subprocess.run([sys.executable, os.path.join(recipes, "paper_table.py"), "--models",
                           str(model_dirs["olmoe"]), str(model_dirs["deepseek_v2"]), "--tasks", "gsm8k", "mmlu",
                           "--limit", "2", "--sc", "2", "--out", str(out), "--set", "sample.max_new_tokens=6"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    table = (out / "paper_table.md").read_text().splitlines()
    assert len(table) == 2 + 4 and all(row.count("|") == 3 + 6 for row in table[2:])
    assert len(list(out.glob("*/*/*/records.jsonl"))) == 2 * 2 * 4
    compare = tmp_path / "compare"
    done = subprocess.run([sys.executable, os.path.join(recipes, "compare_strategies.py"), "--model",
                           str(model_dirs["olmoe"]), "--task", "arc", "--limit", "2", "--n", "2", "--out", str(compare),
                           "--set", "sample.max_new_tokens=6"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert (compare / "curve.png").exists() and (compare / "report.md").read_text().count("\n") == 2 + 4
