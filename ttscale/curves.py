"""Compute-vs-accuracy curves from finished runs.

A run that drew N samples per problem (sc, bon) gives accuracy at n = 1, 2, 4, ... N from the one
pool: for each problem, the expected accuracy of the strategy on a uniformly random n-subset of its
samples (without replacement), averaged over problems, with a bootstrap 95 % CI over problems.
Majority votes and best-of-n picks have exact estimators; weighted votes average over all subsets
(or, past 5000 subsets, 2000 seeded random ones). Ties count as the tied answers' average, the
expectation of the seeded tie-break. Single-answer runs (greedy, reroute, beam) are points.
Compute at n is what a run with n samples would have spent: work shared by all samples (the prefill
adaptation of `reroute+sc`, recorded as `samples[].compute.shared`) once, the rest n / N of the problem's
total.
"""

from __future__ import annotations

import csv
import itertools
import logging
import random
from dataclasses import dataclass, replace
from math import comb
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ttscale.aggregate import vote_weights
from ttscale.rundir import check_writable, load_run, read_json
from ttscale.spec import parse_spec

log = logging.getLogger(__name__)
X_AXES = ("tokens", "flops", "seconds")
_EXACT_LIMIT, _SAMPLED = 5000, 2000


# --- per-problem estimators -----------------------------------------------------------------

def vote_share(keys: Sequence[str | None], correct: dict[str | None, bool], weights: Sequence[float] | None = None
               ) -> float:
    """Correctness of a (weighted) vote, ties split evenly; samples without an answer do not vote."""
    totals: dict[str, float] = {}
    for i, key in enumerate(keys):
        if key is not None:
            totals[key] = totals.get(key, 0.0) + (1.0 if weights is None else weights[i])
    if not totals:
        return 0.0
    top = max(totals.values())
    tied = [k for k, v in totals.items() if np.isclose(v, top, rtol=1e-9, atol=0)]
    return sum(bool(correct.get(k)) for k in tied) / len(tied)


def majority_at(keys: Sequence[str | None], correct: dict[str | None, bool], n: int) -> float:
    """Exact expected majority-vote accuracy on a random n-subset, by counting subsets per group."""
    sizes: dict[str | None, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    abstain = sizes.pop(None, 0)
    total = 0.0
    for key, size in sizes.items():
        if not correct.get(key):
            continue
        others = [s for k, s in sizes.items() if k != key]
        for k in range(1, min(size, n) + 1):
            # ways[m][t]: choices of m samples from the other groups with every group below k, t of them at k
            ways = {(0, 0): 1}
            for other in others:
                step: dict[tuple[int, int], int] = {}
                for (m, t), w in ways.items():
                    for j in range(0, min(other, k, n - k - m) + 1):
                        state = (m + j, t + (j == k))
                        step[state] = step.get(state, 0) + w * comb(other, j)
                ways = step
            for (m, t), w in ways.items():
                rest = n - k - m
                if 0 <= rest <= abstain:
                    total += comb(size, k) * w * comb(abstain, rest) / (t + 1)
    return total / comb(len(keys), n)


def best_at(scores: Sequence[float], correct: Sequence[bool], n: int) -> float:
    """Exact expected correctness of the best-scored sample of a random n-subset (first index on ties)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    N = len(scores)
    return sum(correct[i] * comb(N - rank - 1, n - 1) for rank, i in enumerate(order)) / comb(N, n)


def subsets_mean(N: int, n: int, value: Callable[[tuple[int, ...]], float], seed: int = 0) -> float:
    """Mean of `value` over all n-subsets of range(N), or over seeded random ones when there are too many."""
    if comb(N, n) <= _EXACT_LIMIT:
        subsets = list(itertools.combinations(range(N), n))
    else:
        rng = random.Random(seed)
        subsets = [tuple(sorted(rng.sample(range(N), n))) for _ in range(_SAMPLED)]
    return sum(value(s) for s in subsets) / len(subsets)


def problem_accuracy_at(record: dict[str, Any], search: str, vote: str, n: int) -> float:
    samples = record["samples"]
    keys = [s["key"] for s in samples]
    correct = {s["key"]: bool(s["correct"]) for s in samples}
    if search == "bon":
        return best_at([s["score"] for s in samples], [bool(s["correct"]) for s in samples], n)
    if vote == "weighted":
        scores = [s["score"] for s in samples]
        return subsets_mean(len(samples), n, lambda sub: vote_share(
            [keys[i] for i in sub], correct, vote_weights([scores[i] for i in sub])))
    return majority_at(keys, correct, n)


# --- runs -------------------------------------------------------------------------------------

@dataclass
class Point:
    label: str
    n: int
    x: float
    accuracy: float
    low: float
    high: float


def _budgets(N: int) -> list[int]:
    ns = [2 ** i for i in range(N.bit_length()) if 2 ** i <= N]
    return ns + ([N] if ns[-1] != N else [])


def _ci(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95 % CI of the mean accuracy: Wilson's when every problem is simply right or wrong (a single-answer
    run: the interval `ttscale report` gives), else a percentile bootstrap over problems."""
    from scipy.stats import binomtest, bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) and np.all((data == 0) | (data == 1)):
        interval = binomtest(int(data.sum()), len(data)).proportion_ci(confidence_level=0.95, method="wilson")
        return float(interval.low), float(interval.high)
    if len(data) < 2 or np.all(data == data[0]):
        return float(data.mean()), float(data.mean())
    result = bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                       random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compute_of(c: dict[str, Any], x: str) -> float:
    """One compute record (a problem's, a sample's, a mean) on the x axis."""
    if x == "flops":
        return c["flops"]
    if x == "seconds":
        return c["seconds"].get("total", sum(c["seconds"].values()))
    passes = c["adapt_token_passes"]
    return (c["prefill_tokens"] + c["generated_tokens"] + passes["forward"] + passes["backward"]
            + c.get("score_tokens", 0) + c.get("reward_tokens", 0))


def compute_at(record: dict[str, Any], x: str, n: int) -> float:
    """What a run drawing n of this pooled problem's N samples would have spent: the shared work once,
    the rest (per-sample work) n / N of it."""
    shared = sum(compute_of(s["compute"]["shared"], x) for s in record["samples"] if "shared" in s.get("compute", {}))
    return shared + (compute_of(record["compute"], x) - shared) * n / len(record["samples"])


def run_points(run: Path, x: str = "tokens") -> list[Point]:
    """The accuracy-vs-compute points of one run directory (the problems its summary covers)."""
    summary, records = load_run(run)
    config = summary["config"]
    records = [r for r in records if r["correct"] is not None]
    if not records:
        raise ValueError(f"{run}: no graded records")
    spec, _ = parse_spec(config["strategy"])
    label = config["strategy"] + (f"@{config['n']}" if config["n"] > 1 else "")
    shots = config["settings"].get("task", {}).get("shots", -1)
    label += f", {shots} shots" if shots != -1 else ""
    mean_x = float(np.mean([compute_of(r["compute"], x) for r in records]))
    if spec.search not in ("sc", "bon"):
        accuracy = [float(r["correct"]) for r in records]
        return [Point(label, config["n"], mean_x, float(np.mean(accuracy)), *_ci(accuracy))]
    vote = config["settings"].get("sc", {}).get("vote", "majority")
    N = min(len(r["samples"]) for r in records)
    points = []
    for n in _budgets(N):
        accuracy = [problem_accuracy_at(r, spec.search, vote, n) for r in records]
        cost = float(np.mean([compute_at(r, x, n) for r in records]))
        points.append(Point(label, n, cost, float(np.mean(accuracy)), *_ci(accuracy)))
    return points


def _distinct_labels(runs: Sequence[Path], labels: list[str]) -> list[str]:
    """Legend entries that tell the runs apart: the task when the runs are on different tasks (said as a
    warning, since their accuracies are not comparable), then the run's folder where entries still repeat."""
    tasks = [Path(read_json(Path(r) / "summary.json")["config"]["task"]).name for r in runs]
    if len(set(tasks)) > 1:
        log.warning(f"the runs are on different tasks ({', '.join(dict.fromkeys(tasks))}): their accuracies are "
                    "not comparable; each legend entry names its task")
        labels = [f"{label} on {task}" for label, task in zip(labels, tasks)]
    return [f"{label} ({Path(r).name})" if labels.count(label) > 1 else label for label, r in zip(labels, runs)]


def write_curve(runs: Sequence[Path], out: Path, x: str = "tokens", labels: Sequence[str] | None = None) -> list[Point]:
    """Plot every run's points to OUT.png and OUT.svg, and write OUT.csv beside them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_AXES:
        raise ValueError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    per_run = [run_points(r, x) for r in runs]
    if labels is None:
        labels = _distinct_labels(runs, [points[0].label for points in per_run])
    per_run = [[replace(p, label=label) for p in points] for label, points in zip(labels, per_run)]
    stem = Path(out).with_suffix("")
    for suffix in (".png", ".svg", ".csv"):
        check_writable(stem.with_suffix(suffix), "--out")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, points in enumerate(per_run):
        xs, ys = [p.x for p in points], [p.accuracy for p in points]
        err = [[p.accuracy - p.low for p in points], [p.high - p.accuracy for p in points]]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=points[0].label)
        if len(points) > 1:        # n labels below one curve's points, above the next's, in the curve's colour
            for p in points:
                ax.annotate(f"n={p.n}", (p.x, p.accuracy), textcoords="offset points", fontsize=7,
                            xytext=(5, -11 if i % 2 == 0 else 5), color=line.lines[0].get_color())
    ax.set_xscale("log")
    ax.set_ylim(0, 1.04)                         # a point at 1.0 stays in view
    ax.set_xlabel({"tokens": "token-passes per problem", "flops": "FLOPs per problem",
                   "seconds": "seconds per problem"}[x])
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)   # beside the axes: hides no point
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(stem.with_suffix(suffix), dpi=150)
    plt.close(fig)
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "strategy", "n", x, "accuracy", "ci_low", "ci_high"])
        for run, points in zip(runs, per_run):
            for p in points:
                writer.writerow([str(run), p.label, p.n, p.x, p.accuracy, p.low, p.high])
    return [p for points in per_run for p in points]
