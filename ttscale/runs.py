"""The run loop: solve each problem, append its record to `OUT/records.jsonl`, write `OUT/summary.json`."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

from ttscale import ledger
from ttscale.backends.base import Backend
from ttscale.branch import Branch
from ttscale.strategy import Strategy
from ttscale.tasks.base import Problem, Task


@dataclass
class RunConfig:
    model: str
    task: str
    strategy: str
    n: int = 1
    limit: int | None = None
    seed: int = 0
    backend: str = "hf"
    overrides: list[str] = field(default_factory=list)
    save_deltas: bool = False

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        self.plan = Strategy.from_spec(self.strategy, self.n, self.overrides)   # fails early on bad specs

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "plan"}
        out["settings"] = {name: dict(value.__dict__) for name, value in self.plan.settings.items()}
        return out


def prepare_out(out: Path, overwrite: bool) -> Path:
    """The records file, refusing to clobber an earlier run unless asked to."""
    records = out / "records.jsonl"
    if records.exists() and records.stat().st_size and not overwrite:
        raise ValueError(f"{records} already holds records; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    records.write_text("")
    return records


def solve(problem: Problem, task: Task, backend: Backend, cfg: RunConfig) -> dict[str, Any]:
    """Run the strategy on one problem and return its record."""
    start = time.perf_counter()
    outcome = cfg.plan.solve(problem, task, backend, seed=cfg.seed)
    compute = ledger.as_record(ledger.total(b.compute for b in outcome.spent), backend.info)
    compute["seconds"]["total"] = round(time.perf_counter() - start, 6)
    samples = [sample_record(b, answer, backend, cfg.save_deltas) for b, answer in zip(outcome.samples, outcome.answers)]
    for sample, score in zip(samples, outcome.scores or []):
        sample["score"] = score
    return {
        "id": problem.id,
        "prediction": outcome.prediction,
        "gold": problem.answer,
        "correct": task.grade(outcome.prediction, problem),
        "chosen": outcome.chosen,
        "samples": samples,
        "compute": compute,
        "seed": cfg.seed,
    }


def sample_record(b: Branch, answer: str | None, backend: Backend, save_deltas: bool) -> dict[str, Any]:
    routing: dict[str, Any] = {"layers": sorted({layer for c in b.cycles for layer in c.layers}),
                               "delta_norms": {}, "cycles": [c.as_dict() for c in b.cycles]}
    if b.delta is not None:
        layers = backend.info.moe_layers
        norms = b.delta.delta.norm(dim=-1).tolist()
        routing["delta_norms"] = {str(layer): norm for layer, norm in zip(layers, norms) if norm > 0}
        if save_deltas:
            routing["deltas"] = {str(layer): row for layer, row in zip(layers, b.delta.delta.tolist())}
    return {"text": b.text, "answer": answer, "tokens": len(b.generated), "logprob": sum(b.logprobs),
            "finish_reason": b.finish_reason, "seed": b.seed, "compute": ledger.as_record(b.compute, backend.info),
            "routing": routing}


def summarise(records: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    graded = [r["correct"] for r in records if r["correct"] is not None]
    accuracy, ci = None, None
    if graded:
        hits = sum(graded)
        accuracy = hits / len(graded)
        interval = binomtest(hits, len(graded)).proportion_ci(confidence_level=0.95, method="wilson")
        ci = [interval.low, interval.high]
    mean: dict[str, Any] = {}
    for key in ("prompt_tokens", "generated_tokens", "prefill_tokens", "score_tokens", "reward_tokens", "flops"):
        mean[key] = sum(r["compute"][key] for r in records) / max(1, len(records))
    for kind in ("forward", "backward"):
        mean.setdefault("adapt_token_passes", {})[kind] = (
            sum(r["compute"]["adapt_token_passes"][kind] for r in records) / max(1, len(records)))
    phases = sorted({p for r in records for p in r["compute"]["seconds"]})
    mean["seconds"] = {p: sum(r["compute"]["seconds"].get(p, 0.0) for r in records) / max(1, len(records))
                       for p in phases}
    return {"accuracy": accuracy, "ci95": ci, "problems": len(records), "graded": len(graded),
            "mean_compute": mean, "config": cfg.as_dict(), "versions": _versions()}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("ttscale", "torch", "transformers"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def run(problems: list[Problem], task: Task, backend: Backend, cfg: RunConfig, out: Path, overwrite: bool = False,
        progress=None) -> dict[str, Any]:
    records_file = prepare_out(out, overwrite)
    records = []
    with records_file.open("a") as f:
        for problem in problems:
            record = solve(problem, task, backend, cfg)
            f.write(json.dumps(record) + "\n")
            f.flush()
            records.append(record)
            if progress:
                progress(record)
    summary = summarise(records, cfg)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
