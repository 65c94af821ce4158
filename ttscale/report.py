"""A table comparing finished runs: accuracy with its CI, compute and time per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ttscale.curves import compute_of
from ttscale.demo import model_name
from ttscale.rundir import load_run

COLUMNS = ("run", "strategy", "n", "model", "task", "problems", "accuracy", "95% CI", "token-passes", "FLOPs",
           "seconds")


def report_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        summary, _ = load_run(run)
        config, acc, ci = summary["config"], summary["accuracy"], summary["ci95"]
        mean = summary["mean_compute"]
        rows.append({
            "run": Path(run).name, "strategy": config["strategy"], "n": config["n"],
            "model": Path(model_name(config["model"])).name, "task": Path(config["task"]).name, "problems": summary["problems"],
            "accuracy": "-" if acc is None else f"{acc:.3f}",
            "95% CI": "-" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}",
            "token-passes": f"{compute_of(mean, 'tokens'):.0f}",
            "FLOPs": f"{compute_of(mean, 'flops'):.3g}",
            "seconds": f"{compute_of(mean, 'seconds'):.2f}",
        })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"
