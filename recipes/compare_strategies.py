"""Compare strategies on one task (default: greedy, reroute, sc@N and reroute+sc@N), then draw the
compute-vs-accuracy curve.

    python recipes/compare_strategies.py --model MODEL --task TASK --limit 50 --out runs/compare
    python recipes/compare_strategies.py --model demo --task demo-shift --strategies greedy,reroute-testbed,bon@4

One model load serves all runs; each run resumes if interrupted. Before the timed runs every
strategy solves one problem untimed (`ttscale.warmup`), so the first strategy does not pay the
process's warm-up and per-phase seconds compare fairly. Writes OUT/<strategy>/ (as given, `+` as `-`),
OUT/curve.{png,svg,csv} and OUT/report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttscale.backends import load_backend
from ttscale.curves import write_curve
from ttscale.report import markdown, report_rows
from ttscale.runs import RunConfig, execute
from ttscale.spec import split_count
from ttscale.warmup import warm_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--strategies", default="greedy,reroute,sc,reroute+sc",
                        help="comma-separated specs, each with an optional @N (default N: --n for sc, bon and beam)")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--x", default="flops", choices=("tokens", "flops", "seconds"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="time the first strategy cold (to measure what the warm-up removes)")
    args = parser.parse_args()

    texts = [text.strip() for text in args.strategies.split(",")]
    plan = [_planned(text, args.n) for text in texts]
    for strategy, n in plan:       # a bad spec or setting fails here, before the model loads
        RunConfig(model=args.model, task=args.task, strategy=strategy, n=n, overrides=args.overrides)
    backend = load_backend("hf", args.model)
    if args.warm_up:
        warm_up(backend, args.model, args.task, plan, args.overrides)
    runs = []
    for text, (strategy, n) in zip(texts, plan):
        cfg = RunConfig(model=args.model, task=args.task, strategy=strategy, n=n, limit=args.limit, seed=args.seed,
                        overrides=args.overrides)
        out = args.out / text.replace("+", "-")
        summary = execute(cfg, out, backend=backend)
        runs.append(out)
        print(f"{strategy:12s} n={n:<3d} accuracy={summary['accuracy']}")
    write_curve(runs, args.out / "curve.png", x=args.x)
    (args.out / "report.md").write_text(markdown(report_rows(runs)))
    print((args.out / "report.md").read_text())


def _planned(text: str, n: int) -> tuple[str, int]:
    """`spec@N` -> (spec, N); a spec without a count draws --n samples if its search takes several, else 1."""
    from ttscale.spec import parse_spec

    spec, count = split_count(text)
    if "@" in text:
        return spec, count
    return spec, n if parse_spec(spec)[0].search in ("sc", "bon", "beam") else 1


if __name__ == "__main__":
    main()
