"""Many problems in flight: shared batches across problems, the same records whatever the concurrency."""

import json

import pytest
from records_match import differences

from ttscale.backends.hf import HFBackend
from ttscale.demo import DEMO_MODEL
from ttscale.runs import RunConfig, execute, record
from ttscale.strategy import Strategy
from ttscale.tasks import load_task
from ttscale.tasks.base import Problem
from ttscale.tasks.jsonl import JsonlTask

# prompts of different lengths, so rows of one batch are padded differently than when alone
PROBLEMS = [Problem(id=f"q{i}", prompt=prompt, answer=str(i)) for i, prompt in enumerate([
    "What is 2 plus 2?",
    "A train leaves at noon and travels for three hours at sixty miles per hour. How far does it go?",
    "Sum 1 to 10.",
    "Name a prime number between twenty and thirty, then explain in a sentence or two why it is prime.",
])]
TASK = JsonlTask("unused.jsonl")
SMALL = ["sample.max_new_tokens=8", "reroute.interval=5", "reroute.steps=1", "reroute.lr=0.5",
         "beam.expansions=2", "beam.max_steps=3", "beam.step_tokens=4"]
SPECS = [("greedy", 1), ("sc", 3), ("bon", 3), ("beam", 2), ("reroute", 1), ("reroute+sc", 3)]


def outcome_view(outcome):
    return outcome.prediction, outcome.chosen, [(b.text, b.tokens, a) for b, a in zip(outcome.samples, outcome.answers)]


@pytest.mark.parametrize("family", ["olmoe", "qwen3_moe", "mixtral"])
def test_same_seed_same_outcomes_whatever_the_concurrency(model_dirs, family):
    backend = HFBackend(str(model_dirs[family]), batch_size=8)
    for spec, n in SPECS:
        strategy = Strategy.from_spec(spec, n, SMALL)
        views = {k: [outcome_view(o) for o in strategy.solve_all(PROBLEMS, TASK, backend, seed=7, concurrency=k)]
                 for k in (1, 3, None)}         # None: all four at once
        assert views[1] == views[3] == views[None], spec
        assert len({v[2][0][0] for v in views[1]}) > 1, "problems should differ"


# rerouting at the testbed's setting (20 Adam steps at lr 0.2 on near-tied routers) turns any float32 difference
# into a different answer: with contexts batched (padded) for adaptation, demo-shift/test/34 changed its answer
# between one problem in flight and four; every whole-context forward now runs one context at a time
TESTBED = ["reroute.lr=0.2", "reroute.steps=20", "reroute.select=all", "reroute.interval=32"]


@pytest.mark.parametrize("spec, n, first, last", [("reroute", 1, 32, 36), ("reroute+sc", 2, 32, 34)])
def test_records_at_the_testbed_setting_do_not_depend_on_the_concurrency(spec, n, first, last):
    backend = HFBackend(str(DEMO_MODEL), device="cpu")
    task = load_task("demo-shift")
    problems = task.load(last)[first:last]
    strategy = Strategy.from_spec(spec, n, TESTBED)
    views = {k: [outcome_view(o) for o in strategy.solve_all(problems, task, backend, concurrency=k)]
             for k in (1, 3, None)}
    assert views[1] == views[3] == views[None]


def test_a_finished_problem_is_replaced_at_once_in_the_running_batch(model_dirs):
    backend = HFBackend(str(model_dirs["olmoe"]), batch_size=4)
    calls, joined, widths = [], [], []
    extend, load = backend.extend_requests, backend.table.load

    def counting(requests, keep_cache=False, refill=None):
        def counted(done):
            new = refill(done)
            joined.append(len(new))
            return new
        calls.append(len(requests))
        return extend(requests, keep_cache, counted)

    backend.extend_requests = counting
    backend.table.load = lambda rows: widths.append(len(rows)) or load(rows)
    strategy = Strategy.from_spec("greedy", 1, ["sample.max_new_tokens=4"])
    outcomes = strategy.solve_all(PROBLEMS, TASK, backend, concurrency=2)
    assert calls == [2] and sum(joined) == 2    # problems 3 and 4 joined the batch of 1 and 2 as they finished
    assert [len(b.generated) for o in outcomes for b in o.samples] == [4] * 4
    widths.clear()
    Strategy.from_spec("sc", 3, ["sample.max_new_tokens=4"]).solve_all(PROBLEMS, TASK, backend, concurrency=4)
    assert max(widths) == 4                     # 12 rows in flight, never more than --batch-size in a forward


def test_adaptation_rows_of_many_problems_adapt_together(model_dirs):
    backend = HFBackend(str(model_dirs["olmoe"]))
    rows = []
    adapt = backend.adapt

    def counting(branches, cfg):
        rows.append(len(branches))
        return adapt(branches, cfg)

    backend.adapt = counting
    strategy = Strategy.from_spec("reroute+sc", 4, SMALL)
    strategy.solve_all(PROBLEMS, TASK, backend)
    assert rows[0] == len(PROBLEMS)            # the prefill phase: one shared row per problem, all in one call
    assert max(rows) > len(PROBLEMS)           # later phases: per-branch rows of every problem together


def test_the_python_api_and_the_cli_give_the_same_record(tmp_path):
    cfg = RunConfig(model=str(DEMO_MODEL), task="demo", strategy="reroute+sc", n=4, limit=3, seed=5,
                    overrides=["sample.max_new_tokens=64"])
    backend = HFBackend(str(DEMO_MODEL))
    execute(cfg, tmp_path / "run", backend=backend)
    by_cli = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "records.jsonl").read_text().splitlines())}
    task = load_task("demo", cfg.plan.settings["task"])
    problems = task.load(3)
    outcomes = cfg.plan.solve_all(problems, task, backend, seed=5)
    assert {s.finish_reason for o in outcomes for s in o.samples} == {"stop"}    # the task's stop strings apply
    for problem, outcome in zip(problems, outcomes):
        assert differences(record(problem, outcome, task, backend, cfg), by_cli[problem.id]) == []


def test_kv_keep_runs_one_problem_at_a_time():
    plan = Strategy.from_spec("reroute", 1, ["reroute.kv=keep"])
    assert plan.concurrency(32) == 1
    with pytest.raises(ValueError, match="kv=keep"):
        plan.concurrency(32, 4)
    assert Strategy.from_spec("sc", 8).concurrency(32) == 4
    assert Strategy.from_spec("beam", 2, ["beam.expansions=4"]).concurrency(32, 3) == 3


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_bad_concurrency_is_one_line_exit_2_and_writes_nothing(tmp_path, cli, value):
    out = tmp_path / "run"
    code, _, err = cli("run", "--concurrency", value, "--limit", "1", "--out", out)
    assert code == 2
    assert "--concurrency" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_ctrl_c_writes_a_partial_summary_and_the_same_command_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "ttscale", "run", "--strategy", "sc", "--n", "2", "--concurrency", "1",
            "--limit", "30", "--out", str(out)]
    # a runner started in the background by a non-interactive shell (`cmd &`) passes SIGINT on as ignored,
    # and Python then never raises KeyboardInterrupt: give the child the default disposition, as a terminal would
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    records, deadline = out / "records.jsonl", time.time() + 300
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    summary = json.loads((out / "summary.json").read_text())
    done = records.read_text().count("\n")
    assert summary["partial"] and summary["of"] == 30 and summary["problems"] == done < 30
    assert f"interrupted: {done}/30 problems done" in err and "re-run the same command to resume" in err
    resumed = subprocess.run([*args[:-4], "--limit", "3", "--out", str(out)], capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr and f"{min(done, 3)}/3" in resumed.stderr


def test_jobs_that_arrive_while_others_run_join_the_running_batch(model_dirs):
    """A server's jobs iterator returns None while its queue is empty; a job queued later is admitted
    at the next refill of the running batch and its rows join it."""
    from ttscale.backends.base import ExtendRequest
    from ttscale.backends.sampling import Sampling
    from ttscale.inflight import Extend, InFlight

    backend = HFBackend(str(model_dirs["olmoe"]), batch_size=4)
    calls = []
    extend = backend.extend_requests
    backend.extend_requests = lambda requests, keep_cache=False, refill=None: (
        calls.append(len(requests)), extend(requests, keep_cache, refill))[1]
    branches = {}

    async def grow(name, budgets):
        rows = branches[name] = [backend.new_branch([{"role": "user", "content": f"Hello {name}"}], seed=i)
                                 for i in range(len(budgets))]
        await Extend([ExtendRequest(b, Sampling(max_new_tokens=16), budget) for b, budget in zip(rows, budgets)])
        return [len(b.generated) for b in rows]

    class Queue:                   # job b is queued once a's first row is done
        def __init__(self):
            self.jobs = [("a", grow("a", [2, 12]))]

        def __iter__(self):
            return self

        def __next__(self):
            if "a" in branches and len(branches["a"][0].generated) == 2 and not hasattr(self, "late"):
                self.late = True
                self.jobs.append(("b", grow("b", [3])))
            return self.jobs.pop(0) if self.jobs else None

    results = {}
    InFlight(backend, 4).run(Queue(), results.__setitem__)
    assert results == {"a": [2, 12], "b": [3]}
    assert calls == [2]            # one extend call: b's row joined a's running batch,
    assert list(results) == ["b", "a"]     # at once, not when a was done
