"""`ttscale bench --throughput`: problems per second with one problem in flight against many.

Each strategy solves the same problems twice on one backend, at concurrency 1 and at auto (as many
problems as fill the batch); a warm-up solve before each timed pair keeps one-time costs out. The two
passes must give the same predictions (checked and reported), so the ratio is the gain from batching
alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ttscale.backends import load_backend
from ttscale.spec import split_count
from ttscale.strategy import Strategy
from ttscale.tasks import load_task


@dataclass
class ThroughputConfig:
    model: str                                   # hub id or directory
    task: str = "demo"
    problems: int = 64
    strategies: tuple[str, ...] = ("greedy", "sc@8", "reroute+sc@8")
    batch_size: int = 32
    device: str | None = None
    dtype: str | None = None
    decode: str = "auto"
    seed: int = 0


def run_throughput(cfg: ThroughputConfig) -> dict[str, Any]:
    backend = load_backend("hf", cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                           decode=cfg.decode)
    plans = {text: Strategy.from_spec(*split_count(text)) for text in cfg.strategies}
    task = load_task(cfg.task, next(iter(plans.values())).settings["task"])
    problems = task.load(cfg.problems)
    rows = []
    for text, plan in plans.items():
        auto = plan.concurrency(cfg.batch_size)
        plan.solve_all(problems[:auto], task, backend, cfg.seed)          # warm-up
        passes = {}
        for k in (1, auto):
            start = time.perf_counter()
            outcomes = plan.solve_all(problems, task, backend, cfg.seed, concurrency=k)
            passes[k] = (time.perf_counter() - start, [o.prediction for o in outcomes])
        (one, first), (many, second) = passes[1], passes[auto]
        rows.append({"strategy": text, "concurrency": auto, "seconds_k1": one, "seconds_auto": many,
                     "problems_s_k1": len(problems) / one, "problems_s_auto": len(problems) / many,
                     "ratio": one / many, "same_predictions": first == second})
    return {"config": asdict(cfg), "problems": len(problems), "device": str(backend.device),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "results": rows}
