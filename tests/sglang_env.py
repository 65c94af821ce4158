"""Running tests against the real SGLang engine or server, each test module in a process of its own.

SGLang's engine needs an environment of its own (`.ci/sglang-env`, built by `.ci/run`: sglang, its CPU
kernel library, CPU torch; named by TTSCALE_SGLANG_PYTHON) and, when one of its child processes
dies, SIGKILLs its parent. So the engine checks live in modules pytest does not collect by itself
(`sglang_*_checks.py`), and tests/test_sglang_cpu.py runs each in a fresh pytest process of the SGLang
environment. Without such an environment that is skipped, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def sglang_python() -> str | None:
    """The interpreter of an environment with sglang: TTSCALE_SGLANG_PYTHON, else this one if it has sglang."""
    if os.environ.get("TTSCALE_SGLANG_PYTHON"):
        return os.environ["TTSCALE_SGLANG_PYTHON"]
    try:
        import sglang  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def rerun_module(test_file: str, timeout: int) -> str:
    """Run the checks in `test_file` in a pytest process of the SGLang environment; its output."""
    python = sglang_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI must build the SGLang environment (.ci/run) and set TTSCALE_SGLANG_PYTHON")
        pytest.skip("no SGLang environment here (set TTSCALE_SGLANG_PYTHON; .ci/run builds .ci/sglang-env)")
    env = {**os.environ, "TTSCALE_SGLANG_PYTHON": "", "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--durations=0",
                               test_file], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{Path(test_file).name} took over {timeout} s: {(e.stdout or b'')[-3000:]!r}")
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"exit {done.returncode}\n{output}"
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and " skipped" not in summary and " failed" not in summary, output
    return done.stdout
