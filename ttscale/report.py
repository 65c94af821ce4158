"""Comparing finished runs: a table of accuracy with its CI, compute and time per problem; and the paired
test of two runs on the same problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ttscale.curves import compute_of
from ttscale.demo import model_name
from ttscale.rundir import load_run

COLUMNS = ("run", "strategy", "n", "model", "task", "problems", "accuracy", "95% CI", "token-passes", "FLOPs",
           "seconds", "phases kept")


def report_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        summary, records = load_run(run)
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
            "phases kept": phases_kept(records),
        })
    return rows


def phases_kept(records: list[dict[str, Any]]) -> str:
    """Of the adaptation phases a rerouting guard judged, the share it kept (`-`: no guarded phase)."""
    decisions = [cycle["guard"]["accepted"] for r in records for s in r["samples"]
                 for cycle in s.get("routing", {}).get("cycles", []) if cycle.get("guard")]
    return f"{sum(decisions) / len(decisions):.2f} of {len(decisions)}" if decisions else "-"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paired(a: Path, b: Path) -> dict[str, Any]:
    """Run `b` against run `a` on the problems both graded: `wins` (b right, a wrong), `losses` (the
    reverse), `ties`, and the exact McNemar p-value (two-sided binomial test on the discordant pairs)."""
    from scipy.stats import binomtest

    graded = [{r["id"]: r["correct"] for r in load_run(run)[1] if r["correct"] is not None} for run in (a, b)]
    shared = graded[0].keys() & graded[1].keys()
    if not shared:
        raise ValueError(f"{a} and {b} share no graded problems, so they cannot be compared pairwise")
    wins = sum(graded[1][i] and not graded[0][i] for i in shared)
    losses = sum(graded[0][i] and not graded[1][i] for i in shared)
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"problems": len(shared), "wins": wins, "losses": losses, "ties": len(shared) - wins - losses,
            "accuracy": [sum(g[i] for i in shared) / len(shared) for g in graded], "p": p}
