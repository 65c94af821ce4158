"""The sandbox: real programs pass, wrong ones fail, hostile ones are contained and reported."""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ttscale.tasks.code import HumanEval
from ttscale.tasks.sandbox import Limits, Sandbox
from ttscale.tasks.sources import human_eval_rows

LIMITS = Limits(wall_seconds=6, cpu_seconds=3, memory_bytes=1 << 30, file_bytes=8 << 20, processes=16)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(LIMITS)


@pytest.fixture(scope="module", autouse=True)
def machine_unharmed():
    """After all the hostile programs: no work directory, cgroup or process of theirs is left."""
    yield
    assert not list(Path(tempfile.gettempdir()).glob("ttscale-sandbox-*")), "work directories removed"
    for parent in Sandbox(LIMITS).cgroups:
        assert not list(parent.path.glob("ttscale-*")), "per-program cgroups removed"
    time.sleep(0.2)
    assert not [p for p in _processes() if "program.py" in p], "no sandboxed process survives"


def _processes() -> list[str]:
    """The command lines of the machine's processes."""
    cmdlines = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdlines.append(Path(entry.path, "cmdline").read_text())
            except OSError:
                pass
    return cmdlines


def test_all_canonical_human_eval_solutions_pass_and_a_mutant_fails(sandbox):
    rows = human_eval_rows()
    assert len(rows) == 164
    programs = [r["prompt"] + r["canonical_solution"] + "\n\n" + r["test"] + f"\n\ncheck({r['entry_point']})\n"
                for r in rows]
    results = sandbox.run_many(programs)
    assert results == ["passed"] * 164, [(r["task_id"], res) for r, res in zip(rows, results) if res != "passed"]
    task = HumanEval()
    problem = task.problem(0, rows[0])
    mutant = problem.answer.replace("if distance < threshold", "if distance <= threshold - 1")
    assert mutant != problem.answer
    assert task.grade(problem.answer, problem) is True
    assert task.grade(mutant, problem) is False


def test_programs_run_in_parallel():
    sandbox = Sandbox(LIMITS, workers=2)
    start = time.monotonic()
    assert sandbox.run_many(["import time\ntime.sleep(1)"] * 4) == ["passed"] * 4
    assert time.monotonic() - start < 3.5, "4 one-second programs on 2 workers take about 2 s"


def test_infinite_loop_is_stopped(sandbox):
    assert sandbox.run("while True:\n    pass") in ("timed out", "failed: killed by SIGXCPU (CPU limit)")


def test_wall_clock_timeout_kills_a_sleeping_program():
    start = time.monotonic()
    assert Sandbox(Limits(wall_seconds=1)).run("import time\ntime.sleep(60)") == "timed out"
    assert time.monotonic() - start < 5


def test_memory_bomb_fails(sandbox):
    assert sandbox.run("x = bytearray(8 << 30)") == "failed: MemoryError"


def test_forks_are_capped(sandbox):
    """Sleeping children until fork fails: at most `processes` in all (none where the prelude blocks fork)."""
    program = ("import os, time\nn = 0\nwhile n < 200:\n    try:\n        pid = os.fork()\n    except OSError:\n"
               "        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\n"
               "raise SystemExit(f'forked {n}')")
    result = sandbox.run(program)
    forked = int(re.fullmatch(r"failed: forked (\d+)", result).group(1))
    if sandbox.limits_processes:
        assert forked < LIMITS.processes
    assert sandbox.isolation != "bwrap" or forked > 0      # elsewhere the prelude blocks fork


def test_fork_bomb_is_contained_and_killed(sandbox):
    if not sandbox.limits_processes:
        pytest.skip("root without bwrap or a writable cgroup: nothing could cap a fork bomb")
    before = len(_processes())
    bomb = Sandbox(Limits(wall_seconds=3, cpu_seconds=3, processes=16))
    result = bomb.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert result in ("timed out", "failed: killed by SIGXCPU (CPU limit)")
    assert len(_processes()) < before + 8, "every forked process was killed"


def test_forked_processes_share_one_memory_limit(sandbox):
    if not sandbox.limits_total_memory:
        pytest.skip("no writable memory cgroup: only each process's address space is limited")
    if sandbox.isolation != "bwrap":
        pytest.skip("without bwrap the prelude blocks fork")
    program = ("import os\nkids = []\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n"
               "        x = b'1' * (256 << 20)\n        os._exit(0)\n    kids.append(pid)\n"
               "killed = sum(os.waitpid(k, 0)[1] != 0 for k in kids)\nraise SystemExit(f'{killed} killed')")
    assert sandbox.run(program) == "failed: over the memory limit (processes killed by the kernel)"


def test_writing_a_10_gb_file_is_stopped(sandbox):
    free_before = shutil.disk_usage(tempfile.gettempdir()).free
    program = "with open('big', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(b'0' * (1 << 20))"
    assert sandbox.run(program) in ("failed: OSError: [Errno 27] File too large",
                                    "failed: killed by SIGXFSZ (file size limit)")
    assert shutil.disk_usage(tempfile.gettempdir()).free > free_before - (64 << 20)


@pytest.mark.parametrize("how", ["remove", "remount read-write, then remove"])
def test_files_outside_the_work_directory_survive(sandbox, how):
    outside = Path(tempfile.mkdtemp(prefix="ttscale-victim-"))
    victim = outside / "keep.txt"
    victim.write_text("precious")
    outside.chmod(0o777)        # only the sandbox, not file permissions, protects it
    victim.chmod(0o666)
    remount = "import subprocess\nsubprocess.run(['mount', '-o', 'remount,bind,rw', '/'])\n" if "remount" in how else ""
    try:
        result = sandbox.run(f"{remount}import os\nos.remove({str(victim)!r})")
        assert result.startswith("failed: "), result
        assert victim.read_text() == "precious"
    finally:
        shutil.rmtree(outside)


def test_no_network(sandbox):
    with __import__("socket").socket() as server:     # something listening on the caller's loopback
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = sandbox.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert result.startswith("failed: "), result


def test_killing_the_parent_and_others_fails(sandbox):
    sentinel = subprocess.Popen(["sleep", "60"])
    try:
        result = sandbox.run(f"import os, signal\nos.kill({sentinel.pid}, signal.SIGKILL)\n"
                             "os.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)")
        assert result.startswith("failed: "), result
        assert sentinel.poll() is None, "the sentinel process outside the sandbox is alive"
    finally:
        sentinel.kill()
        sentinel.wait()


def test_bwrap_isolation(sandbox):
    if sandbox.isolation != "bwrap":
        pytest.skip("bubblewrap is not installed: only the Python-level prelude guards this machine")
    assert sandbox.run("open('/etc/ttscale-test', 'w')").startswith("failed: OSError: [Errno 30] Read-only")
    assert sandbox.run("open('local.txt', 'w').write('ok')") == "passed"
    no_capabilities = "assert 'CapEff:\\t0000000000000000' in open('/proc/self/status').read()"
    assert sandbox.run(no_capabilities) == "passed"
    if os.geteuid() == 0:
        assert sandbox.run("import os\nassert os.getuid() != 0 and os.getgid() != 0") == "passed"
    marker = Path.home() / f".ttscale-sandbox-test-{os.getpid()}"
    marker.write_text("private")
    try:
        assert sandbox.run(f"import os\nassert not os.path.exists({str(marker)!r})") == "passed", "home is hidden"
    finally:
        marker.unlink()
