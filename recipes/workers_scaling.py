"""Problems per second with `ttscale run --workers N` against one device, on the same problems.

    python recipes/workers_scaling.py --strategies greedy,reroute+sc@8 --workers 1,2 --problems 256 --out scaling.json

`--workers 1` is the one-device run in this process (no Ray); each N > 1 starts N Ray actors once (a
local Ray instance, or the cluster at `--ray`), each loading its own backend, and runs every strategy
on them. Before each timed run the backend (or every worker) solves a few problems untimed, so
start-up, model loading and first-call costs stay out of the timing: what is timed is `execute` over
`--problems` problems, records written as on the command line. Every run must give the records of
the one-device run (predictions, sample texts and answers), checked and reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ttscale.backends import load_backend
from ttscale.rundir import read_records
from ttscale.runs import RunConfig, execute
from ttscale.spec import split_count
from ttscale.workers import Workers


def outputs(records: dict[str, dict]) -> dict[str, tuple]:
    """What must not depend on the number of workers: each problem's prediction, sample texts and answers."""
    return {i: (r["prediction"], [(s["text"], s["answer"]) for s in r["samples"]]) for i, r in records.items()}


def timed(cfg: RunConfig, out: Path, **how) -> tuple[float, dict]:
    execute(replace(cfg, limit=WARM_UP), out / "warm-up", **how)
    start = time.perf_counter()
    execute(cfg, out / "run", **how)
    seconds = time.perf_counter() - start
    return seconds, {r["id"]: r for r in read_records(out / "run" / "records.jsonl")}


WARM_UP = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--task", default="demo")
    parser.add_argument("--strategies", default="greedy,reroute+sc@8")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (1: one device, no Ray)")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--ray", default=None, help="the Ray cluster to run the workers on (default: a local one)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    counts = [int(n) for n in args.workers.split(",")]
    configs = [RunConfig(model=args.model, task=args.task, strategy=s, n=n, limit=args.problems)
               for s, n in map(split_count, args.strategies.split(","))]
    options = {"device": args.device, "batch_size": args.batch_size}
    rows, reference = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for count in counts:
            if count == 1:
                backend = load_backend("hf", args.model, **options)
                runs = {cfg.strategy: timed(cfg, Path(scratch) / f"1-{i}", backend=backend)
                        for i, cfg in enumerate(configs)}
                threads, device = torch.get_num_threads(), str(backend.device)
                del backend
            else:
                with Workers(count, args.ray, args.device) as pool:
                    runs = {cfg.strategy: timed(replace(cfg, workers=count), Path(scratch) / f"{count}-{i}",
                                                workers=pool, **options) for i, cfg in enumerate(configs)}
                    threads, device = 1 if pool.device == "cpu" else None, pool.device
            for cfg in configs:
                seconds, records = runs[cfg.strategy]
                reference.setdefault(cfg.strategy, records)
                same = outputs(records) == outputs(reference[cfg.strategy])
                rows.append({"strategy": f"{cfg.strategy}@{cfg.n}" if cfg.n > 1 else cfg.strategy, "workers": count,
                             "device": device, "threads_per_worker": threads, "problems": len(records),
                             "seconds": seconds, "problems_s": len(records) / seconds, "same_outputs": same})
    base = {r["strategy"]: r["problems_s"] for r in rows if r["workers"] == counts[0]}
    print(f"{'strategy':16s} {'workers':>7s} {'seconds':>8s} {'problems/s':>10s} {'speed-up':>8s}  same outputs")
    for r in rows:
        r["speed_up"] = r["problems_s"] / base[r["strategy"]]
        print(f"{r['strategy']:16s} {r['workers']:7d} {r['seconds']:8.2f} {r['problems_s']:10.2f} "
              f"{r['speed_up']:7.2f}x  {'yes' if r['same_outputs'] else 'NO'}")
    if args.out:
        args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "torch": torch.__version__,
                                        "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
