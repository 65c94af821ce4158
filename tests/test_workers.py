"""`ttscale run --workers N` on a real local Ray (2 CPU workers): the same records whatever N, a worker
killed with SIGKILL loses no problem, a problem that raises fails only itself, bad input writes nothing,
Ctrl-C and a killed driver resume.

One Ray instance serves the module: the tests here use it in-process, the CLI runs join it with `--ray`
(one of them starts its own, as a run without `--ray` does)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest
from records_match import differences

if os.environ.get("CI"):
    import ray                      # CI installs ttscale[ray]: a missing Ray must fail, not skip
else:
    ray = pytest.importorskip("ray")

from ttscale.backends.hf import HFBackend  # noqa: E402
from ttscale.demo import DEMO_MODEL  # noqa: E402
from ttscale.runs import RunConfig, execute  # noqa: E402
from ttscale.workers import Workers  # noqa: E402

SHORT = ["sample.max_new_tokens=64"]


@pytest.fixture(scope="module")
def cluster():
    """The address of a local Ray instance with 2 CPUs (this process is its first driver)."""
    auth = os.environ.get("RAY_AUTH_MODE")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address      # CLI runs join it with the token mode ray.init set
    ray.shutdown()
    if auth is None:                                  # as it was for the modules after this one
        os.environ.pop("RAY_AUTH_MODE", None)


@pytest.fixture(scope="module")
def pool(cluster):
    with Workers(2) as workers:
        workers.start("hf", "demo")
        yield workers


@pytest.fixture
def free_cluster(cluster, pool):
    """The cluster with its CPUs free again (the pool's actors hold both): for CLI runs that join it."""
    pool.stop()
    return cluster


@pytest.fixture(scope="module")
def backend():
    return HFBackend(str(DEMO_MODEL))


def records(out):
    lines = (out / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def by_id(out):
    found = records(out)
    assert len({r["id"] for r in found}) == len(found), "a problem was recorded twice"
    return {r["id"]: r for r in found}


def run_cli(*args):
    """`ttscale run ARGS` in a process of its own (its Ray connection is its own)."""
    return subprocess.run([sys.executable, "-m", "ttscale", "run", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("strategy,n", [("greedy", 1), ("sc", 4), ("reroute+sc", 4)])
def test_two_workers_give_the_records_of_one_device(pool, backend, tmp_path, strategy, n):
    one = RunConfig(model="demo", task="demo", strategy=strategy, n=n, limit=6, seed=3, overrides=SHORT)
    two = RunConfig(model="demo", task="demo", strategy=strategy, n=n, limit=6, seed=3, overrides=SHORT, workers=2)
    execute(one, tmp_path / "one", backend=backend)
    solved = [s.solved for s in pool.slots]
    summary = execute(two, tmp_path / "two", workers=pool)
    assert all(s.solved > before for s, before in zip(pool.slots, solved)), "both workers should solve problems"
    a, b = by_id(tmp_path / "one"), by_id(tmp_path / "two")
    assert sorted(a) == sorted(b) and len(a) == 6
    assert differences(a, b) == []
    assert summary["ids"] == json.loads((tmp_path / "one" / "summary.json").read_text())["ids"]
    assert len({r["samples"][0]["text"] for r in a.values()}) > 1, "problems should differ"


def test_a_problem_that_raises_fails_only_itself(pool, backend, tmp_path, caplog):
    task = tmp_path / "task.jsonl"
    rows = [{"id": "short", "prompt": "2 + 3 =", "answer": "5"},
            {"id": "long", "prompt": "word " * 600, "answer": "1"},      # past the demo model's 2048-token context
            {"id": "other", "prompt": "7 + 1 =", "answer": "8"}]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, kwargs in [("one", {"backend": backend}), ("two", {"workers": pool})]:
        cfg = RunConfig(model="demo", task=str(task), strategy="sc", n=2, overrides=SHORT)
        with caplog.at_level(logging.WARNING, logger="ttscale"):
            summary = execute(cfg, tmp_path / name, **kwargs)
        found = by_id(tmp_path / name)
        error = found["long"]["error"]
        assert error.startswith("PromptTooLong: ") and "prompt of 3000 tokens is longer than the model's context" in error
        assert found["long"]["correct"] is None and found["long"]["samples"] == []
        assert all("error" not in found[i] and found[i]["samples"] for i in ("short", "other"))
        assert summary["problems"] == 3 and summary["errors"] == 1 and summary["graded"] == 2
        assert [m for m in caplog.messages if "failed" in m] == [f"problem long failed: {found['long']['error']}"]
        caplog.clear()
    assert differences(by_id(tmp_path / "one"), by_id(tmp_path / "two")) == []


def test_a_killed_worker_loses_no_problem(pool, backend, tmp_path, caplog):
    cfg = RunConfig(model="demo", task="demo", strategy="sc", n=2, limit=16, concurrency=2, overrides=SHORT, workers=2)
    execute(replace(cfg, workers=1), tmp_path / "one", backend=backend)
    victim = pool.slots[0].info["pid"]

    @contextmanager
    def kill_at_first_record(total, already_done):
        def advance(record, in_flight):
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(record["id"])
        yield advance

    killed = []
    with caplog.at_level(logging.WARNING, logger="ttscale"):
        summary = execute(cfg, tmp_path / "two", progress=kill_at_first_record, workers=pool)
    deaths = [m for m in caplog.messages if f"worker 0 (pid {victim}" in m and "died" in m]
    assert len(deaths) == 1 and "problems go back to the queue" in deaths[0]
    assert int(deaths[0].split("its ")[1].split()[0]) >= 1, "the killed worker held unfinished problems"
    assert summary["problems"] == 16 and summary["errors"] == 0
    assert differences(by_id(tmp_path / "one"), by_id(tmp_path / "two")) == []     # each problem once, the same
    # Ray restarted the worker: once it is back, a later run is served by both again, the killed one in a new process
    assert back(pool.slots[0].actor)["pid"] != victim
    solved = pool.slots[0].solved
    execute(replace(cfg, limit=8), tmp_path / "later", workers=pool)
    assert pool.slots[0].info["pid"] != victim and pool.slots[0].solved > solved


def back(actor, seconds=120):
    """The worker's `ready` answer once Ray has restarted it (calls fail while it restarts)."""
    deadline = time.time() + seconds
    while True:
        try:
            return ray.get(actor.ready.remote())
        except ray.exceptions.ActorUnavailableError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_bad_worker_counts_are_one_line_exit_2_and_write_nothing(tmp_path, cli, value):
    out = tmp_path / "run"
    code, _, err = cli("run", "--workers", value, "--limit", "1", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--workers must be a positive integer, got {value!r}" in err
    assert not out.exists()


def test_too_many_workers_or_no_cluster_is_one_line_exit_2_and_writes_nothing(free_cluster, tmp_path):
    cluster = free_cluster
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"           # nothing listens there once the socket is closed
    out = tmp_path / "run"
    for args, message in [(["--workers", "3", "--ray", cluster], f"needs 3 CPUs (one per worker); the Ray cluster at "
                           f"{cluster} has 2"),
                          (["--workers", "2", "--device", "cuda", "--ray", cluster], "on cuda needs 2 GPUs"),
                          (["--workers", "2", "--ray", closed], f"--ray {closed}: nothing answers at"),
                          (["--ray", "no-port"], "expected HOST:PORT")]:
        done = run_cli(*args, "--limit", "1", "--out", out)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert message in done.stderr
        assert not out.exists()


def test_one_worker_is_todays_path_without_ray(tmp_path):
    script = ("import sys\nfrom ttscale.cli import app\n"
              f"try:\n    app(['run', '--workers', '1', '--limit', '1', '--out', {str(tmp_path / 'run')!r}])\n"
              "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
              "print('ray' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "False", done.stderr
    assert len(records(tmp_path / "run")) == 1


def _started(args, out, count, **kwargs):
    """A CLI run in the background, once it has recorded `count` problems."""
    proc = subprocess.Popen([sys.executable, "-m", "ttscale", "run", *map(str, args), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "records.jsonl").exists() and (out / "records.jsonl").read_text().count("\n") >= count:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not record {count} problems: {proc.communicate()[1][-2000:]}")


def test_ctrl_c_on_workers_writes_a_partial_summary_and_the_same_command_resumes(free_cluster, tmp_path):
    cluster = free_cluster
    out = tmp_path / "run"
    args = ["--workers", "2", "--ray", cluster, "--strategy", "sc", "--n", "2", "--concurrency", "1", "--limit", "30"]
    # as in tests/test_inflight.py: the child gets the default SIGINT disposition, as from a terminal
    proc = _started(args, out, 2, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads((out / "summary.json").read_text())
    done = len(records(out))
    assert summary["partial"] and summary["of"] == 30 and summary["problems"] == done < 30
    assert f"interrupted: {done}/30 problems done" in err
    resumed = run_cli(*args[:-2], "--limit", str(done + 2), "--out", out)
    assert resumed.returncode == 0 and f"resuming {out}: {done}/{done + 2}" in resumed.stderr, resumed.stderr
    assert len(by_id(out)) == done + 2


def test_a_killed_driver_resumes_to_the_same_records(tmp_path, backend):
    """Without --ray: the run starts a local Ray instance of its own, which dies with it."""
    args = ["--workers", "2", "--strategy", "sc", "--n", "2", "--concurrency", "1", "--limit", "10", "--set", SHORT[0]]
    killed = tmp_path / "killed"
    proc = _started(args, killed, 2)
    proc.kill()
    proc.communicate(timeout=60)
    partial = len(records(killed))
    assert 2 <= partial < 10, "the kill landed mid-run"
    assert not (killed / "summary.json").exists()
    resumed = run_cli(*args, "--out", killed)
    assert resumed.returncode == 0 and f"{partial}/10 problems already done" in resumed.stderr, resumed.stderr
    execute(RunConfig(model="demo", task="demo", strategy="sc", n=2, limit=10, overrides=SHORT), tmp_path / "whole",
            backend=backend)
    assert differences(by_id(killed), by_id(tmp_path / "whole")) == []
