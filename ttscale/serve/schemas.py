"""Request parsing and validation: an OpenAI-style JSON body to a validated plan (a `RunConfig`, the
prompts, what to answer with), or an `ApiError` with a one-line message and its HTTP status.

The strategy of a request comes from the `ttscale` extension field (`{"strategy", "n", "set",
"context_tokens"}`) or its flat forms (`ttscale_strategy`, `ttscale_n`, `ttscale_context_tokens` and
`section.key` settings as top-level keys, for clients that can add nothing else, such as lm-eval's
`--gen_kwargs`), else from the model name when it is a spec (`reroute+sc@8`), else the server's
`--strategy`/`--n`. Standard fields become settings: `temperature` and `top_p` those of the search
(`sc.temperature`, ...; greedy and reroute: `sample.*`), `max_tokens` `sample.max_new_tokens`; `stop`
the stop strings; `seed` the run seed. Settings apply in order: the server's `--set`, the standard
fields, the flat settings, the extension's `set`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Union

from ttscale.generators import RerouteGenerator
from ttscale.routing.config import RerouteConfig
from ttscale.runs import RunConfig
from ttscale.search import SEARCHES
from ttscale.spec import check_override, parse_spec, split_count


class ApiError(Exception):
    """An OpenAI-style error: HTTP status, one-line message, type, offending parameter."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    max_body: int = 1 << 20          # bytes of a request body (413 above)
    max_n: int = 64                  # samples or choices per request
    max_tokens: int = 4096           # generated tokens per branch
    max_queue: int = 256             # requests queued or in flight (429 above)
    max_logprobs: int = 20           # most likely alternatives per token with log-probs (400 above)


@dataclass
class Defaults:
    """What the server was started with."""
    model_id: str                    # the served model's name in /v1/models
    model: str                       # its hub id or directory
    backend: str = "hf"
    strategy: str = "greedy"
    n: int = 1
    overrides: list[str] = field(default_factory=list)
    vocab_size: int | None = None    # the model's, once it is loaded: token ids are checked against it


Messages = list[dict[str, str]]
Prompt = Union[Messages, str, list[int]]     # chat messages, raw text, or token ids
EXTENSION = ("strategy", "n", "set", "context_tokens")     # the `ttscale` fields; flat: ttscale_<field>


@dataclass
class Plan:
    """A validated request."""
    model: str                       # the model name, echoed in the response
    prompts: list[Prompt]            # chat: one list of messages; completions: one or more raw prompts
    cfg: RunConfig                   # strategy, n, seed, settings: as `ttscale run` would take them
    stop: tuple[str, ...]
    max_tokens: int | None           # as asked (None: the strategy's sample.max_new_tokens; 0: echo only)
    choices: int                     # standard `n`: choices per prompt
    stream: bool
    include_usage: bool
    echo: bool = False               # completions: the text and the log-probs start with the prompt's
    logprobs: int | None = None      # alternatives per token returned with log-probs; None: no log-probs
    context_tokens: list[int | None] = field(default_factory=list)   # per prompt: where its context ends

    @property
    def adapts(self) -> bool:
        """Whether the strategy fits router deltas on the context (reroute)."""
        return isinstance(self.cfg.plan.generator, RerouteGenerator)

    @property
    def live(self) -> bool:
        """Whether the text can be streamed as it is decoded: strategies with one branch (greedy, reroute)."""
        return type(self.cfg.plan.search).name == "greedy"


def load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def parse(kind: str, data: dict[str, Any], defaults: Defaults, limits: Limits) -> Plan:
    """`kind`: "chat" (`messages`) or "completion" (`prompt`: raw text or token ids, one or several)."""
    model = get(data, "model", str, defaults.model_id) or defaults.model_id
    prompts: list[Prompt] = [messages(data)] if kind == "chat" else _prompts(data, defaults.vocab_size)
    ext = _extension(data)
    choices = _positive(data, "n", 1)
    spec, count = _strategy(model, ext, defaults)
    n = _positive(ext, "n", None, where="ttscale.n") or count or (defaults.n if spec == defaults.strategy else None) \
        or choices
    for name, value in (("n", n), ("choices (n)", choices)):
        if value > limits.max_n:
            raise ApiError(400, f"{name} {value} is over this server's limit of {limits.max_n} (--max-n)", param="n")
    echo = _echo(kind, data)
    max_tokens = _tokens_asked(data, echo)
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens} "
                       "(--max-tokens)", param="max_tokens")
    logprobs = _logprobs(kind, data, limits)
    stop = _stop(data)
    seed = get(data, "seed", int, None)
    stream = get(data, "stream", bool, False)
    options = get(data, "stream_options", dict, {}) or {}
    include_usage = bool(options.get("include_usage"))
    try:
        search = parse_spec(spec)[0].search
        overrides = [*defaults.overrides, *_standard_settings(data, search, max_tokens or None), *_flat_settings(data),
                     *_settings(ext)]
        def config(items: list[str]) -> RunConfig:
            return RunConfig(model=defaults.model, task="request", strategy=spec, n=n,
                             seed=0 if seed is None else seed, backend=defaults.backend, overrides=items)

        cfg = config(overrides)
        asked = any(o.strip().startswith("sample.max_new_tokens") for o in overrides)
        if not asked and cfg.plan.settings["sample"].max_new_tokens > limits.max_tokens:   # a default is capped
            cfg = config([*overrides, f"sample.max_new_tokens={limits.max_tokens}"])
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    if choices > cfg.n:
        raise ApiError(400, f"n={choices} choices asked, but strategy {spec} draws {cfg.n} sample(s); ask for "
                       f"{spec}@{choices} (or ttscale.n)", param="n")
    reroute = cfg.plan.settings.get("reroute")
    if isinstance(reroute, RerouteConfig) and reroute.kv == "keep":
        raise ApiError(400, "reroute.kv=keep runs one problem at a time; the server needs reroute.kv=recompute")
    resolved = cfg.plan.settings["sample"].max_new_tokens
    if resolved > limits.max_tokens:
        raise ApiError(400, f"sample.max_new_tokens {resolved} is over this server's limit of {limits.max_tokens} "
                       "(--max-tokens)", param="max_tokens")
    plan = Plan(model, prompts, cfg, stop, max_tokens, choices, stream, include_usage, echo, logprobs,
                _context_tokens(ext, len(prompts)))
    _check_scoring(plan, spec)
    return plan


def _check_scoring(plan: Plan, spec: str) -> None:
    """What a request with echo or log-probs may ask."""
    if plan.echo and plan.choices > 1:
        raise ApiError(400, f"echo with n={plan.choices}: a scored prompt has one choice; send n=1", param="n")
    if plan.stream and (plan.echo or plan.logprobs is not None):
        raise ApiError(400, "stream=true with echo or logprobs is not supported; send stream=false", param="stream")
    if plan.echo and plan.logprobs is not None and plan.adapts and None in plan.context_tokens:
        raise ApiError(400, f"echo under {spec} would fit router deltas on the tokens it scores; send "
                       "ttscale.context_tokens (where the context ends) to fit them on the context only, or score "
                       "with a strategy without reroute", param="ttscale.context_tokens")


def _strategy(model: str, ext: dict[str, Any], defaults: Defaults) -> tuple[str, int | None]:
    """The spec and the sample count it names (`@N`), from the extension, the model name or the default."""
    text = get(ext, "strategy", str, None, where="ttscale.strategy")
    if text is None and model != defaults.model_id:
        text = model
    if text is None:
        return defaults.strategy, None
    try:
        spec, count = split_count(text)
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    return spec, count if "@" in text else None


def _standard_settings(data: dict[str, Any], search: str, max_tokens: int | None) -> list[str]:
    """`temperature`, `top_p`, `max_tokens` as settings: the search's own sampling where it has one."""
    own = {f.name for f in fields(SEARCHES[search].Params)}
    out = []
    for name in ("temperature", "top_p"):
        value = get(data, name, float, None)
        if value is not None:
            out.append(f"{search if name in own else 'sample'}.{name}={json.dumps(value)}")
    if max_tokens is not None:
        out.append(f"sample.max_new_tokens={max_tokens}")
    return out


def _settings(ext: dict[str, Any]) -> list[str]:
    """The extension's `set`: {"reroute.lr": 0.1} (or ["reroute.lr=0.1"]) as `--set` items."""
    value = ext.get("set") or {}
    if isinstance(value, dict):
        items = [f"{key}={json.dumps(v)}" for key, v in value.items()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        items = None
    if items is not None:
        try:
            for item in items:            # a bad key is named as the request gave it, not as `--set`
                check_override(item, "ttscale.set")
        except ValueError as e:
            raise ApiError(400, str(e), param="ttscale.set") from None
        return items
    raise ApiError(400, "ttscale.set must be an object of setting -> value, e.g. {\"reroute.lr\": 0.1}",
                   param="ttscale.set")


def _flat_settings(data: dict[str, Any]) -> list[str]:
    """Top-level `section.key` fields (no standard field has a dot) as `--set` items."""
    return [f"{key}={json.dumps(value)}" for key, value in data.items() if "." in key]


def _extension(data: dict[str, Any]) -> dict[str, Any]:
    """The `ttscale` field, with its flat `ttscale_<field>` forms merged in (each field given once)."""
    ext = dict(get(data, "ttscale", dict, {}))
    for key in ext:
        if key not in EXTENSION:
            raise ApiError(400, f"unknown ttscale field {key!r}; valid: {', '.join(EXTENSION)}", param=f"ttscale.{key}")
    for key, value in data.items():
        if not key.startswith("ttscale_"):
            continue
        name = key.removeprefix("ttscale_")
        if name not in EXTENSION:
            raise ApiError(400, f"unknown field {key!r}; valid: {', '.join('ttscale_' + f for f in EXTENSION)}",
                           param=key)
        if name in ext:
            raise ApiError(400, f"{key} and ttscale.{name} both given; send one", param=key)
        ext[name] = value
    return ext


def _context_tokens(ext: dict[str, Any], prompts: int) -> list[int | None]:
    """Where each prompt's context ends, in tokens: one count for every prompt or a list of them."""
    value = ext.get("context_tokens")
    values = value if isinstance(value, list) else [value] * prompts
    if len(values) != prompts or not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
                                         for v in values):
        raise ApiError(400, f"ttscale.context_tokens must be a positive integer or a list of {prompts} of them "
                       "(one per prompt)", param="ttscale.context_tokens")
    return list(values)


def _echo(kind: str, data: dict[str, Any]) -> bool:
    echo = get(data, "echo", bool, False)
    if echo and kind == "chat":
        raise ApiError(400, "echo is a /v1/completions field; chat completions do not echo", param="echo")
    return echo


def _tokens_asked(data: dict[str, Any], echo: bool) -> int | None:
    """`max_completion_tokens` or `max_tokens`: positive, or 0 with echo (score the prompt only)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = get(data, key, int, None)
        if value is not None:
            if value < 0 or (value == 0 and not echo):
                raise ApiError(400, f"{key} must be a positive integer, got {value}", param=key)
            return value
    return None


def _logprobs(kind: str, data: dict[str, Any], limits: Limits) -> int | None:
    """Alternatives per token to return with log-probs: completions' `logprobs` (an integer), chat's
    `top_logprobs` once `logprobs` is true; None when no log-probs are asked."""
    if kind == "chat":
        top = get(data, "top_logprobs", int, None)
        if not get(data, "logprobs", bool, False):
            if top is not None:
                raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
            return None
        value, key = (0 if top is None else top), "top_logprobs"
    else:
        value, key = get(data, "logprobs", int, None), "logprobs"
        if value is None:
            return None
    if value < 0:
        raise ApiError(400, f"{key} must be a non-negative integer, got {value}", param=key)
    if value > limits.max_logprobs:
        raise ApiError(400, f"{key} {value} is over this server's limit of {limits.max_logprobs} (--max-logprobs)",
                       param=key)
    return value


def messages(data: dict[str, Any]) -> list[dict[str, str]]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string role", param=f"messages[{i}]")
        out.append({"role": m["role"], "content": _content(m.get("content"), f"messages[{i}].content")})
    return out


def _content(content: Any, where: str) -> str:
    """A message's text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"{where} must be a string or a list of text parts", param=where)


PROMPT_FORMS = "a string, a list of strings, a list of token ids or a list of lists of token ids"


def _prompts(data: dict[str, Any], vocab_size: int | None) -> list[str | list[int]]:
    """`prompt`: one or several raw prompts, as text or token ids (in the vocabulary)."""
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list):
        raise ApiError(400, f"prompt must be {PROMPT_FORMS}", param="prompt")
    if not prompt:
        raise ApiError(400, "prompt is an empty list", param="prompt")
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if all(_is_id(p) for p in prompt):
        return [token_ids(prompt, "prompt", vocab_size)]
    if all(isinstance(p, list) for p in prompt):
        return [token_ids(p, f"prompt[{i}]", vocab_size) for i, p in enumerate(prompt)]
    raise ApiError(400, f"prompt mixes types; it must be {PROMPT_FORMS}", param="prompt")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def token_ids(ids: Any, where: str, vocab_size: int | None, empty: bool = False) -> list[int]:
    """A list of token ids in the vocabulary (`where`: the field, for messages)."""
    param = where.split("[", 1)[0]
    if not isinstance(ids, list):
        raise ApiError(400, f"{where} must be a list of token ids", param=param)
    if not ids and not empty:
        raise ApiError(400, f"{where} is an empty list of token ids", param=param)
    for i, t in enumerate(ids):
        if not _is_id(t):
            raise ApiError(400, f"{where}[{i}] must be a token id (an integer), got {json.dumps(t)}", param=param)
        if t < 0 or (vocab_size is not None and t >= vocab_size):
            bound = f"0 to {vocab_size - 1}" if vocab_size is not None else "0 or more"
            raise ApiError(400, f"{where}[{i}]: token id {t} is outside the vocabulary ({bound})", param=param)
    return list(ids)


def _stop(data: dict[str, Any]) -> tuple[str, ...]:
    stop = data.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a non-empty string or a list of them", param="stop")
    return tuple(stop)


_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object"}


def get(data: dict[str, Any], key: str, kind: type, default: Any, where: str | None = None) -> Any:
    """`data[key]` checked against `kind` (an int stands for a float; a bool is no number); null: the default."""
    value = data.get(key)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ApiError(400, f"{where or key} must be {_TYPES[kind]}, got {json.dumps(value)}", param=where or key)
    return value


def _positive(data: dict[str, Any], key: str, default: int | None, where: str | None = None) -> int | None:
    value = get(data, key, int, default, where)
    if value is not None and value < 1:
        raise ApiError(400, f"{where or key} must be a positive integer, got {value}", param=where or key)
    return value
