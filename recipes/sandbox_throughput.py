"""Sandbox throughput: programs per second on this machine's cores.

    python recipes/sandbox_throughput.py [--trivial 200]

Runs trivial programs (`pass`), then the 164 HumanEval canonical solutions with their tests, each
in its own sandboxed process, `Sandbox.workers` (the usable CPU count) at a time.
"""

from __future__ import annotations

import argparse
import time

from ttscale.tasks.sandbox import Sandbox
from ttscale.tasks.sources import human_eval_rows


def rate(sandbox: Sandbox, programs: list[str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    results = sandbox.run_many(programs)
    return len(programs) / (time.perf_counter() - start), results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trivial", type=int, default=200)
    args = parser.parse_args()
    sandbox = Sandbox()
    print(f"isolation: {sandbox.isolation}; workers: {sandbox.workers}; "
          f"cgroup limits: {sorted({c for p in sandbox.cgroups for c in p.limits}) or 'none'}")
    per_second, results = rate(sandbox, ["pass"] * args.trivial)
    print(f"trivial programs: {per_second:.1f}/s ({results.count('passed')}/{len(results)} passed)")
    rows = human_eval_rows()
    programs = [r["prompt"] + r["canonical_solution"] + "\n\n" + r["test"] + f"\n\ncheck({r['entry_point']})\n"
                for r in rows]
    per_second, results = rate(sandbox, programs)
    print(f"HumanEval canonical solutions: {per_second:.1f}/s ({results.count('passed')}/{len(results)} passed)")


if __name__ == "__main__":
    main()
