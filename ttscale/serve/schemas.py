"""Request parsing and validation: an OpenAI-style JSON body to a validated plan (a `RunConfig`, the
messages, what to answer with), or an `ApiError` with a one-line message and its HTTP status.

The strategy of a request comes from the `ttscale` extension field (`{"strategy", "n", "set"}`), else
from the model name when it is a spec (`reroute+sc@8`), else the server's `--strategy`/`--n`. Standard
fields become settings: `temperature` and `top_p` those of the search (`sc.temperature`, ...; greedy
and reroute: `sample.*`), `max_tokens` `sample.max_new_tokens`; `stop` the stop strings; `seed` the
run seed. Settings apply in order: the server's `--set`, the standard fields, the request's `set`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

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


@dataclass
class Defaults:
    """What the server was started with."""
    model_id: str                    # the served model's name in /v1/models
    model: str                       # its hub id or directory
    backend: str = "hf"
    strategy: str = "greedy"
    n: int = 1
    overrides: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A validated request."""
    model: str                       # the model name, echoed in the response
    messages: list[dict[str, str]]
    cfg: RunConfig                   # strategy, n, seed, settings: as `ttscale run` would take them
    stop: tuple[str, ...]
    max_tokens: int | None           # as asked (None: the strategy's sample.max_new_tokens)
    choices: int                     # standard `n`: choices returned
    stream: bool
    include_usage: bool


def load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def parse(kind: str, data: dict[str, Any], defaults: Defaults, limits: Limits) -> Plan:
    """`kind`: "chat" (`messages`) or "completion" (`prompt`, taken as one user message)."""
    model = _get(data, "model", str, defaults.model_id) or defaults.model_id
    messages = _messages(data) if kind == "chat" else [{"role": "user", "content": _prompt(data)}]
    ext = _get(data, "ttscale", dict, {})
    for key in ext:
        if key not in ("strategy", "n", "set"):
            raise ApiError(400, f"unknown ttscale field {key!r}; valid: strategy, n, set", param=f"ttscale.{key}")
    choices = _positive(data, "n", 1)
    spec, count = _strategy(model, ext, defaults)
    n = _positive(ext, "n", None, where="ttscale.n") or count or (defaults.n if spec == defaults.strategy else None) \
        or choices
    for name, value in (("n", n), ("choices (n)", choices)):
        if value > limits.max_n:
            raise ApiError(400, f"{name} {value} is over this server's limit of {limits.max_n} (--max-n)", param="n")
    max_tokens = _positive(data, "max_completion_tokens", None) or _positive(data, "max_tokens", None)
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens} "
                       "(--max-tokens)", param="max_tokens")
    stop = _stop(data)
    seed = _get(data, "seed", int, None)
    stream = _get(data, "stream", bool, False)
    options = _get(data, "stream_options", dict, {}) or {}
    include_usage = bool(options.get("include_usage"))
    try:
        search = parse_spec(spec)[0].search
        overrides = [*defaults.overrides, *_standard_settings(data, search, max_tokens), *_settings(ext)]
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
    return Plan(model, messages, cfg, stop, max_tokens, choices, stream, include_usage)


def _strategy(model: str, ext: dict[str, Any], defaults: Defaults) -> tuple[str, int | None]:
    """The spec and the sample count it names (`@N`), from the extension, the model name or the default."""
    text = _get(ext, "strategy", str, None, where="ttscale.strategy")
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
        value = _get(data, name, float, None)
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


def _messages(data: dict[str, Any]) -> list[dict[str, str]]:
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


def _prompt(data: dict[str, Any]) -> str:
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", param="prompt")
    return prompt


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


def _get(data: dict[str, Any], key: str, kind: type, default: Any, where: str | None = None) -> Any:
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
    value = _get(data, key, int, default, where)
    if value is not None and value < 1:
        raise ApiError(400, f"{where or key} must be a positive integer, got {value}", param=where or key)
    return value
