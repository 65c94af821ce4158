"""`ttscale serve`: the official openai client against a server subprocess on localhost (one per module),
on the bundled demo model with small max_tokens."""

import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from serve_process import ROOT, cli_message, env, serving

from ttscale.demo.task import DemoTask
from ttscale.demo import DEMO_MODEL
from ttscale.runs import RunConfig, execute

KEY = "test-key"
PROMPT = "Q: add 695 60\nA: 5+0=5; 9+6=15 c1; 6+0+1=7; = 755\nQ: add 7177 38\nA:"
LIMITS = ["--max-n", "8", "--max-tokens", "64", "--max-body", "65536", "--max-queue", "40"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, cli_runs):
    with serving(tmp_path_factory.mktemp("serve"), "--api-key", KEY, *LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[1]}/v1", api_key=KEY, max_retries=0, timeout=120)


CHOSEN = ("reroute+sc", 4, 5, ["sample.max_new_tokens=12", "reroute.steps=2"])    # strategy, n, seed, settings
PROMPTS = [p.prompt for p in DemoTask().load(32)]
MANY = ("greedy", 1, 0, ["sample.max_new_tokens=24"])


class CliRun:
    """`ttscale run --task FILE.jsonl` on prompts, started at once (it runs beside the server's start)."""

    def __init__(self, tmp_path, prompts, strategy, n, seed, sets):
        task = tmp_path / "prompts.jsonl"
        task.write_text("".join(json.dumps({"id": str(i), "prompt": p}) + "\n" for i, p in enumerate(prompts)))
        self.out, self.count = tmp_path / "run", len(prompts)
        sets = [x for item in sets for x in ("--set", item)]
        self.proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", "run", "--task", str(task), "--strategy",
                                      strategy, "--n", str(n), "--seed", str(seed), *sets, "--out", str(self.out)],
                                     env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def records(self):
        _, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, err
        records = {r["id"]: r for r in map(json.loads, (self.out / "records.jsonl").read_text().splitlines())}
        return [records[str(i)] for i in range(self.count)]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    return {"chosen": CliRun(tmp_path_factory.mktemp("chosen"), [PROMPT], *CHOSEN)}


def _error(e):
    """The OpenAI-style error object of a failed call."""
    return e.body if "message" in (e.body or {}) else e.body["error"]


def test_chat_reroute_sc_answers_as_ttscale_run(client, cli_runs):
    response = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": PROMPT}], max_tokens=12, seed=5,
        extra_body={"ttscale": {"strategy": "reroute+sc", "n": 4, "set": {"reroute.steps": 2}}})
    assert CHOSEN == ("reroute+sc", 4, 5, ["sample.max_new_tokens=12", "reroute.steps=2"])
    ext = response.model_extra["ttscale"]
    [record] = cli_runs["chosen"].records()
    assert ext["prediction"] == record["prediction"] and ext["chosen"] == record["chosen"]
    assert response.choices[0].message.content == record["samples"][record["chosen"]]["text"]
    assert [s["answer"] for s in ext["samples"]] == [s["answer"] for s in record["samples"]]
    assert ext["strategy"] == "reroute+sc" and ext["n"] == 4 and len(ext["samples"]) == 4
    assert ext["settings"]["reroute"]["steps"] == 2
    assert sum(ext["votes"].values()) == sum(s["key"] is not None for s in ext["samples"])
    assert ext["routing"] == record["samples"][record["chosen"]]["routing"] and ext["routing"]["layers"]
    compute = ext["compute"]
    assert {k: v for k, v in compute.items() if k != "seconds"} == \
        {k: v for k, v in record["compute"].items() if k != "seconds"}
    assert set(compute["seconds"]) >= {"prefill", "decode", "adapt", "total", "wall"}
    assert response.usage.completion_tokens == compute["generated_tokens"] == sum(s["tokens"] for s in ext["samples"])
    assert response.usage.prompt_tokens == (compute["prefill_tokens"] + compute["adapt_token_passes"]["forward"]
                                            + compute["score_tokens"] + compute["reward_tokens"])


def test_completion_and_model_names(client):
    chat = client.chat.completions.create(model="greedy", messages=[{"role": "user", "content": PROMPT}], max_tokens=8)
    completion = client.completions.create(model="greedy", prompt=PROMPT, max_tokens=8)
    assert completion.choices[0].text == chat.choices[0].message.content
    assert completion.model_extra["ttscale"]["strategy"] == "greedy"
    two = client.chat.completions.create(model="sc@3", messages=[{"role": "user", "content": PROMPT}], max_tokens=8, n=2,
                                         temperature=1.0, stop=["\n"])
    ext = two.model_extra["ttscale"]
    assert ext["n"] == 3 and len(ext["samples"]) == 3 and ext["settings"]["sc"]["temperature"] == 1.0
    assert len(two.choices) == 2 and all("\n" not in c.message.content for c in two.choices)
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "demo" and {"greedy", "sc", "reroute+sc", "reroute+beam"} <= set(ids)


def test_streaming(client):
    kwargs = dict(model="reroute+sc@2", messages=[{"role": "user", "content": PROMPT}], max_tokens=8, seed=1)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert any("ttscale" in (c.model_extra or {}) for c in chunks)
    pieces = list(client.completions.create(model="greedy", prompt=PROMPT, max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == client.completions.create(
        model="greedy", prompt=PROMPT, max_tokens=8).choices[0].text


def _api_run(tmp_path, prompts, strategy, n, seed, sets):
    """What `ttscale run --task FILE.jsonl` writes, through its Python API (in this process: cheaper)."""
    task = tmp_path / "prompts.jsonl"
    task.write_text("".join(json.dumps({"id": str(i), "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    execute(RunConfig(model=str(DEMO_MODEL), task=str(task), strategy=strategy, n=n, seed=seed, overrides=sets),
            tmp_path / "run")
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "records.jsonl").read_text().splitlines())}
    return [records[str(i)] for i in range(len(prompts))]


def test_32_concurrent_requests_answer_as_ttscale_run(client, tmp_path):
    prompts = PROMPTS
    ask = lambda p: client.chat.completions.create(model="greedy", messages=[{"role": "user", "content": p}],  # noqa: E731
                                                   max_tokens=24)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, prompts))
    records = _api_run(tmp_path, PROMPTS, *MANY)
    assert [a.choices[0].message.content for a in answers] == [r["samples"][0]["text"] for r in records]
    assert [a.model_extra["ttscale"]["prediction"] for a in answers] == [r["prediction"] for r in records]


def _tokens(text):
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(DEMO_MODEL)(text).input_ids)


LONG, NEARLY = "Q: add 1 2\n" * 200, "Q: add 1 2\n" * 185
BAD = [
    ({"ttscale": {"strategy": "reroute+scc"}}, cli_message(strategy="reroute+scc")),
    ({"model": "nonsense@2"}, cli_message(strategy="nonsense", n=2)),
    ({"ttscale": {"strategy": "sc", "set": {"reroute.lrr": 0.1}}},          # named as the request gave it
     cli_message(strategy="sc", overrides=["reroute.lrr=0.1"]).replace("in --set", "in ttscale.set")),
    ({"ttscale": {"strategy": "sc", "set": {"sc.vote": "loud"}}}, cli_message(strategy="sc", overrides=["sc.vote=loud"])),
    ({"ttscale": {"n": 0}}, "ttscale.n must be a positive integer, got 0"),
    ({"max_tokens": 0}, "max_tokens must be a positive integer, got 0"),
    ({"max_tokens": -3}, "max_tokens must be a positive integer, got -3"),
    ({"max_tokens": "ten"}, 'max_tokens must be an integer, got "ten"'),
    ({"max_tokens": 65}, "max_tokens 65 is over this server's limit of 64 (--max-tokens)"),
    ({"temperature": "hot"}, 'temperature must be a number, got "hot"'),
    ({"model": "sc@9"}, "n 9 is over this server's limit of 8 (--max-n)"),
    ({"model": "reroute", "n": 2}, cli_message(strategy="reroute", n=2)),
    ({"model": "greedy", "n": 2}, "n=2 choices asked, but strategy greedy draws 1 sample(s); ask for greedy@2 (or ttscale.n)"),
    ({"messages": []}, "messages must be a non-empty list of {role, content} objects"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string or a list of text parts"),
    ({"stop": 5}, "stop must be a non-empty string or a list of them"),
    ({"messages": [{"role": "user", "content": LONG}], "max_tokens": 4},
     f"prompt of {_tokens(LONG)} tokens is longer than the model's context (2048 tokens, generation included)"),
    ({"messages": [{"role": "user", "content": NEARLY}], "max_tokens": 64},
     f"prompt of {_tokens(NEARLY)} tokens plus max_tokens 64 is longer than the model's context (2048 tokens)"),
]


@pytest.mark.parametrize("fields, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_400_and_the_cli_message(server, fields, message):
    body = {"model": "demo", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4, **fields}
    r = httpx.post(f"{server[1]}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == message
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_the_cli_gives_the_same_message_for_a_prompt_too_long(tmp_path):
    record, = _api_run(tmp_path, [LONG], "greedy", 1, 0, [])     # the problem fails alone, in its record
    assert record["error"] == f"PromptTooLong: problem 0: {BAD[-2][1]}"   # the CLI also names the problem


def test_errors_auth_and_limits_then_a_good_request(server, client):
    url = server[1]
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("request body is not valid JSON")
    r = httpx.post(f"{url}/v1/completions", json={"model": "demo", "prompt": "x" * 70000}, headers=auth)
    assert r.status_code == 413 and "limit of 65536 bytes" in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    assert wrong.value.status_code == 401 and "API key" in _error(wrong.value)["message"]
    for headers in ({}, {"Authorization": "Basic dGVzdC1rZXk="}):
        for route in ("/v1/models", "/tokenizer_info", "/v1/tokenizer_info"):
            r = httpx.get(f"{url}{route}", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.post(f"{url}/tokenize", json={"prompt": "Q"}).status_code == 401
    assert httpx.post(f"{url}/tokenize", json={"prompt": "Q"}, headers=auth).json()["tokens"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200             # no key needed
    r = httpx.get(f"{url}/v1/nothing", headers=auth)
    assert r.status_code == 404 and "error" in r.json()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": PROMPT}], max_tokens=0)
    assert _error(bad.value)["message"] == "max_tokens must be a positive integer, got 0"
    good = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": PROMPT}], max_tokens=4)
    assert good.choices[0].message.content


def test_a_full_queue_gets_429_and_gone_clients_are_dropped(server, client):
    """--max-queue 40: of 48 slow requests at once some get 429; the others' clients give up after a
    second, which cancels them; the server then has nothing pending and answers a good request."""
    url = server[1]
    body = {"model": "reroute+sc@8", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}

    def ask(_):
        try:
            return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                              timeout=1.5).status_code
        except httpx.TimeoutException:
            return "gone"

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        statuses = list(pool.map(ask, range(48)))
    assert statuses.count(429) >= 1 and set(statuses) <= {429, 200, "gone"}, statuses
    assert statuses.count("gone") >= 1, statuses
    deadline = time.time() + 60
    while httpx.get(f"{url}/health").json()["pending"]:
        assert time.time() < deadline, "cancelled requests were not dropped"
        time.sleep(0.2)
    r = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": "greedy", "max_tokens": 4},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 429 or r.status_code == 200
    assert r.status_code == 200, r.text


def test_sigterm_finishes_requests_in_flight_then_exits(server, client):
    proc, url, log = server
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=client.chat.completions.create(
        model="reroute+sc@4", messages=[{"role": "user", "content": PROMPT}], max_tokens=48)))
    thread.start()
    deadline = time.time() + 30
    while not httpx.get(f"{url}/health").json()["pending"]:
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    thread.join(120)
    assert result["r"].choices[0].message.content
    assert proc.wait(60) == 0, log.read_text()[-2000:]


def test_the_server_says_what_it_serves(server):
    assert "serving demo (hf on cpu, float32) at http://127.0.0.1:" in server[2].read_text()


SERVE_PROBE = """
import json, sys
from typer.testing import CliRunner
from ttscale.cli import app
r = CliRunner().invoke(app, json.loads(sys.argv[1]))
print(json.dumps([r.exit_code, r.stderr.strip(), "torch" in sys.modules]))
"""


@pytest.mark.parametrize("case", ["busy port", "kv=keep"])
def test_serve_refuses_at_start_before_loading_anything(case):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = {"busy port": ["serve", "--port", str(busy.getsockname()[1])],
                "kv=keep": ["serve", "--set", "reroute.kv=keep"]}[case]
        done = subprocess.run([sys.executable, "-c", SERVE_PROBE, json.dumps(args)], capture_output=True, text=True,
                              env=env(), timeout=120)
    code, err, torch_loaded = json.loads(done.stdout)
    assert code == 2 and len(err.splitlines()) == 1 and not torch_loaded, err
    assert {"busy port": "cannot listen on 127.0.0.1:", "kv=keep": "reroute.kv=keep runs one problem"}[case] in err
