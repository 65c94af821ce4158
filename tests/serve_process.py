"""For the tests that talk to a real server: a `ttscale serve` subprocess on a free localhost port, and
the CLI's message for a bad configuration (which the server must answer with)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """This checkout's ttscale, offline."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(log_dir: Path, *args: str, timeout: float = 180) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """`ttscale serve ARGS` until it answers /health: its process, URL and log file; killed at the end."""
    port, log_path = free_port(), log_dir / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", "serve", "--port", str(port), *args],
                                env=env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, "server did not start"
                time.sleep(0.3)
            yield proc, url, log_path
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def cli_message(**fields) -> str:
    """What `ttscale run` says of a RunConfig with these fields."""
    from ttscale.runs import RunConfig

    try:
        RunConfig(model="demo", task="demo", **fields)
    except ValueError as e:
        return str(e)
    raise AssertionError("expected a ValueError")
