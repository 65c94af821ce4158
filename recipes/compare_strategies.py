"""Compare greedy, reroute, sc@N and reroute+sc@N on one task, then draw the compute-vs-accuracy curve.

    python recipes/compare_strategies.py --model MODEL --task TASK --limit 50 --out runs/compare

One model load serves all four runs; each run resumes if interrupted. Before the timed runs every
strategy solves one problem untimed (`ttscale.warmup`), so the first strategy does not pay the
process's warm-up and per-phase seconds compare fairly. Writes OUT/<strategy>/, OUT/curve.{png,svg,csv}
and OUT/report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttscale.backends import load_backend
from ttscale.curves import write_curve
from ttscale.report import markdown, report_rows
from ttscale.runs import RunConfig, execute
from ttscale.warmup import warm_up

STRATEGIES = ("greedy", "reroute", "sc", "reroute+sc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--x", default="flops", choices=("tokens", "flops", "seconds"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="time the first strategy cold (to measure what the warm-up removes)")
    args = parser.parse_args()

    backend = load_backend("hf", args.model)
    plan = [(strategy, args.n if strategy.endswith("sc") else 1) for strategy in STRATEGIES]
    if args.warm_up:
        warm_up(backend, args.model, args.task, plan, args.overrides)
    runs = []
    for strategy, n in plan:
        cfg = RunConfig(model=args.model, task=args.task, strategy=strategy, n=n, limit=args.limit, seed=args.seed,
                        overrides=args.overrides)
        summary = execute(cfg, args.out / strategy.replace("+", "-"), backend=backend)
        runs.append(args.out / strategy.replace("+", "-"))
        print(f"{strategy:12s} n={n:<3d} accuracy={summary['accuracy']}")
    write_curve(runs, args.out / "curve.png", x=args.x)
    (args.out / "report.md").write_text(markdown(report_rows(runs)))
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
