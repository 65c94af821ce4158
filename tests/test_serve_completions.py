"""`ttscale serve` as engines serve completions, against a server subprocess on the demo model: every
prompt form continued as raw text, echo and log-probs in the legacy shape equal to the backend's own
scores, rerouted scoring fitted on the context only, chat log-probs, the tokenizer routes, the flat
strategy fields, live streams, and one-line 400s for bad input."""

import json
import time

import httpx
import openai
import pytest
from serve_process import cli_message, serving

from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch
from ttscale.demo.task import DemoTask
from ttscale.runs import RunConfig

PROMPTS = [p.prompt for p in DemoTask().load(2)]
PROMPT = PROMPTS[0]
LIMITS = ["--max-n", "4", "--max-tokens", "200", "--max-logprobs", "5"]
LONG = "Q: add 1 2\n" * 200          # the demo tokenizer reads one token per character
TOLERANCE = 1e-4          # the server's batched fp32 forward against the test's own


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("serve"), *LIMITS) as (_, url, _):
        yield url


def post(url, route="/v1/completions", **body):
    r = httpx.post(f"{url}{route}", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def ids(backend, text):
    return backend.tokenizer(text).input_ids


def test_every_prompt_form_is_the_same_raw_continuation(url, demo_backend):
    tokens = ids(demo_backend, PROMPT)
    texts = [post(url, prompt=p, max_tokens=24)["choices"][0]["text"] for p in (PROMPT, [PROMPT], tokens, [tokens])]
    chat = post(url, "/v1/chat/completions", messages=[{"role": "user", "content": PROMPT}], max_tokens=24)
    assert texts == [chat["choices"][0]["message"]["content"]] * 4      # no chat template: the same tokens
    alone = [post(url, prompt=p, max_tokens=24) for p in PROMPTS]
    for several in ([*PROMPTS], [ids(demo_backend, p) for p in PROMPTS]):
        both = post(url, prompt=several, max_tokens=24)
        assert [c["index"] for c in both["choices"]] == [0, 1]
        assert [c["text"] for c in both["choices"]] == [a["choices"][0]["text"] for a in alone]
        assert [e["prediction"] for e in both["ttscale"]] == [a["ttscale"]["prediction"] for a in alone]
    sampled = post(url, prompt=PROMPTS, max_tokens=8, model="sc@2", n=2, temperature=1.0, seed=4)
    assert [c["index"] for c in sampled["choices"]] == [0, 1, 2, 3] and len(sampled["ttscale"]) == 2


def test_echo_and_logprobs_in_the_legacy_shape_are_the_backends_score(url, demo_backend):
    tokens = ids(demo_backend, PROMPT)
    # what lm-eval sends for a log-likelihood: token ids, echo, one generated token, top-1 alternatives
    r = post(url, prompt=[tokens], echo=True, logprobs=3, max_tokens=1, temperature=0)
    [choice] = r["choices"]
    [greedy] = demo_backend.extend([demo_backend.new_branch([{"role": "user", "content": PROMPT}])],
                                   Sampling(max_new_tokens=1))
    [ours] = demo_backend.score_top([Branch(tokens=greedy.tokens, prompt_len=1)], 3)
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(tokens) + 1 and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(ours.logprobs, abs=TOLERANCE)
    decode = lambda t: demo_backend.tokenizer.decode([t])  # noqa: E731
    assert lp["tokens"] == [decode(t) for t in greedy.tokens] and "".join(lp["tokens"]) == choice["text"]
    for token, value, alternatives, top in zip(greedy.tokens[1:], ours.logprobs, lp["top_logprobs"][1:], ours.top):
        assert alternatives == pytest.approx({**{decode(t): v for t, v in top}, decode(token): value}, abs=TOLERANCE)
    assert lp["text_offset"] == [sum(len(s) for s in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]

    only = post(url, prompt=PROMPT, echo=True, logprobs=0, max_tokens=0)            # the prompt alone
    [choice] = only["choices"]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length" and "samples" not in only["ttscale"]
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(ours.logprobs[:-1], abs=TOLERANCE)
    assert only["usage"]["prompt_tokens"] == only["ttscale"]["scoring"]["compute"]["score_tokens"] == len(tokens)

    generated = post(url, prompt=PROMPT, logprobs=2, max_tokens=16)                 # the generated tokens'
    sample, lp = generated["ttscale"]["samples"][0], generated["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == sample["tokens"] and all(len(t) <= 3 for t in lp["top_logprobs"])
    assert sum(lp["token_logprobs"]) == pytest.approx(sample["logprob"], abs=1e-3)   # as they were decoded
    assert "".join(lp["tokens"]).startswith(generated["choices"][0]["text"])


def test_chat_logprobs(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": PROMPT}], max_tokens=12,
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.model_extra["ttscale"]["samples"][0]["tokens"]
    assert "".join(c.token for c in content).startswith(r.choices[0].message.content)
    for c in content:
        assert len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob
        assert c.logprob <= c.top_logprobs[0].logprob + TOLERANCE and c.bytes == list(c.token.encode())


def test_rerouted_scoring_fits_the_deltas_on_the_context_only(url, demo_backend):
    context = ids(demo_backend, PROMPT)
    endings = [demo_backend.tokenizer(s, add_special_tokens=False).input_ids for s in (" 8+7=15 c1", " 1+1=2; = 7")]
    cfg = RunConfig(model="demo", task="demo", strategy="reroute", overrides=["reroute.steps=2"]).plan.settings["reroute"]
    fit = Branch(tokens=list(context), prompt_len=len(context))
    demo_backend.adapt([fit], cfg)
    asked = dict(model="reroute", echo=True, logprobs=0, max_tokens=0,
                 ttscale={"context_tokens": len(context), "set": {"reroute.steps": 2}})
    scores = []
    for ending in endings:
        r = post(url, prompt=[context + ending], **asked)
        scores.append(r["choices"][0]["logprobs"]["token_logprobs"][1:])
        [fitted] = demo_backend.score([Branch(tokens=context + ending, prompt_len=1, delta=fit.delta)])
        [plain] = demo_backend.score([Branch(tokens=context + ending, prompt_len=1)])
        assert scores[-1] == pytest.approx(fitted, abs=TOLERANCE)
        assert max(abs(a - b) for a, b in zip(fitted, plain)) > 1e-2                # the deltas changed the scores
        assert r["ttscale"]["scoring"]["context_tokens"] == len(context)
        assert r["ttscale"]["scoring"]["compute"]["adapt_token_passes"]["forward"] == 2 * len(context)
    n = len(context) - 1
    assert scores[0][:n] == pytest.approx(scores[1][:n], abs=TOLERANCE)     # the fit did not see the continuation
    r = httpx.post(f"{url}/v1/completions", json={**asked, "prompt": [context + endings[0]], "ttscale": {}})
    assert r.status_code == 400 and "echo under reroute would fit router deltas" in r.json()["error"]["message"]
    plain = post(url, prompt=PROMPT, model="reroute", logprobs=0, max_tokens=4, ttscale={"set": {"reroute.steps": 2}})
    assert plain["ttscale"]["scoring"]["context_tokens"] == len(context)   # generated tokens: fit on the prompt


def test_tokenizer_routes(url, demo_backend):
    messages = [{"role": "user", "content": PROMPT}]
    for prefix in ("", "/v1"):
        t = post(url, f"{prefix}/tokenize", prompt=PROMPT, return_token_strs=True)
        assert t["tokens"] == ids(demo_backend, PROMPT) and t["count"] == len(t["tokens"]) and t["max_model_len"] == 2048
        assert t["token_strs"] == demo_backend.tokenizer.convert_ids_to_tokens(t["tokens"])
        assert post(url, f"{prefix}/tokenize", messages=messages)["tokens"] == demo_backend.encode(messages)
        assert post(url, f"{prefix}/detokenize", tokens=t["tokens"]) == {"prompt": PROMPT}
        info = httpx.get(f"{url}{prefix}/tokenizer_info").json()
        assert info["eos_token"] == "<eos>" and info["model_max_length"] == 2048 and info["chat_template"] is None
    for route, body, message in [
        ("/detokenize", {"tokens": [3, 47]}, "tokens[1]: token id 47 is outside the vocabulary (0 to 46)"),
        ("/tokenize", {}, "send a prompt (a string) or messages"),
        ("/tokenize", {"messages": messages, "add_generation_prompt": False},
         "add_generation_prompt=false is not supported: messages are tokenized as /v1/chat/completions runs them"),
    ]:
        r = httpx.post(f"{url}{route}", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"] == message


def test_flat_fields_choose_the_strategy_as_the_extension_does(url):
    common = dict(prompt=PROMPT, max_tokens=12, seed=3)
    nested = post(url, **common, ttscale={"strategy": "sc", "n": 3, "set": {"sc.temperature": 1.0}})
    flat = post(url, **common, ttscale_strategy="sc", ttscale_n=3, **{"sc.temperature": 1.0})
    drop = lambda e: {k: v for k, v in e.items() if k != "compute"}  # noqa: E731  (seconds differ)
    assert drop(flat["ttscale"]) == drop(nested["ttscale"]) and flat["ttscale"]["settings"]["sc"]["temperature"] == 1.0
    assert flat["choices"][0]["text"] == nested["choices"][0]["text"]


def _stream(url, **body):
    """The stream's chunks, each with the second it arrived."""
    out, start = [], time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append((time.perf_counter() - start, json.loads(line[6:])))
    return out


@pytest.mark.parametrize("model", ["greedy", "reroute"])
def test_one_branch_strategies_stream_as_they_decode(url, model):
    asked = dict(prompt=PROMPT, max_tokens=64, model=model, ttscale={"set": {"reroute.steps": 2}} if model != "greedy"
                 else {})
    whole = post(url, **asked)
    chunks = _stream(url, **asked, stream_options={"include_usage": True})
    texts = [(t, c["choices"][0]["text"]) for t, c in chunks if c["choices"] and c["choices"][0]["text"]]
    assert "".join(text for _, text in texts) == whole["choices"][0]["text"]
    assert len(texts) > 1                                           # sent in pieces, as decoded
    finish = next(t for t, c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert texts[0][0] < finish and "ttscale" in chunks[-2][1] and chunks[-1][1]["usage"] == whole["usage"]


def test_a_client_gone_mid_stream_stops_its_request(url):
    """Closing a live stream after its first chunk cancels the request long before it would have ended."""
    asked = dict(prompt=PROMPT, max_tokens=200, model="reroute", ttscale={"set": {"reroute.interval": 8}})
    start = time.perf_counter()
    post(url, **asked)
    whole = time.perf_counter() - start
    with httpx.stream("POST", f"{url}/v1/completions", json={**asked, "stream": True}, timeout=120) as r:
        next(line for line in r.iter_lines() if line.startswith("data: "))
    closed = time.perf_counter()
    while httpx.get(f"{url}/health").json()["pending"]:
        assert time.perf_counter() - closed < whole / 4, f"still running; the whole request takes {whole:.1f} s"
        time.sleep(0.02)


def test_many_branch_strategies_stream_once_voted(url):
    chunks = _stream(url, prompt=PROMPT, max_tokens=16, model="sc@2", temperature=1.0)
    assert len([c for _, c in chunks if c["choices"] and c["choices"][0]["text"]]) == 1


ONE_PROMPT = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids"
BAD = [
    ({"prompt": [[5, 47]]}, "prompt[0][1]: token id 47 is outside the vocabulary (0 to 46)"),
    ({"prompt": [5, -1]}, "prompt[1]: token id -1 is outside the vocabulary (0 to 46)"),
    ({"prompt": [[5, 2.5]]}, "prompt[0][1] must be a token id (an integer), got 2.5"),
    ({"prompt": []}, "prompt is an empty list"),
    ({"prompt": [[]]}, "prompt[0] is an empty list of token ids"),
    ({"prompt": [5, "a"]}, f"prompt mixes types; it {ONE_PROMPT.removeprefix('prompt ')}"),
    ({"prompt": [[5], "a"]}, f"prompt mixes types; it {ONE_PROMPT.removeprefix('prompt ')}"),
    ({"prompt": 7}, ONE_PROMPT),
    ({"prompt": ""}, "prompt is empty: it has no tokens"),
    ({"prompt": [PROMPT, LONG]}, f"prompt[1]: prompt of {len(LONG)} tokens is longer than the model's context (2048 "
     "tokens, generation included)"),
    ({"logprobs": 6}, "logprobs 6 is over this server's limit of 5 (--max-logprobs)"),
    ({"logprobs": -1}, "logprobs must be a non-negative integer, got -1"),
    ({"logprobs": True}, "logprobs must be an integer, got true"),
    ({"echo": True, "n": 2, "model": "sc@2"}, "echo with n=2: a scored prompt has one choice; send n=1"),
    ({"max_tokens": 0}, "max_tokens must be a positive integer, got 0"),
    ({"stream": True, "logprobs": 1}, "stream=true with echo or logprobs is not supported; send stream=false"),
    ({"ttscale": {"context_tokens": 0}},
     "ttscale.context_tokens must be a positive integer or a list of 1 of them (one per prompt)"),
    ({"ttscale_context_tokens": 10_000}, f"ttscale.context_tokens 10000 is more than the prompt's {len(PROMPT)} tokens"),
    ({"ttscale_strategy": "sc", "ttscale": {"strategy": "sc"}}, "ttscale_strategy and ttscale.strategy both given; send one"),
    ({"ttscale_nn": 2}, "unknown field 'ttscale_nn'; valid: ttscale_strategy, ttscale_n, ttscale_set, ttscale_context_tokens"),
    ({"reroute.lrr": 0.1}, cli_message(strategy="greedy", overrides=["reroute.lrr=0.1"])),
    ({"ttscale_strategy": "reroute+scc"}, cli_message(strategy="reroute+scc")),
]
CHAT_BAD = [
    ({"echo": True}, "echo is a /v1/completions field; chat completions do not echo"),
    ({"top_logprobs": 2}, "top_logprobs needs logprobs=true"),
    ({"logprobs": True, "top_logprobs": 9}, "top_logprobs 9 is over this server's limit of 5 (--max-logprobs)"),
]


@pytest.mark.parametrize("route, fields, message", [("/v1/completions", *b) for b in BAD]
                         + [("/v1/chat/completions", *b) for b in CHAT_BAD], ids=[str(i) for i in range(len(BAD) + 3)])
def test_bad_input_gets_400_and_one_line(url, route, fields, message):
    base = {"prompt": PROMPT} if route == "/v1/completions" else {"messages": [{"role": "user", "content": PROMPT}]}
    r = httpx.post(f"{url}{route}", json={**base, "max_tokens": 4, **fields}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == message


def test_the_server_answers_after_bad_input(url):
    assert post(url, prompt=PROMPT, max_tokens=4)["choices"][0]["text"]
