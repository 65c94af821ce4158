"""`ttscale serve`: test-time scaling behind an OpenAI-compatible HTTP endpoint (docs/serve.md).

    app.py        the routes, auth, limits, errors
    schemas.py    request parsing and validation: a request to a `RunConfig` and its prompts
    scheduler.py  the thread that owns the backend and solves every request through one `InFlight`
    answer.py     one prompt, solved in that thread: the strategy's record, then log-probs when asked
    scoring.py    log-probs of the prompt and the choices (the backend's `score_top`, as an op)
    responses.py  OpenAI-style bodies and stream chunks from the records, log-probs, the `ttscale` field
    stream.py     live streams: one-branch strategies' text as it is decoded
    tokens.py     the tokenizer routes (/tokenize, /detokenize, /tokenizer_info)
    task.py       a request's task: its prompt's tokens and branches, the answers of a JSONL task
"""

from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.serve.schemas import ApiError, Defaults, Limits, parse


@dataclass
class ServeConfig:
    model: str | None = None         # None: the bundled demo model
    backend: str = "hf"
    strategy: str = "greedy"
    n: int = 1
    overrides: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    concurrency: int = 32            # requests in flight at once, their branches in shared batches
    backend_options: dict[str, Any] = field(default_factory=dict)

    def defaults(self) -> Defaults:
        from ttscale.demo import DEMO_MODEL

        if self.model is None and not DEMO_MODEL.is_dir():
            raise ValueError("the bundled demo model is missing from this installation; pass --model")
        model = self.model or str(DEMO_MODEL)
        model_id = "demo" if self.model is None else (Path(model).name if Path(model).is_dir() else model)
        return Defaults(model_id=model_id, model=model, backend=self.backend, strategy=self.strategy, n=self.n,
                        overrides=list(self.overrides))


def check(cfg: ServeConfig) -> Defaults:
    """The server's settings, validated as a request with no fields would be (one-line ValueError)."""
    if cfg.n < 1:
        raise ValueError(f"--n must be at least 1, got {cfg.n}")
    if cfg.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {cfg.concurrency}")
    for name in ("max_body", "max_n", "max_tokens", "max_queue"):
        if getattr(cfg.limits, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg.limits, name)}")
    if cfg.limits.max_logprobs < 0:
        raise ValueError(f"--max-logprobs must be at least 0, got {cfg.limits.max_logprobs}")
    defaults = cfg.defaults()
    try:
        parse("chat", {"messages": [{"role": "user", "content": ""}]}, defaults, cfg.limits)
    except ApiError as e:
        raise ValueError(e.message) from None
    _check_kv(cfg.overrides)
    return defaults


def _check_kv(overrides: list[str]) -> None:
    """`--set reroute.kv=keep` would make every rerouting request fail: refuse it at start."""
    from ttscale.spec import parse_spec, resolve_settings

    if resolve_settings(parse_spec("reroute")[0], overrides)["reroute"].kv == "keep":
        raise ValueError("--set reroute.kv=keep runs one problem at a time, and the server's requests share "
                         "batches: use reroute.kv=recompute")


def check_port(host: str, port: int) -> None:
    """Fail before the model loads when the address cannot be listened on (a busy port, a bad host)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn binds
            probe.bind((host, port))
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port or --host)") from None


def serve(cfg: ServeConfig) -> None:
    """Load the model and serve until SIGTERM or Ctrl-C (requests in flight are finished first)."""
    import uvicorn

    from ttscale.backends import load_backend
    from ttscale.serve.app import create_app

    defaults = check(cfg)
    check_port(cfg.host, cfg.port)
    backend = load_backend(cfg.backend, defaults.model, **cfg.backend_options)
    app = create_app(backend, defaults, cfg.limits, cfg.api_key, cfg.concurrency)
    where = getattr(backend, "describe", dict)()
    on = f" on {where['device']}, {where['dtype']}" if "device" in where else ""
    print(f"serving {defaults.model_id} ({cfg.backend}{on}) at http://{cfg.host}:{cfg.port}/v1; default strategy "
          f"{defaults.strategy}@{defaults.n}; SIGTERM or Ctrl-C stops after the requests in flight", file=sys.stderr,
          flush=True)
    # uvicorn shuts down gracefully on SIGTERM (requests in flight finish), then raises the signal again
    # with the handler it found: this one makes that a clean exit
    signal.signal(signal.SIGTERM, _exit)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False)


def _exit(*_: Any) -> None:
    raise SystemExit(0)
