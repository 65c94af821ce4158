"""The sandbox: real programs pass, wrong ones fail, hostile ones are contained and reported."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ttscale.tasks.code import HumanEval
from ttscale.tasks.sandbox import Limits, Sandbox
from ttscale.tasks.sources import human_eval_rows


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(Limits(wall_seconds=8, cpu_seconds=3, memory_bytes=1 << 30, file_bytes=8 << 20, processes=32))


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


def test_hostile_programs_are_contained_and_reported(sandbox, tmp_path):
    victim = Path(tempfile.mkdtemp(prefix="ttscale-victim-")) / "keep.txt"
    victim.write_text("precious")
    free_before = shutil.disk_usage(tempfile.gettempdir()).free
    hostile = {
        "infinite loop": ("while True:\n    pass", ("timed out", "failed: killed by SIGXCPU (CPU limit)")),
        "memory bomb": ("x = bytearray(8 << 30)", ("failed: MemoryError",)),
        "10 GB file": ("with open('big', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(b'0' * (1 << 20))",
                       ("failed: OSError: [Errno 27] File too large", "failed: killed by SIGXFSZ (file size limit)")),
        "delete outside": (f"import os\nos.remove({str(victim)!r})", None),
        "socket": ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)", None),
        "kill parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)", None),
    }
    for name, (program, expected) in hostile.items():
        result = sandbox.run(program)
        assert result == "timed out" or result == "passed" or result.startswith("failed: "), (name, result)
        if expected:
            assert result in expected, (name, result)
        elif name != "kill parent":
            assert result.startswith("failed: "), (name, result)
    assert victim.read_text() == "precious"
    assert shutil.disk_usage(tempfile.gettempdir()).free > free_before - (64 << 20)
    assert not [p for p in Path(tempfile.gettempdir()).glob("ttscale-sandbox-*")], "work directories removed"
    shutil.rmtree(victim.parent)


def test_fork_bomb_is_held_to_the_process_cap_and_killed(sandbox):
    if not sandbox.limits_processes:
        pytest.skip("no writable cgroup pids controller and running as root: a fork bomb could not be capped")
    before = len(os.listdir("/proc"))
    result = sandbox.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert result == "timed out"
    assert len(os.listdir("/proc")) < before + 16, "every forked process was killed"
    if sandbox.cgroups is not None:
        assert not list(sandbox.cgroups.glob("ttscale-*")), "the program's cgroup was removed"


def test_network_and_filesystem_isolation_with_bwrap(sandbox):
    if sandbox.isolation != "bwrap":
        pytest.skip("bubblewrap is not installed: only the Python-level prelude guards this machine")
    assert sandbox.run("open('/etc/ttscale-test', 'w')").startswith("failed: OSError: [Errno 30] Read-only")
    assert sandbox.run("open('local.txt', 'w').write('ok')") == "passed"
