"""32 concurrent clients against 32 sequential ones, through `ttscale serve` and the openai client.

    python recipes/serve_concurrency.py [--strategies greedy,sc@4,reroute+sc@4] [--requests 32] [--max-tokens 32]

Starts `ttscale serve` (the bundled demo model, offline) on a free localhost port, warms it up, then
for each strategy sends the demo task's first N problems one after another, then all N at once (one
thread per client), and prints both wall times, their ratio, whether the answers agree and the
accuracy. Numbers: docs/performance.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from ttscale.demo.task import DemoTask

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="greedy,sc@4,reroute+sc@4")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    problems = DemoTask().load(args.requests)
    port = free_port()
    proc = start_server(port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    try:
        print(f"{'strategy':<14} {'sequential s':>12} {'concurrent s':>12} {'ratio':>6}  same answers  accuracy")
        for strategy in args.strategies.split(","):
            def ask(problem):
                return client.chat.completions.create(model=strategy, messages=[{"role": "user", "content": problem.prompt}],
                                                      max_tokens=args.max_tokens, stop=["\n"], seed=0)
            ask(problems[0])                                   # warm-up
            start = time.perf_counter()
            sequential = [ask(p) for p in problems]
            seq_s = time.perf_counter() - start
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(len(problems)) as pool:
                concurrent_ = list(pool.map(ask, problems))
            con_s = time.perf_counter() - start
            texts = lambda rs: [r.choices[0].message.content for r in rs]  # noqa: E731
            correct = sum(DemoTask().extract(r.choices[0].message.content, p) == p.answer
                          for r, p in zip(concurrent_, problems))
            print(f"{strategy:<14} {seq_s:>12.2f} {con_s:>12.2f} {seq_s / con_s:>5.1f}x  "
                  f"{str(texts(sequential) == texts(concurrent_)):<12}  {correct}/{len(problems)}")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
