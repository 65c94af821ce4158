"""SGLang for real on CPU: the engine checks and the server checks, each module in a pytest process of
its own in the SGLang environment (tests/sglang_env.py; required in CI)."""

from pathlib import Path

from sglang_env import rerun_module

HERE = Path(__file__).parent


def test_engine_checks_on_cpu():
    rerun_module(str(HERE / "sglang_engine_checks.py"), timeout=900)


def test_server_checks_on_cpu():
    rerun_module(str(HERE / "sglang_server_checks.py"), timeout=900)
