"""math-verify from any thread, with a time limit per call.

math-verify limits its own time with SIGALRM, which only a process's main thread may set. So ttscale
runs it, with those timeouts off, in worker processes of its own (`python -m ttscale.tasks.mathverify`,
one JSON request and reply per line) and enforces the limit itself: a worker that overruns is killed
and replaced. Workers are started on first use, one per concurrent caller up to the CPU count.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

STARTUP_SECONDS = 120       # importing sympy on a busy machine; not counted against a call's limit


class _Worker:
    def __init__(self):
        package_root = str(Path(__file__).resolve().parents[2])    # importable however this process found it
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=os.environ | {"PYTHONPATH": path})
        try:
            started = self._reply(STARTUP_SECONDS) == "ready"
        except (TimeoutError, RuntimeError, ValueError):
            started = False
        if not started:
            self.close()
            raise RuntimeError("the math-verify worker did not start (see its error above)")

    def call(self, request: list[Any], timeout: float) -> Any:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply(timeout)

    def _reply(self, timeout: float) -> Any:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the math-verify worker died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
_slots = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))


def call(op: str, *args: str, timeout: float) -> Any:
    """`op(*args)` in a worker; TimeoutError after `timeout` seconds (the worker is then replaced)."""
    with _slots:
        try:
            worker = _idle.get_nowait()
        except queue.Empty:
            worker = _Worker()
        try:
            reply = worker.call([op, *args], timeout)
        except BaseException:
            worker.close()
            raise
        _idle.put(worker)
    return reply


@atexit.register
def _close_all() -> None:
    while not _idle.empty():
        _idle.get_nowait().close()


# --- the worker ------------------------------------------------------------------------------------

def _serve() -> None:
    import logging

    import sympy
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)   # "timeout disabled" warnings: we enforce it

    def parsed(text: str):
        return parse(f"${text}$", parsing_timeout=None)

    def equivalent(gold: str, prediction: str) -> bool:
        g, p = parsed(gold), parsed(prediction)
        return bool(g and p and verify(g, p, timeout_seconds=None))

    def canonical(answer: str) -> str | None:
        p = parsed(answer)
        if not p:
            return None
        expr = p[0]
        if isinstance(expr, sympy.Basic):       # decimals as exact fractions: 0.50, 2.0 agree with 1/2, 2
            expr = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
        return str(expr)

    ops = {"equivalent": equivalent, "canonical": canonical}
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        op, *args = json.loads(line)
        try:
            result = ops[op](*args)
        except Exception:
            result = None
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _serve()
