"""The `ttscale` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Composable test-time scaling for Mixture-of-Experts language models.")
console = Console(stderr=True)


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.callback()
def main() -> None:
    """Run strategies on MoE models; see `ttscale COMMAND --help`."""


@app.command()
def run(
    model: Optional[str] = typer.Option(None, help="Hub id or local directory of a transformers MoE model."),
    task: Optional[str] = typer.Option(None, help="Task name or a JSONL file of {id, prompt, answer} objects."),
    strategy: str = typer.Option("greedy", help="Strategy spec, e.g. reroute+sc, sc, bon, beam, reroute, greedy."),
    n: int = typer.Option(1, help="Samples per problem."),
    limit: Optional[int] = typer.Option(None, help="Solve at most this many problems."),
    seed: int = typer.Option(0, help="Seed of the first branch of each problem."),
    out: Path = typer.Option(Path("runs/latest"), help="Output directory: records.jsonl and summary.json."),
    backend: str = typer.Option("hf", help="hf (transformers, in-process)."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: section.key=value (repeatable)."),
    save_deltas: bool = typer.Option(False, "--save-deltas", help="Write each sample's final router deltas."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda when available)."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 | float16 | float32 (default: bf16 on GPU, fp32 on CPU)."),
    batch_size: int = typer.Option(32, help="Branches per forward batch."),
    overwrite: bool = typer.Option(False, help="Replace records already in --out."),
) -> None:
    """Solve a task's problems with a strategy and write one record per problem."""
    from ttscale.backends import load_backend
    from ttscale.runs import RunConfig, run as run_problems
    from ttscale.tasks import load_task

    if model is None or task is None:
        fail("pass --model (hub id or local directory of an MoE model) and --task (a .jsonl file); "
             "the bundled demo model and task are not available yet")
    try:
        cfg = RunConfig(model=model, task=task, strategy=strategy, n=n, limit=limit, seed=seed, backend=backend,
                        overrides=list(set_), save_deltas=save_deltas)
        the_task = load_task(task)
        problems = the_task.load(limit)
        if not problems:
            fail(f"task {task} has no problems")
        engine = load_backend(backend, model, device=device, dtype=dtype, batch_size=batch_size)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("acc {task.fields[acc]}"), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not sys.stderr.isatty()) as bar:
            job = bar.add_task(strategy, total=len(problems), acc="-")
            graded: list[bool] = []

            def progress(record: dict) -> None:
                if record["correct"] is not None:
                    graded.append(record["correct"])
                bar.update(job, advance=1, acc=f"{sum(graded) / len(graded):.3f}" if graded else "-")

            summary = run_problems(problems, the_task, engine, cfg, out, overwrite, progress)
    except ValueError as e:
        fail(str(e))
    acc = summary["accuracy"]
    ci = summary["ci95"]
    shown = "n/a (no gold answers)" if acc is None else f"{acc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    typer.echo(f"{summary['problems']} problems, accuracy {shown}; records in {out / 'records.jsonl'}")


@app.command()
def strategies() -> None:
    """List generators, searches and named presets with their settings (defaults after presets)."""
    from rich.table import Table

    from ttscale.search import SEARCHES
    from ttscale.spec import GENERATORS, named_presets, parse_spec, resolve_settings

    table = Table("component", "kind", "settings")
    for name, kind in [("sample", "shared sampling"), *((g, "generator") for g in GENERATORS),
                       *((s, "search") for s in SEARCHES)]:
        settings = resolve_settings(parse_spec(name if name != "sample" else "greedy")[0])[name]
        table.add_row(name, kind, "\n".join(f"{name}.{k} = {v!r}" for k, v in settings.__dict__.items()) or "-")
    for name, spec in named_presets().items():
        table.add_row(name, "preset", spec)
    Console().print(table)


if __name__ == "__main__":
    app()
