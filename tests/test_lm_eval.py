"""lm-evaluation-harness itself against a `ttscale serve` subprocess on the demo model, with the example
tasks of tests/lm_eval_tasks: a generate_until task through `local-completions` at its defaults (token-id
prompts, the server's tokenizer routes) and through `local-chat-completions`, a strategy chosen by
`--gen_kwargs`, and a multiple_choice (loglikelihood) task. Generations must equal `ttscale run`'s
texts, log-likelihoods the backend's own `score`.

lm-eval is a client, not a dependency: it runs in an environment of its own, named by
TTSCALE_LM_EVAL_PYTHON (`.ci/run` builds `.ci/lm-eval-env` from `.ci/lm-eval.txt`). Without one these
tests are skipped, except in CI (CI=true), where they fail."""

import json
import os
import subprocess
import sys

import pytest
from serve_process import ROOT, env, serving

TASKS = "tests/lm_eval_tasks"
SHIFTED = 16                   # problems of tests/lm_eval_tasks/demo_shift.jsonl
REROUTED = 8                   # of them, solved with the rerouting strategy (it costs more)
# reroute-testbed's settings as flat --gen_kwargs (`ttscale_strategy` and `section.key` body fields)
REROUTE_KWARGS = "ttscale_strategy=reroute,reroute.lr=0.2,reroute.steps=20,reroute.select=all,reroute.interval=32"
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def lm_eval_python():
    python = os.environ.get("TTSCALE_LM_EVAL_PYTHON")
    if not python:
        if os.environ.get("CI"):
            pytest.fail("CI must build the lm-eval environment (.ci/run) and set TTSCALE_LM_EVAL_PYTHON")
        pytest.skip("no lm-eval environment here (set TTSCALE_LM_EVAL_PYTHON; .ci/run builds .ci/lm-eval-env)")
    return python


def _run(tmp_path, strategy, limit, *sets):
    """`ttscale run --task demo-shift` (the task file's problems), started at once."""
    sets = [x for item in sets for x in ("--set", item)]
    return subprocess.Popen([sys.executable, "-m", "ttscale.cli", "run", "--task", "demo-shift", "--limit", str(limit),
                             "--strategy", strategy, *sets, "--out", str(tmp_path)], env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(lm_eval_python, tmp_path_factory):
    """The records of `ttscale run` for the generate task's problems: greedy, and reroute-testbed."""
    started = {"greedy": (_run(out := tmp_path_factory.mktemp("greedy"), "greedy", SHIFTED), out),
               "reroute": (_run(out := tmp_path_factory.mktemp("reroute"), "reroute-testbed", REROUTED), out)}
    done = {}

    def records(name):
        if name not in done:
            proc, out = started[name]
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            by_id = {r["id"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
            done[name] = [by_id[f"demo-shift/test/{i}"] for i in range(len(by_id))]
        return done[name]
    return records


@pytest.fixture(scope="module")
def server(lm_eval_python, runs, tmp_path_factory):
    with serving(tmp_path_factory.mktemp("serve")) as (_, url, _):
        yield url


def lm_eval(python, tmp_path, task, model_args, model="local-completions", *extra):
    """Run lm-eval; its exit code, output, results and samples (in document order)."""
    out = tmp_path / "lm-eval"
    done = subprocess.run([python, "-m", "lm_eval", "run", "--model", model, "--model_args", model_args,
                           "--tasks", task, "--include_path", TASKS, "--output_path", str(out), "--log_samples", *extra],
                          cwd=ROOT, env={**env(), "PYTHONPATH": ""}, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    if done.returncode:
        return done.returncode, output, None, None
    [results] = out.glob("*/results_*.json")
    [samples] = out.glob(f"*/samples_{task}_*.jsonl")
    rows = sorted(map(json.loads, samples.read_text().splitlines()), key=lambda s: s["doc_id"])
    return 0, output, json.loads(results.read_text())["results"][task], rows


def _completions(url, model="demo"):
    return f"base_url={url}/v1/completions,model={model}"


def test_the_task_files_are_the_demo_tasks_problems():
    sys.path.insert(0, str(ROOT / TASKS))
    import make_data

    assert (ROOT / TASKS / "demo_shift.jsonl").read_text() == make_data.jsonl(make_data.generate_rows())
    assert (ROOT / TASKS / "demo_choice.jsonl").read_text() == make_data.jsonl(make_data.choice_rows())


def test_local_completions_at_its_defaults_generates_what_ttscale_run_does(lm_eval_python, server, runs, tmp_path):
    rc, output, results, samples = lm_eval(lm_eval_python, tmp_path, "ttscale_demo_shift", _completions(server))
    assert rc == 0, output[-4000:]
    assert "Using remote tokenizer backend" in output          # token-id prompts, tokenized by the server
    records = runs("greedy")
    assert [s["resps"][0][0] for s in samples] == [r["samples"][0]["text"] for r in records]
    assert results["exact_match,answer"] == pytest.approx(sum(r["correct"] for r in records) / SHIFTED)


def test_local_chat_completions_generates_what_ttscale_run_does(lm_eval_python, server, runs, tmp_path):
    rc, output, results, samples = lm_eval(lm_eval_python, tmp_path, "ttscale_demo_shift",
                                           f"base_url={server}/v1/chat/completions,model=demo",
                                           "local-chat-completions", "--apply_chat_template")
    assert rc == 0, output[-4000:]
    records = runs("greedy")
    assert [s["resps"][0][0] for s in samples] == [r["samples"][0]["text"] for r in records]
    assert results["exact_match,answer"] == pytest.approx(sum(r["correct"] for r in records) / SHIFTED)


def test_gen_kwargs_choose_the_strategy_and_its_settings(lm_eval_python, server, runs, tmp_path):
    rc, output, results, samples = lm_eval(lm_eval_python, tmp_path, "ttscale_demo_shift", _completions(server),
                                           "local-completions", "--gen_kwargs", REROUTE_KWARGS,
                                           "--limit", str(REROUTED))
    assert rc == 0, output[-4000:]
    rerouted, greedy = runs("reroute"), runs("greedy")[:REROUTED]
    texts = [s["resps"][0][0] for s in samples]
    assert texts == [r["samples"][0]["text"] for r in rerouted]
    assert texts != [r["samples"][0]["text"] for r in greedy]          # the knobs took effect
    assert results["exact_match,answer"] == pytest.approx(sum(r["correct"] for r in rerouted) / REROUTED)


def test_multiple_choice_loglikelihoods_are_the_backends_score(lm_eval_python, server, demo_backend, tmp_path):
    from ttscale.branch import Branch

    rc, output, results, samples = lm_eval(lm_eval_python, tmp_path, "ttscale_demo_choice", _completions(server))
    assert rc == 0, output[-4000:]
    backend, hits = demo_backend, 0
    for sample in samples:
        pairs = [(a["arg_0"], a["arg_1"]) for a in sample["arguments"].values()]
        branches = []
        for context, continuation in pairs:        # as lm-eval encodes a (context, continuation) pair
            whole = backend.tokenizer(context + continuation, add_special_tokens=False).input_ids
            prompt = len(backend.tokenizer(context, add_special_tokens=False).input_ids)
            branches.append(Branch(tokens=whole, prompt_len=prompt))
        ours = [sum(s) for s in backend.score(branches)]
        theirs = [float(lp) for (lp, _), in sample["resps"]]
        assert theirs == pytest.approx(ours, abs=SCORE_TOLERANCE)
        hits += max(range(len(ours)), key=ours.__getitem__) == sample["doc"]["gold"]
    assert results["acc,none"] == pytest.approx(hits / len(samples))


def test_scoring_under_reroute_without_a_context_boundary_is_refused(lm_eval_python, server, tmp_path):
    rc, output, _, _ = lm_eval(lm_eval_python, tmp_path, "ttscale_demo_choice", _completions(server, "reroute"),
                               "local-completions", "--limit", "1")
    assert rc != 0
    assert "echo under reroute would fit router deltas on the tokens it scores" in output
