"""What a new user meets in the first hour (issue 15): filesystem errors, names, messages, help, offline hubs."""

import json
import os
import subprocess
import sys
import time

import pytest
from cli_errors import one_line_error
from typer.testing import CliRunner

from ttscale.cli import app
from ttscale.demo import DEMO_MODEL

ROOT = os.path.join(os.path.dirname(__file__), "..")


def invoke(*args):
    """The CLI in-process (no interpreter start-up): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A finished greedy run of two demo problems."""
    out = tmp_path_factory.mktemp("demo") / "run"
    code, _, err = invoke("run", "--limit", 2, "--out", out, "--set", "sample.max_new_tokens=8")
    assert code == 0, err
    return out


# --- item 1: filesystem errors are one line, exit 2, nothing written ---------------------------

def test_run_out_at_a_file_under_a_file_or_unwritable_is_one_line(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    for out, needle in [(file, "is a file"), (file / "sub", "cannot write --out"), ("/proc/ttscale-x", "cannot write --out")]:
        code, _, err = invoke("run", "--limit", 1, "--out", out)
        one_line_error(code, err, needle, str(out))
    assert file.read_text() == "keep me" and not os.path.exists("/proc/ttscale-x")


def test_report_curve_grade_outputs_that_cannot_be_written(demo_run, tmp_path):
    file = tmp_path / "file"
    file.write_text("keep me")
    cases = [
        (["report", demo_run, "--markdown", tmp_path], "--markdown"),              # a directory
        (["report", demo_run, "--markdown", file / "t.md"], "--markdown"),
        (["curve", demo_run, "--out", file / "c.png"], "--out"),
        (["grade", "--task", "demo", "--answers", demo_run / "records.jsonl", "--out", tmp_path], "--out"),
        (["report", tmp_path / "missing"], "no summary.json"),
    ]
    for args, needle in cases:
        code, out, err = invoke(*args)
        one_line_error(code, err, needle)
        assert "│" not in out, "nothing printed as if it worked"
    assert file.read_text() == "keep me"


def test_corrupt_summary_is_named(demo_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    code, _, err = invoke("report", broken)
    one_line_error(code, err, "summary.json", "not valid JSON")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_dir_is_one_line(demo_run, tmp_path):
    import shutil

    copy = tmp_path / "ro"
    shutil.copytree(demo_run, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    os.chmod(copy, 0o500)
    try:
        code, _, err = invoke("run", "--limit", 2, "--out", copy, "--set", "sample.max_new_tokens=8")
        one_line_error(code, err, "cannot write --out")
    finally:
        os.chmod(copy, 0o700)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


# --- item 7: the bundled model is named `demo` -------------------------------------------------

def test_bundled_model_is_named_demo_everywhere(demo_run, tmp_path):
    config = json.loads((demo_run / "config.json").read_text())
    summary = json.loads((demo_run / "summary.json").read_text())
    assert config["model"] == summary["config"]["model"] == "demo"
    code, out, err = invoke("models", "demo")
    assert code == 0 and "family:        olmoe" in out, err
    code, out, _ = invoke("report", demo_run)
    assert "demo" in out
    # a run recorded under the old absolute path (another checkout) resumes under the name
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("records.jsonl", "summary.json"):
        (moved / name).write_bytes((demo_run / name).read_bytes())
    (moved / "config.json").write_text(json.dumps({**config, "model": "/elsewhere/ttscale/demo/model"}))
    code, _, err = invoke("run", "--model", DEMO_MODEL, "--limit", 2, "--out", moved, "--set", "sample.max_new_tokens=8")
    assert code == 0, err
    assert json.loads((moved / "config.json").read_text())["model"] == "demo"


# --- item 8: report and curve cover the same problems ------------------------------------------

def test_report_and_curve_agree_after_a_smaller_limit(tmp_path):
    from ttscale.curves import run_points
    from ttscale.report import report_rows

    out = tmp_path / "run"
    args = ("run", "--out", out, "--set", "sample.max_new_tokens=8")
    assert invoke(*args, "--limit", 3)[0] == 0
    assert invoke(*args, "--limit", 2)[0] == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 3         # kept for a later resume
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    (point,) = run_points(out, "tokens")
    (row,) = report_rows([out])
    assert row["problems"] == 2
    assert point.accuracy == pytest.approx(sum(r["correct"] for r in records[:2]) / 2)
    assert point.x == pytest.approx(sum(r["compute"]["prefill_tokens"] + r["compute"]["generated_tokens"]
                                        for r in records[:2]) / 2)


# --- item 11: messages name what the user wrote ------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--strategy", "reroute", "--n", "8"], "--n 8: reroute draws one sample per problem"),
    (["--strategy", "sc", "--set", "sc.temperature=-1"], "invalid setting sc.temperature=-1"),
    (["--set", "sample.top_p=0"], "invalid setting sample.top_p=0"),
    (["--strategy", "bon", "--set", "bon.top_p=2"], "invalid setting bon.top_p=2"),
])
def test_messages_name_the_setting(tmp_path, extra, message):
    code, _, err = invoke("run", "--out", tmp_path / "x", *extra)
    one_line_error(code, err, message)
    assert "greedy draws" not in err and "Sampling(" not in err
    assert not (tmp_path / "x").exists()


# --- item 12: docs and CLI in step -------------------------------------------------------------

def test_help_texts_keep_brackets_and_name_every_task():
    code, out, _ = invoke("run", "--help")
    assert code == 0 and "ttscale[sglang]" in out
    code, out, _ = invoke("grade", "--help")
    assert code == 0 and "demo-shift" in " ".join(out.split())


def test_every_command_is_in_docs_cli():
    docs = open(os.path.join(ROOT, "docs", "cli.md")).read()
    for command in app.registered_commands:
        assert f"## `ttscale {command.name or command.callback.__name__}" in docs


def test_python_dash_m_ttscale():
    done = subprocess.run([sys.executable, "-m", "ttscale", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Usage: ttscale" in done.stdout, done.stderr


def test_unknown_jsonl_keys_are_warned(tmp_path, caplog):
    from ttscale.tasks.jsonl import JsonlTask

    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "prompt": "1+1?", "Answer": "2"}\n{"id": "b", "prompt": "2+2?", "answer": "4"}\n')
    problems = JsonlTask(path).load()
    assert [p.answer for p in problems] == [None, "4"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "mine.jsonl:1" in warning and "'Answer'" in warning and "did you mean 'answer'" in warning


# --- item 6: no network costs seconds, not a minute of retries ---------------------------------

def test_hub_id_without_network_fails_fast_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"           # nothing listens there: no network
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ttscale.cli", "models", "someone/no-such-moe"], capture_output=True,
                          text=True, timeout=300, env=env)
    elapsed = time.monotonic() - start
    one_line_error(done.returncode, done.stderr, "unreachable", "someone/no-such-moe")
    assert "Retry" not in done.stderr and elapsed < 60
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-m", "ttscale.cli", "models", "someone/no-such-moe"], capture_output=True,
                          text=True, timeout=300, env=env)
    one_line_error(done.returncode, done.stderr, "HF_HUB_OFFLINE is set")


# --- item 10: third-party warnings stay out of the progress bar --------------------------------

def test_warnings_during_a_run_are_shown_once_after_the_bar(capsys, tmp_path):
    import warnings

    from ttscale.cli import progress_bar

    with progress_bar("x", tmp_path)(2, 0) as advance:
        for _ in range(2):
            warnings.warn("old api", FutureWarning)
            advance({"correct": True}, 0)
    err = capsys.readouterr().err
    assert err.count("FutureWarning: old api") == 1 and err.splitlines()[-1].startswith("warning: ")


# --- help screens, version, presets ------------------------------------------------------------

def test_version_and_help_screens_without_bool_hints():
    from ttscale import __version__

    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"ttscale {__version__}"
    for command in ([], ["run"], ["serve"], ["report"], ["bench"]):
        code, out, _ = invoke(*command, "--help")
        assert code == 0 and "<bool>" not in out and "--help" in out, out
    assert "SECTION.KEY=VALUE" in invoke("run", "--help")[1]


def test_strategies_shows_what_a_preset_sets():
    code, out, _ = invoke("strategies")
    row = next(line for line in out.splitlines() if "reroute-testbed" in line)
    assert code == 0 and "preset of reroute" in row and "reroute.lr = 0.2" in row
    assert "reroute.steps = 20" in out and "task.extract = ''" in out
