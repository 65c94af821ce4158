"""The HTTP routes: OpenAI-compatible `/v1/chat/completions`, `/v1/completions`, `/v1/models`, and
`/health`; bearer-key auth, body-size and queue limits, OpenAI-style JSON errors (never a traceback)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ttscale import runs
from ttscale.backends.base import Backend, check_context
from ttscale.search import SEARCHES
from ttscale.serve import responses
from ttscale.serve.scheduler import Cancelled, QueueFull, Scheduler, Ticket
from ttscale.serve.schemas import ApiError, Defaults, Limits, Plan, load_json, parse
from ttscale.serve.task import RequestTask, problem
from ttscale.spec import named_presets

POLL_S = 0.25          # how often a waiting handler checks that its client is still there


def create_app(backend: Backend, defaults: Defaults, limits: Limits | None = None, api_key: str | None = None,
               concurrency: int = 32) -> FastAPI:
    limits = limits or Limits()
    scheduler = Scheduler(backend, concurrency, limits.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        await asyncio.to_thread(scheduler.stop)      # requests in flight are done by now

    app = FastAPI(title="ttscale", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse(ApiError(e.status_code, str(e.detail), "invalid_request_error").body(),
                            status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse(ApiError(500, _one_line(e), "server_error").body(), status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                           type="authentication_error", code="invalid_api_key")

    async def body(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limits.max_body:
            raise _too_large(limits)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limits.max_body:
                raise _too_large(limits)
        return load_json(bytes(data))

    def solving(plan: Plan):
        """The request's coroutine (built in the scheduler thread): its record, as `ttscale run` makes it."""
        async def solve() -> dict[str, Any]:
            if plan.max_tokens is not None:
                check_context(len(backend.encode(plan.messages)), backend.info.context_length,
                              plan.max_tokens)
            return await runs.solving(problem(plan.messages), RequestTask(plan.stop), backend, plan.cfg)
        return solve()

    async def result(request: Request, ticket: Ticket) -> dict[str, Any] | None:
        """The request's record; None when its client went away (the request is then cancelled)."""
        try:
            while not ticket.future.done():
                await asyncio.wait({ticket.future}, timeout=POLL_S)
                if not ticket.future.done() and await request.is_disconnected():
                    ticket.cancel()
                    return None
        except asyncio.CancelledError:
            ticket.cancel()
            raise
        outcome = ticket.future.result()
        if isinstance(outcome, Cancelled):
            return None
        if isinstance(outcome, ValueError):
            raise ApiError(400, _one_line(outcome))
        if isinstance(outcome, Exception):
            raise ApiError(500, _one_line(outcome), "server_error")
        return outcome

    async def complete(kind: str, request: Request) -> Response:
        authorize(request)
        plan = parse(kind, await body(request), defaults, limits)
        try:
            ticket = scheduler.submit(lambda: solving(plan))
        except QueueFull as e:
            raise ApiError(429, str(e), "rate_limit_error", code="queue_full") from None
        record = await result(request, ticket)
        if record is None:
            return Response(status_code=499)
        if not plan.stream:
            return JSONResponse(responses.whole(kind, record, plan))
        head, first = responses.opening(kind, plan)
        chunks = [c for c in [first, *responses.closing(kind, head, record, plan)] if c is not None]
        lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete("completion", request)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        created = int(time.time())
        names = [defaults.model_id, *_strategies()]
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "ttscale"}
                                           for name in names]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": defaults.model_id, "strategy": defaults.strategy, "n": defaults.n,
                "pending": scheduler.pending, "in_flight": scheduler.in_flight}

    return app


def _strategies() -> list[str]:
    """Model names that pick a strategy: each search, with and without rerouting, and the named presets."""
    out = ["reroute"] + [f"{g}{s}" for g in ("", "reroute+") for s in SEARCHES]
    return list(dict.fromkeys([*out, *named_presets()]))


def _too_large(limits: Limits) -> ApiError:
    return ApiError(413, f"request body is over this server's limit of {limits.max_body} bytes (--max-body)",
                    code="request_too_large")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
