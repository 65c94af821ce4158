"""The SGLang backend through a real `python -m sglang.launch_server` on CPU (`--url`), bundled demo model.

Run by tests/test_sglang_cpu.py in a process of its own in the SGLang environment; the module starts
one server on 127.0.0.1 (the command docs/sglang.md gives) and drives it with `ttscale run --backend
sglang --url`, comparing records with the hf backend's, as tests/sglang_engine_checks.py does in-process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from sglang_engine_checks import (GREEDY, OVERRIDES, PROBLEMS, STRATEGIES, _records, assert_greedy_parity,
                                  check_filled, compare_records, parity_prompts, samples)
from ttscale.backends.base import PromptTooLong
from ttscale.backends.sampling import Sampling
from ttscale.backends.sglang_http import CPU_SERVER_ENV, server_command
from ttscale.demo import DEMO_MODEL, DEMO_TASK

SETTINGS = [arg for setting in OVERRIDES for arg in ("--set", setting)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, *server_command(str(DEMO_MODEL), port=port, cpu=True)],
                                  env={**os.environ, **CPU_SERVER_ENV}, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if server.poll() is not None:
                errors = [line for line in log.read_text().splitlines() if "Error" in line]
                pytest.fail(f"the server exited ({server.returncode}): {errors[-3:]}")
            try:
                if httpx.get(f"{address}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not come up in 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield address
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def backends(url):
    from ttscale.backends.hf import HFBackend
    from ttscale.backends.sglang_http import SGLangHTTPBackend

    client = SGLangHTTPBackend(str(DEMO_MODEL), url, connections=16)
    yield client, HFBackend(str(DEMO_MODEL), device="cpu", decode="dynamic")
    client.close()


def test_zero_deltas_match_the_hf_backend_over_http(backends):
    sgl, hf = backends
    # the answer line: past it the model writes a next question of random characters, near-ties in bf16
    ours = sgl.extend([sgl.new_branch(m) for m in parity_prompts()], Sampling(max_new_tokens=32), stop=("\n",))
    assert_greedy_parity(ours, hf)


def test_a_delta_changes_only_its_own_request_over_http(backends):
    sgl, _ = backends
    sampling = Sampling(max_new_tokens=16)            # greedy, as in sglang_engine_checks.py
    message = [{"role": "user", "content": "7 + 5 ="}]
    plain = sgl.extend([sgl.new_branch(message, seed=i) for i in range(3)], sampling)
    branches = [sgl.new_branch(message, seed=i) for i in range(3)]
    branches[1].delta = sgl.zero_state()
    branches[1].delta.delta[:, 2:4] = 8.0
    pushed = sgl.extend(branches, sampling)
    assert pushed[0].generated == plain[0].generated and pushed[2].generated == plain[2].generated
    assert pushed[1].logprobs[:len(plain[1].logprobs)] != plain[1].logprobs


def test_the_context_limit_over_http(backends):
    sgl, _ = backends
    limit = sgl.info.context_length
    b = sgl.new_branch([{"role": "user", "content": "7"}])
    b.tokens = b.tokens[:1] * (limit - 4)
    b.prompt_len = len(b.tokens)
    sgl.extend([b], Sampling(max_new_tokens=64))
    assert b.finished and (b.finish_reason == "eos" or len(b.tokens) == limit - 1)
    long = sgl.new_branch([{"role": "user", "content": "7"}])
    long.tokens = long.tokens[:1] * limit
    long.prompt_len = limit
    with pytest.raises(PromptTooLong):
        sgl.extend([long], Sampling(max_new_tokens=8))


def _run(out, *args):
    return subprocess.run([sys.executable, "-m", "ttscale.cli", "run", "--task", DEMO_TASK, "--limit", str(PROBLEMS),
                           "--out", str(out), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_runs_through_the_server(url, tmp_path):
    """`ttscale run --backend sglang --url` end to end, its records against `--backend hf`'s."""
    ours = _run(tmp_path / "sglang", "--strategy", "greedy", "--backend", "sglang", "--url", url)
    assert ours.returncode == 0, ours.stderr[-3000:]
    theirs = _run(tmp_path / "hf", "--strategy", "greedy", "--device", "cpu")
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    compare_records(_records(tmp_path / "sglang"), _records(tmp_path / "hf"), "greedy")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_through_the_server(backends, tmp_path, strategy):
    """Each strategy in-process through the HTTP client; greedy ones against the hf backend's records
    (sampled ones draw from SGLang's sampler: their ledgers are checked). reroute+sc adapts by SPSA."""
    from ttscale.runs import RunConfig, execute

    sgl, hf = backends
    overrides = OVERRIDES + (["reroute.adapter=spsa"] if strategy == "reroute+sc" else [])
    runs = {}
    for name, backend in [("sglang", sgl)] + ([("hf", hf)] if strategy in GREEDY else []):
        execute(RunConfig(model=str(DEMO_MODEL), task=DEMO_TASK, strategy=strategy, n=samples(strategy),
                          limit=PROBLEMS, backend=name, overrides=overrides), tmp_path / name, backend=backend)
        runs[name] = _records(tmp_path / name)
    if strategy in GREEDY:
        compare_records(runs["sglang"], runs["hf"], strategy)
    for record in runs["sglang"].values():
        check_filled(record, strategy)
    if strategy == "reroute+sc":
        config = json.loads((tmp_path / "sglang" / "summary.json").read_text())["config"]
        assert config["settings"]["reroute"]["adapter"] == "spsa"
        assert all(c["entropy_before"] is None for r in runs["sglang"].values() for s in r["samples"]
                   for c in s["routing"]["cycles"])                # SPSA: no router probabilities


def test_an_unreachable_server_is_a_one_line_error(tmp_path):
    done = _run(tmp_path / "x", "--backend", "sglang", "--url", f"http://127.0.0.1:{_free_port()}")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: cannot reach the sglang server at http://127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1
