"""A plain (non-editable) install keeps what the package reads at run time: presets, fixtures, demo model."""

import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_wheel_ships_presets_fixtures_and_the_demo_model(tmp_path):
    source = tmp_path / "src"
    for name in ("ttscale", "strategies"):
        shutil.copytree(os.path.join(ROOT, name), source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("ttscale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {f"ttscale/presets/{p}" for p in os.listdir(os.path.join(ROOT, "strategies")) if p.endswith(".toml")}
    assert presets and presets <= names
    assert {f"ttscale/tasks/fixtures/{t}.jsonl" for t in ("gsm8k", "math500", "humaneval", "mbpp", "mmlu", "arc")} <= names
    assert "ttscale/demo/model/model.safetensors" in names and "ttscale/__main__.py" in names
    modules = {os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
               for d, _, files in os.walk(os.path.join(ROOT, "ttscale")) for f in files if f.endswith(".py")}
    assert modules <= names
    # installed from the wheel alone (no checkout on the path), the presets and fixtures are found
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import ttscale, sys; from ttscale.spec import named_presets; from ttscale.tasks.sources import fixtures;"
             "assert ttscale.__file__.startswith(sys.argv[1]), ttscale.__file__;"
             "print(named_presets()['paper-sc'], len(fixtures('gsm8k')))")
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-c", probe, str(site)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reroute+sc", "20"]
