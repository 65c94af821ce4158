"""The run loop: solve the problems, many in flight at once, append each record to `OUT/records.jsonl` as
its problem finishes (in any order), write `OUT/summary.json` (in problem order)."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

from ttscale import ledger
from ttscale.backends import load_backend
from ttscale.backends.base import Backend
from ttscale.inflight import InFlight, drive
from ttscale.branch import Branch, Compute
from ttscale.rundir import RunDir
from ttscale.search import Outcome
from ttscale.strategy import Strategy
from ttscale.tasks import load_task
from ttscale.tasks.base import Problem, Task

if TYPE_CHECKING:
    from ttscale.workers import Workers

log = logging.getLogger(__name__)


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
    concurrency: int | None = None     # problems in flight (per worker); None: as many as fill the batch
    workers: int = 1                   # Ray actors, one backend each (ttscale.workers); 1: this process
    # filled in by `execute` once known: where the problems came from, and where and how the model ran
    task_source: str | None = None
    backend_settings: dict[str, Any] | None = None

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1 (or auto), got {self.concurrency}")
        self.plan = Strategy.from_spec(self.strategy, self.n, self.overrides)   # fails early on bad specs
        self.plan.concurrency(1, self.concurrency)                                # and on settings that clash

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()
               if k != "plan" and not (k in ("task_source", "backend_settings") and v is None)}
        out["settings"] = {name: dict(value.__dict__) for name, value in self.plan.settings.items()}
        return out


async def solving(problem: Problem, task: Task, backend: Backend, cfg: RunConfig) -> dict[str, Any]:
    """The coroutine that runs the strategy on one problem and returns its record."""
    start = time.perf_counter()
    outcome = await cfg.plan.solving(problem, task, backend, seed=cfg.seed)
    return record(problem, outcome, task, backend, cfg, wall=time.perf_counter() - start)


async def attempt(problem: Problem, task: Task, backend: Backend, cfg: RunConfig) -> dict[str, Any]:
    """`solving` for a run: a problem whose own solving raises (a prompt too long for the model, a grader
    that fails) gets the record of its error instead, so it fails only itself. A failing backend call,
    shared by every problem in flight, still stops the run."""
    start = time.perf_counter()
    try:
        return await solving(problem, task, backend, cfg)
    except Exception as e:
        return failed(problem, e, backend, cfg, wall=time.perf_counter() - start)


def failed(problem: Problem, error: Exception, backend: Backend, cfg: RunConfig, wall: float = 0.0) -> dict[str, Any]:
    """The record of a problem whose solving raised: no samples, not graded, the error in one line."""
    compute = ledger.as_record(Compute(), backend.info)
    compute["seconds"] = {"total": 0.0, "wall": round(wall, 6)}
    message = str(error).strip().splitlines()
    return {"id": problem.id, "prediction": None, "gold": problem.answer, "correct": None, "chosen": None,
            "samples": [], "compute": compute, "seed": cfg.seed,
            "error": type(error).__name__ + (f": {message[0]}" if message else "")}


def solve(problem: Problem, task: Task, backend: Backend, cfg: RunConfig) -> dict[str, Any]:
    """Run the strategy on one problem and return its record."""
    return drive(backend, solving(problem, task, backend, cfg))


def record(problem: Problem, outcome: Outcome, task: Task, backend: Backend, cfg: RunConfig,
           wall: float = 0.0) -> dict[str, Any]:
    """A problem's record: prediction, graded samples, compute. Seconds per phase are the problem's share
    of each batch it was in (`total` their sum); `wall` is the time it was in flight."""
    compute = ledger.as_record(ledger.total(b.compute for b in outcome.spent), backend.info)
    compute["seconds"]["total"] = round(sum(compute["seconds"].values()), 6)
    compute["seconds"]["wall"] = round(wall, 6)
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
    from scipy.stats import binomtest

    graded = [r["correct"] for r in records if r["correct"] is not None]
    accuracy, ci = None, None
    if graded:
        hits = sum(graded)
        accuracy = hits / len(graded)
        interval = binomtest(hits, len(graded)).proportion_ci(confidence_level=0.95, method="wilson")
        ci = [float(interval.low), float(interval.high)]
    return {"accuracy": accuracy, "ci95": ci, "problems": len(records), "ids": [r["id"] for r in records],
            "graded": len(graded), "errors": sum("error" in r for r in records),
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


def run(problems: list[Problem], task: Task, backend: Backend | None, cfg: RunConfig, rundir: RunDir,
        progress: Callable[[dict[str, Any], int], None] | None = None,
        workers: Workers | None = None) -> dict[str, Any]:
    """Solve the problems not yet recorded in `rundir`, many at once on `backend` (or spread over the
    Ray `workers`), then summarise all of them. On an interrupt the summary of
    the problems done so far is written, marked partial, and the interrupt goes on."""
    ids = [p.id for p in problems]
    if len(set(ids)) < len(ids):
        raise ValueError(f"task {cfg.task} has duplicate problem ids, e.g. {next(i for i in ids if ids.count(i) > 1)!r}")
    done = {r["id"] for r in rundir.records()}
    todo = [p for p in problems if p.id not in done]

    def finished(result: dict[str, Any], in_flight: int) -> None:
        rundir.append(result)
        if "error" in result:
            log.warning(f"problem {result['id']} failed: {result['error']}")
        if progress:
            progress(result, in_flight)

    try:
        if workers is None:
            flight = InFlight(backend, cfg.plan.concurrency(getattr(backend, "batch_size", 32), cfg.concurrency))
            flight.run(((p.id, attempt(p, task, backend, cfg)) for p in todo),
                       lambda _, result: finished(result, flight.in_flight))
        else:
            workers.solve(todo, task, cfg, finished)
    except BaseException:
        rundir.write_summary(summarise(_in_order(rundir, ids), cfg) | {"partial": True, "of": len(ids)})
        raise
    summary = summarise(_in_order(rundir, ids), cfg)
    rundir.write_summary(summary)
    return summary


def _in_order(rundir: RunDir, ids: list[str]) -> list[dict[str, Any]]:
    """The recorded problems among `ids`, in their order (read back from disk: a run holds only what is in flight)."""
    by_id = {r["id"]: r for r in rundir.records()}
    return [by_id[i] for i in ids if i in by_id]


def execute(cfg: RunConfig, out: Path, overwrite: bool = False, backend: Backend | None = None,
            progress: Callable[[int, int], ContextManager[Callable[[dict[str, Any], int], None]]] | None = None,
            workers: Workers | None = None, **backend_options: Any) -> dict[str, Any]:
    """A whole run: check the output directory, load the task and (unless given) the backend, or start the
    given Ray `workers`, solve, summarise. Nothing is written to `out` until the problems and the backend
    are loaded, so a run that cannot start leaves no files. `progress(total, already_done)` makes the
    callback told of each finished record and the problems in flight."""
    task = load_task(cfg.task, cfg.plan.settings["task"])     # bad task settings fail before OUT is checked
    rundir = RunDir(out, cfg.as_dict(), overwrite)
    problems = task.load(cfg.limit)
    if not problems:
        raise ValueError(f"task {cfg.task} has no problems")
    cfg.task_source = getattr(task, "source", None)
    _say_where_problems_come_from(cfg, len(problems))
    if workers is None:
        backend = backend or load_backend(cfg.backend, cfg.model, **backend_options)
        cfg.backend_settings = describe(backend, cfg.backend)
    else:
        workers.start(cfg.backend, cfg.model, **backend_options)
        cfg.backend_settings = workers.backend_settings() or {"backend": cfg.backend}
    rundir.start(cfg.as_dict())
    wanted = {p.id for p in problems}
    already = sum(r["id"] in wanted for r in rundir.records())
    with (progress or _silent)(len(problems), already) as advance:
        return run(problems, task, backend, cfg, rundir, advance, workers)


def describe(backend: Backend, name: str) -> dict[str, Any]:
    """Where and how the backend runs its model (`backend_settings` in config.json and summary.json)."""
    return getattr(backend, "describe", lambda: {"backend": name})()


def _say_where_problems_come_from(cfg: RunConfig, count: int) -> None:
    """A warning when a benchmark fell back to its small offline fixture, or has fewer problems than asked."""
    source = cfg.task_source or ""
    if source.startswith("fixtures:"):
        log.warning(f"task {cfg.task}: the hub and packaged data are not available here, so this run uses the "
                    f"{count}-problem offline fixture ({source}); results are not comparable with the full benchmark")
    if cfg.limit is not None and count < cfg.limit:
        log.warning(f"--limit {cfg.limit}: task {cfg.task} has {count} problems here ({source or 'its own'})")


@contextmanager
def _silent(total: int, already_done: int) -> Iterator[None]:
    yield None
