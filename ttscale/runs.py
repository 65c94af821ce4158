"""The run loop: solve each problem, append its record to `OUT/records.jsonl`, write `OUT/summary.json`."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator

from scipy.stats import binomtest

from ttscale import ledger
from ttscale.backends import load_backend
from ttscale.backends.base import Backend
from ttscale.branch import Branch
from ttscale.rundir import RunDir
from ttscale.strategy import Strategy
from ttscale.tasks import load_task
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


def solve(problem: Problem, task: Task, backend: Backend, cfg: RunConfig) -> dict[str, Any]:
    """Run the strategy on one problem and return its record."""
    start = time.perf_counter()
    outcome = cfg.plan.solve(problem, task, backend, seed=cfg.seed, stop=getattr(task, "stop", ()))
    compute = ledger.as_record(ledger.total(b.compute for b in outcome.spent), backend.info)
    compute["seconds"]["total"] = round(time.perf_counter() - start, 6)
    samples = [sample_record(b, answer, backend, cfg.save_deltas) for b, answer in zip(outcome.samples, outcome.answers)]
    for sample, score in zip(samples, outcome.scores or []):
        sample["score"] = score
    grades: dict[str, bool | None] = {}      # one grading per distinct answer (code runs in the sandbox)
    for sample in samples:
        key = sample["key"] = answer_key(task, sample["answer"])
        if key not in grades:
            grades[key] = task.grade(sample["answer"], problem)
        sample["correct"] = grades[key]
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


def answer_key(task: Task, answer: str | None) -> str | None:
    """The task's voting key as a string, so records can be re-voted (curves) without the task."""
    if answer is None:
        return None
    key = task.answer_key(answer)
    return key if isinstance(key, str) or key is None else repr(key)


def sample_record(b: Branch, answer: str | None, backend: Backend, save_deltas: bool) -> dict[str, Any]:
    routing: dict[str, Any] = {"layers": sorted({layer for c in b.cycles for layer in c.layers}),
                               "delta_norms": {}, "cycles": [c.as_dict() for c in b.cycles]}
    if b.delta is not None:
        layers = backend.info.moe_layers
        norms = b.delta.delta.norm(dim=-1).tolist()
        routing["delta_norms"] = {str(layer): norm for layer, norm in zip(layers, norms) if norm > 0}
        if save_deltas:
            routing["deltas"] = {str(layer): row for layer, row in zip(layers, b.delta.delta.tolist())}
    compute = ledger.as_record(b.compute, backend.info)
    if "shared_compute" in b.meta:       # the part done once for every sample (the shared prefill adaptation)
        compute["shared"] = ledger.as_record(b.meta["shared_compute"], backend.info)
    return {"text": b.text, "answer": answer, "tokens": len(b.generated), "logprob": sum(b.logprobs),
            "finish_reason": b.finish_reason, "seed": b.seed, "compute": compute, "routing": routing}


def summarise(records: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    graded = [r["correct"] for r in records if r["correct"] is not None]
    accuracy, ci = None, None
    if graded:
        hits = sum(graded)
        accuracy = hits / len(graded)
        interval = binomtest(hits, len(graded)).proportion_ci(confidence_level=0.95, method="wilson")
        ci = [interval.low, interval.high]
    return {"accuracy": accuracy, "ci95": ci, "problems": len(records), "ids": [r["id"] for r in records],
            "graded": len(graded),
            "mean_compute": _mean([r["compute"] for r in records]), "config": cfg.as_dict(), "versions": _versions()}


def _mean(trees: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of nested dicts of numbers (a key missing from a tree counts as 0)."""
    keys = sorted({k for t in trees for k in t})
    out = {}
    for k in keys:
        values = [t.get(k, 0) for t in trees]
        nested = [v for v in values if isinstance(v, dict)]
        out[k] = _mean([v if isinstance(v, dict) else {} for v in values]) if nested else sum(values) / len(trees)
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("ttscale", "torch", "transformers"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def run(problems: list[Problem], task: Task, backend: Backend, cfg: RunConfig, rundir: RunDir,
        progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Solve the problems not yet recorded in `rundir`, then summarise all of them."""
    ids = [p.id for p in problems]
    if len(set(ids)) < len(ids):
        raise ValueError(f"task {cfg.task} has duplicate problem ids, e.g. {next(i for i in ids if ids.count(i) > 1)!r}")
    done = {r["id"]: r for r in rundir.records()}
    for problem in problems:
        if problem.id not in done:
            done[problem.id] = solve(problem, task, backend, cfg)
            rundir.append(done[problem.id])
        if progress:
            progress(done[problem.id])
    summary = summarise([done[i] for i in ids], cfg)
    rundir.write_summary(summary)
    return summary


def execute(cfg: RunConfig, out: Path, overwrite: bool = False, backend: Backend | None = None,
            progress: Callable[[int], ContextManager[Callable[[dict[str, Any]], None]]] | None = None,
            **backend_options: Any) -> dict[str, Any]:
    """A whole run: check the output directory, load the task and (unless given) the backend, solve, summarise."""
    rundir = RunDir(out, cfg.as_dict(), overwrite)
    task = load_task(cfg.task, cfg.plan.settings["task"])
    problems = task.load(cfg.limit)
    if not problems:
        raise ValueError(f"task {cfg.task} has no problems")
    backend = backend or load_backend(cfg.backend, cfg.model, **backend_options)
    with (progress or _silent)(len(problems)) as advance:
        return run(problems, task, backend, cfg, rundir, advance)


@contextmanager
def _silent(total: int) -> Iterator[None]:
    yield None
