"""The `ttscale` command line."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperCommand, TyperGroup

from ttscale import __version__


def _value_names(params: list) -> list:
    """Help screens show nothing after a flag (typer prints `<bool>` there, as if a flag took a value)."""
    for p in params:
        if p.param_type_name == "option" and p.is_flag:
            p.metavar = ""
    return params


class _Group(TyperGroup):
    def get_params(self, ctx: typer.Context) -> list:
        return _value_names(super().get_params(ctx))


class _Command(TyperCommand):
    def get_params(self, ctx: typer.Context) -> list:
        return _value_names(super().get_params(ctx))


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Group,
                  help="Composable test-time scaling for Mixture-of-Experts language models.")
console = Console(stderr=True)
PROGRESS_EVERY_S = 15.0    # a progress line at most this often when stderr is not a terminal


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input (ValueError) and filesystem errors (OSError) end the command with one line and exit code 2."""
    try:
        yield
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))


class _WarningLine(logging.Handler):
    """ttscale's own log warnings (e.g. unknown keys in a task file) as one `warning:` line each."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def progress_bar(label: str, out: Path):
    """A rich progress bar over problems: done, in flight, accuracy of this session's problems, on a
    terminal; elsewhere (a log, a pipe) a plain line at most every PROGRESS_EVERY_S seconds and at the end;
    a line when resuming. Python warnings raised meanwhile (third-party deprecations) are held back and
    shown once each after the bar."""
    @contextmanager
    def bar(total: int, already_done: int) -> Iterator[Callable[[dict, int], None]]:
        if already_done:
            console.print(f"resuming {out}: {already_done}/{total} problems already done", highlight=False,
                          soft_wrap=True)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("in flight {task.fields[flight]}"), TextColumn("acc {task.fields[acc]}"),
                   TimeRemainingColumn())
        terminal = sys.stderr.isatty()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            with Progress(*columns, console=console, disable=not terminal) as progress:
                job = progress.add_task(label, total=total, completed=already_done, acc="-", flight=0)
                graded: list[bool] = []
                start = last = time.monotonic()
                done = already_done

                def advance(record: dict, in_flight: int) -> None:
                    nonlocal done, last
                    done += 1
                    if record["correct"] is not None:
                        graded.append(record["correct"])
                    acc = f"{sum(graded) / len(graded):.3f}" if graded else "-"
                    progress.update(job, advance=1, flight=in_flight, acc=acc)
                    now = time.monotonic()
                    if not terminal and (done == total or now - last >= PROGRESS_EVERY_S):
                        last, spent = now, now - start
                        left = spent / (done - already_done) * (total - done)
                        console.print(f"{label}: {done}/{total} problems, {in_flight} in flight, accuracy {acc}, "
                                      f"{spent:.0f} s" + (f", about {left:.0f} s left" if done < total else ""),
                                      highlight=False, soft_wrap=True)

                yield advance
        for line in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
            warn(line)
    return bar


@contextmanager
def ray_workers(n: int, address: Optional[str], device: Optional[str]) -> Iterator[object]:
    """The Ray workers of a run (None: one device, in this process, without Ray); a run left without
    workers ends with one line and exit code 1."""
    if n == 1 and not address:
        yield None
        return
    from ttscale.workers import Workers, WorkersFailed

    try:
        with Workers(n, address, device) as pool:
            console.print(pool.describe(), highlight=False, soft_wrap=True)
            yield pool
    except WorkersFailed as e:
        fail(str(e), code=1)


def positive_int(text: str, flag: str, alternative: str = "") -> int:
    """A positive integer option's value, or one line and exit code 2."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        fail(f"{flag} must be a positive integer{alternative}, got {text!r}")
    return value


def parse_concurrency(text: str) -> int | None:
    """`auto` (None) or a positive integer."""
    return None if text == "auto" else positive_int(text, "--concurrency", " or auto")


DECODE_HELP = ("hf decode loop: dynamic (growing cache; auto, the default, everywhere), static (bucketed static "
               "caches), compiled (static + torch.compile/CUDA graphs; opt-in, not yet measured on a GPU).")
TASK_HELP = ("demo, demo-shift, demo-mix, gsm8k, math500, humaneval, mbpp, mmlu, arc, or a JSONL file of "
             "{id, prompt, answer}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ttscale {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Run strategies on MoE models; see `ttscale COMMAND --help`."""
    log = logging.getLogger("ttscale")
    if not any(isinstance(h, _WarningLine) for h in log.handlers):
        log.addHandler(_WarningLine(logging.WARNING))


@app.command(cls=_Command)
def run(
    model: Optional[str] = typer.Option(None, help="Hub id or local directory of a transformers MoE model, or demo "
                                        "(the bundled demo MoE; the default)."),
    task: Optional[str] = typer.Option(None, help=TASK_HELP + " (default: demo)."),
    strategy: str = typer.Option("greedy", help="Strategy spec, e.g. reroute+sc, sc, bon, beam, reroute, greedy."),
    n: int = typer.Option(1, help="Samples per problem."),
    limit: Optional[int] = typer.Option(None, help="Solve at most this many problems."),
    seed: int = typer.Option(0, help="Seed of the first branch of each problem."),
    out: Path = typer.Option(Path("runs/latest"), help="Output directory: records.jsonl and summary.json."),
    backend: str = typer.Option("hf", help="hf (transformers, in-process) | sglang (in-process sglang.Engine on "
                                "CUDA or CPU, or a server with --url; pip install 'ttscale\\[sglang]')."),
    url: Optional[str] = typer.Option(None, help="With --backend sglang: drive the running SGLang server at "
                                      "http://HOST:PORT instead of an in-process engine (docs/sglang.md)."),
    set_: list[str] = typer.Option([], "--set", metavar="SECTION.KEY=VALUE",
                                   help="Override a setting (repeatable), e.g. sc.temperature=0.6, task.stop=\\n."),
    save_deltas: bool = typer.Option(False, "--save-deltas", help="Write each sample's final router deltas."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda when available)."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 | float16 | float32 (default: bf16 on GPU, fp32 on CPU)."),
    batch_size: int = typer.Option(32, help="Branches per forward batch."),
    concurrency: str = typer.Option("auto", help="Problems in flight at once, their branches sharing batches "
                                    "(auto: as many as fill --batch-size)."),
    decode: str = typer.Option("auto", help=DECODE_HELP),
    overwrite: bool = typer.Option(False, help="Replace a different run's records in --out (same config: resumes)."),
    workers: str = typer.Option("1", help="Spread the problems over this many Ray actors, each with its own backend "
                                "(one GPU each, or one CPU thread each) and --concurrency; 1: this process, "
                                "no Ray (pip install 'ttscale\\[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help="Run the workers on the Ray cluster at ADDRESS "
                                              "(HOST:PORT of `ray start --head`, auto, or ray://HOST:PORT) "
                                              "instead of a local Ray instance started for the run."),
) -> None:
    """Solve a task's problems with a strategy and write one record per problem."""
    from ttscale.backends.options import check_options
    from ttscale.demo import DEMO_MODEL, DEMO_MODEL_NAME, DEMO_TASK, model_name
    from ttscale.runs import RunConfig, execute
    from ttscale.spec import check_used, parse_spec

    model, task = model_name(model or DEMO_MODEL_NAME), task or DEMO_TASK
    if model == DEMO_MODEL_NAME and not DEMO_MODEL.is_dir():
        fail("the bundled demo model is missing from this installation; pass --model")
    n_workers = positive_int(workers, "--workers")
    try:
        with user_errors():       # every argument is checked here, before torch or a model is loaded
            cfg = RunConfig(model=model, task=task, strategy=strategy, n=n, limit=limit, seed=seed, backend=backend,
                            overrides=list(set_), save_deltas=save_deltas, concurrency=parse_concurrency(concurrency),
                            workers=n_workers)
            check_used(parse_spec(strategy)[0], set_)
            check_options(device, dtype, batch_size, decode)
            with ray_workers(n_workers, ray_address, device) as pool:
                summary = execute(cfg, out, overwrite, progress=progress_bar(strategy, out), workers=pool,
                                  device=device, dtype=dtype, batch_size=batch_size, decode=decode,
                                  **({"url": url} if url else {}))
    except KeyboardInterrupt:
        partial = _read_summary(out) or {}
        done = (f"{partial['problems']}/{partial['of']} problems done (summary.json marked partial)"
                if partial.get("partial") else "no problem finished")
        console.print(f"interrupted: {done}; re-run the same command to resume", highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    acc = summary["accuracy"]
    ci = summary["ci95"]
    shown = "n/a (no gold answers)" if acc is None else f"{acc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    failed = f" ({summary['errors']} failed: see their error in records.jsonl)" if summary["errors"] else ""
    typer.echo(f"{summary['problems']} problems{failed}, accuracy {shown}; records in {out / 'records.jsonl'}")


@app.command(cls=_Command)
def serve(
    model: Optional[str] = typer.Option(None, help="Hub id or local directory of a transformers MoE model "
                                        "(default: the bundled demo MoE, offline)."),
    backend: str = typer.Option("hf", help="hf (transformers, in-process) | sglang (in-process engine; docs/sglang.md)."),
    strategy: str = typer.Option("greedy", help="Default strategy spec of requests that name none."),
    n: int = typer.Option(1, help="Default samples per request (with the default strategy)."),
    set_: list[str] = typer.Option([], "--set", metavar="SECTION.KEY=VALUE",
                                   help="Override a setting for every request (repeatable)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8000, help="Port to bind."),
    api_key: Optional[str] = typer.Option(None, envvar="TTSCALE_API_KEY", help="Require 'Authorization: Bearer "
                                          "KEY' on every route but /health (also from $TTSCALE_API_KEY)."),
    max_body: int = typer.Option(1 << 20, help="Largest request body in bytes (413 above)."),
    max_n: int = typer.Option(64, help="Most samples or choices per request (400 above)."),
    max_tokens: int = typer.Option(4096, help="Most generated tokens per branch (400 above)."),
    max_queue: int = typer.Option(256, help="Most requests queued or in flight (429 above)."),
    max_logprobs: int = typer.Option(20, help="Most likely alternatives per token with log-probs (400 above)."),
    concurrency: int = typer.Option(32, help="Requests in flight at once, their branches sharing batches."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda when available)."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 | float16 | float32 (default: bf16 on GPU, fp32 on CPU)."),
    batch_size: int = typer.Option(32, help="Branches per forward batch."),
    decode: str = typer.Option("auto", help=DECODE_HELP),
) -> None:
    """Serve test-time scaling behind an OpenAI-compatible HTTP endpoint (docs/serve.md)."""
    from ttscale.serve import ServeConfig, check, serve as run_server
    from ttscale.serve.schemas import Limits

    cfg = ServeConfig(model=model, backend=backend, strategy=strategy, n=n, overrides=list(set_), host=host,
                      port=port, api_key=api_key or None, concurrency=concurrency,
                      limits=Limits(max_body=max_body, max_n=max_n, max_tokens=max_tokens, max_queue=max_queue,
                                    max_logprobs=max_logprobs),
                      backend_options={"device": device, "dtype": dtype, "batch_size": batch_size, "decode": decode})
    try:
        check(cfg)
        run_server(cfg)
    except ValueError as e:
        fail(str(e))


def _read_summary(out: Path) -> dict | None:
    import json

    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _throughput(model: Optional[str], task: str, problems: int, strategies: str, batch_size: int,
                device: Optional[str], dtype: Optional[str], decode: str, out: Optional[Path]) -> None:
    import json

    from rich.table import Column, Table

    from ttscale.demo import DEMO_MODEL_NAME
    from ttscale.rundir import check_writable, write_text
    from ttscale.throughput import ThroughputConfig, run_throughput

    with user_errors():
        if out:
            check_writable(out, "--out")
        result = run_throughput(ThroughputConfig(model=model or DEMO_MODEL_NAME, task=task, problems=problems,
                                                 strategies=tuple(strategies.split(",")), batch_size=batch_size,
                                                 device=device, dtype=dtype, decode=decode))
    table = Table(Column("strategy", no_wrap=True), "concurrency auto", "problems/s, 1 in flight",
                  "problems/s, auto", "ratio", "same predictions", title=f"{result['problems']} problems of {task} on {result['device']} "
                  f"({result['threads']} threads)")
    for r in result["results"]:
        table.add_row(r["strategy"], str(r["concurrency"]), f"{r['problems_s_k1']:.2f}", f"{r['problems_s_auto']:.2f}",
                      f"{r['ratio']:.2f}x", "yes" if r["same_predictions"] else "NO")
    Console().print(table)
    if out:
        with user_errors():
            write_text(out, json.dumps(result, indent=2) + "\n", "--out")


@app.command(cls=_Command)
def grade(
    task: str = typer.Option(..., help=TASK_HELP + "."),
    answers: Path = typer.Option(..., help="JSONL with one {\"id\", \"completion\"} per line."),
    out: Optional[Path] = typer.Option(None, help="Write per-item results (id, prediction, gold, correct) here."),
    set_: list[str] = typer.Option([], "--set", metavar="task.KEY=VALUE",
                                   help="A task setting (repeatable), e.g. task.extract=after:####."),
) -> None:
    """Grade completions produced by any tool with the task's grader (code runs in the sandbox)."""
    from ttscale.spec import task_settings
    from ttscale.tasks.grade import grade_command

    with user_errors():
        settings = task_settings(set_)
    raise typer.Exit(grade_command(task, answers, out, settings))


@app.command(cls=_Command)
def strategies() -> None:
    """List generators, searches and named presets with their settings (defaults after presets)."""
    from rich.table import Table

    from ttscale.search import SEARCHES
    from ttscale.spec import GENERATORS, named_presets, parse_spec, resolve_settings

    table = Table("component", "kind", "settings")
    for name, kind in [("sample", "shared sampling"), ("task", "task settings"), *((g, "generator") for g in GENERATORS),
                       *((s, "search") for s in SEARCHES)]:
        settings = resolve_settings(parse_spec(name if name in (*GENERATORS, *SEARCHES) else "greedy")[0])[name]
        table.add_row(name, kind, "\n".join(f"{name}.{k} = {v!r}" for k, v in settings.__dict__.items()) or "-")
    for name, spec in named_presets().items():             # a preset: its spec, then what it sets over the defaults
        tables = parse_spec(name)[1]
        lines = [f"{section}.{k} = {v!r}" for section, values in tables.items() for k, v in values.items()]
        table.add_row(name, f"preset of {spec}", "\n".join(lines) or "-")
    Console().print(table)


@app.command(cls=_Command)
def curve(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with records.jsonl and summary.json)."),
    x: str = typer.Option("tokens", help="x axis: tokens (all token-passes) | flops | seconds, mean per problem."),
    out: Path = typer.Option(Path("curve.png"), help="Plot file; .png, .svg and .csv are written beside it."),
) -> None:
    """Accuracy against compute: n = 1, 2, 4, ... N from each pooled run, points for single-answer runs."""
    from ttscale.curves import write_curve

    with user_errors():
        points = write_curve(runs, out, x)
    for p in points:
        typer.echo(f"{p.label:24s} n={p.n:<3d} {x}={p.x:.4g} accuracy={p.accuracy:.3f} [{p.low:.3f}, {p.high:.3f}]")
    typer.echo(f"wrote {out.with_suffix('.png')}, {out.with_suffix('.svg')}, {out.with_suffix('.csv')}")


@app.command(cls=_Command)
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories to compare."),
    markdown: Optional[Path] = typer.Option(None, help="Also write the table as Markdown to this file."),
) -> None:
    """Compare runs: accuracy with its 95% CI, compute and time per problem."""
    from rich.table import Column, Table

    from ttscale.report import COLUMNS, markdown as to_markdown, report_rows
    from ttscale.rundir import check_writable, write_text

    with user_errors():
        if markdown:
            check_writable(markdown, "--markdown")
        rows = report_rows(runs)
    table = Table(*(Column(c, overflow="fold") for c in COLUMNS))   # narrow terminals wrap cells, cut nothing
    for row in rows:
        table.add_row(*(str(row[c]) for c in COLUMNS))
    Console(width=None if sys.stdout.isatty() else 200).print(table)     # a pipe or a file gets the whole table
    if markdown:
        with user_errors():
            write_text(markdown, to_markdown(rows), "--markdown")


@app.command(cls=_Command)
def compare(
    baseline: Path = typer.Argument(..., help="Run directory of the baseline."),
    other: Path = typer.Argument(..., help="Run directory compared with it, on the same problems."),
) -> None:
    """Paired comparison of two runs: wins, losses and the exact McNemar p-value over shared problems."""
    from ttscale.report import paired

    with user_errors():
        r = paired(baseline, other)
    print(f"{other.name} vs {baseline.name} on {r['problems']} problems: accuracy {r['accuracy'][1]:.3f} vs "
          f"{r['accuracy'][0]:.3f}; {r['wins']} wins, {r['losses']} losses, {r['ties']} ties; "
          f"exact McNemar p = {r['p']:.3g}")


@app.command(cls=_Command)
def models(model: str = typer.Argument(..., help="Hub id, local directory, or demo (the bundled model).")) -> None:
    """Describe an MoE model from its config: family, MoE layers, experts, top-k, parameters, reroute support."""
    from ttscale.backends.hf import describe_model

    with user_errors():
        info, problem = describe_model(model)
    if info is None:
        typer.echo(f"reroute: unsupported: {problem}")
        raise typer.Exit(1)
    typer.echo(f"family:        {info.family}\n"
               f"layers:        {info.n_layers} ({len(info.moe_layers)} MoE: {list(info.moe_layers)})\n"
               f"experts:       {info.n_experts}, top-{info.top_k}\n"
               f"parameters:    {info.total_params:,} total, {info.active_params:,} active per token\n"
               f"reroute:       supported")


@app.command(cls=_Command)
def bench(
    shape: str = typer.Option("tiny", help="olmoe-1b-7b | qwen1.5-moe-a2.7b | deepseek-v2-lite | tiny."),
    model: Optional[str] = typer.Option(None, help="Use this hub id's or directory's config instead of a shape."),
    layers: Optional[int] = typer.Option(None, help="Keep only this many decoder layers."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda when available)."),
    dtype: Optional[str] = typer.Option(None, help="Default: bf16 on GPU, fp32 on CPU."),
    decode: str = typer.Option("auto", help=DECODE_HELP),
    batches: str = typer.Option("1,8,32", help="Decode batch sizes, comma-separated."),
    prompt_tokens: int = typer.Option(512, help="Context length of the prefill and adaptation measurements."),
    new_tokens: int = typer.Option(512, help="Output length of the strategy comparisons."),
    decode_tokens: int = typer.Option(64, help="Tokens per decode-speed measurement."),
    repeats: int = typer.Option(3, help="Timed repeats (median) after one warm-up."),
    throughput: bool = typer.Option(False, "--throughput", help="Instead: problems/s of --strategies on --task "
                                    "with one problem in flight against --concurrency auto (--model: the model "
                                    "to load, default the bundled demo MoE)."),
    task: str = typer.Option("demo", help="--throughput: the task."),
    problems: int = typer.Option(64, help="--throughput: problems solved per pass."),
    strategies: str = typer.Option("greedy,sc@8,reroute+sc@8", help="--throughput: strategies, comma-separated."),
    batch_size: int = typer.Option(32, help="--throughput: branches per forward batch."),
    out: Optional[Path] = typer.Option(None, help="Write the results as JSON here."),
) -> None:
    """Measure decode speed against the memory-bandwidth floor, adaptation cost and rerouting overhead
    (or, with --throughput, problems per second with many problems in flight)."""
    import json

    from rich.table import Table

    from ttscale.bench import BenchConfig, run_bench
    from ttscale.rundir import check_writable, write_text

    if throughput:
        return _throughput(model, task, problems, strategies, batch_size, device, dtype, decode, out)
    with user_errors():
        if out:
            check_writable(out, "--out")
        sizes = tuple(int(b) for b in batches.split(","))
        result = run_bench(BenchConfig(shape=shape, model=model, layers=layers, device=device, dtype=dtype,
                                       decode=decode, batches=sizes, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                       decode_tokens=decode_tokens, repeats=repeats))
    table = Table("measurement", "value", title=f"{result['model']['family']} shape {model or shape} on "
                  f"{result['device']} ({result['model']['active_params']:,} active params, "
                  f"{result['decode_mode']} decode, {result['experts']} experts)")
    table.add_row("copy bandwidth", f"{result['copy_bandwidth_gb_s']:.1f} GB/s")
    table.add_row(f"prefill ({prompt_tokens} tokens)", f"{result['prefill_tok_s']:.0f} tok/s")
    for d in result["decode"]:
        table.add_row(f"decode, batch {d['batch']}", f"{d['tok_s']:.0f} tok/s = {d['tok_s'] / d['floor_tok_s']:.1%} "
                      f"of the {d['floor_tok_s']:.0f} tok/s floor")
    for r in result["adapt_savings"]:
        detail = (f", max delta difference {r['max_delta_diff']:.1e}" if "max_delta_diff" in r
                  else f", {r['steps_run']} of 5 steps")
        table.add_row(f"adaptation phase, select={r['select']} (lowest layer {r['lowest_layer']}): {r['saving']}",
                      f"{r['seconds'] * 1000:.1f} ms = {r['speedup']:.2f}x{detail}")
    for batch in (1, 8):
        table.add_row(f"adaptation step, batch {batch}, {prompt_tokens} tokens",
                      f"{result[f'adapt_step_s_batch{batch}'] * 1000:.1f} ms")
    for name, seconds in result["strategy_seconds"].items():
        table.add_row(f"{name}, {new_tokens} new tokens", f"{seconds:.2f} s")
    table.add_row("reroute / greedy", f"{result['reroute_over_greedy']:.2f}x")
    table.add_row("reroute+sc@8 / sc@8", f"{result['reroute_sc_over_sc']:.2f}x")
    Console().print(table)
    if out:
        with user_errors():
            write_text(out, json.dumps(result, indent=2) + "\n", "--out")


if __name__ == "__main__":
    app()
