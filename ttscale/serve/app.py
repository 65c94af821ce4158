"""The HTTP routes: OpenAI-compatible `/v1/chat/completions`, `/v1/completions`, `/v1/models`, the
tokenizer routes (`/tokenize`, `/detokenize`, `/tokenizer_info`, also under `/v1/`) and `/health`;
bearer-key auth, body-size and queue limits, OpenAI-style JSON errors (never a traceback)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ttscale.backends.base import Backend, check_context
from ttscale.search import SEARCHES
from ttscale.serve import responses, stream, tokens
from ttscale.serve.answer import Answer, solve
from ttscale.serve.scheduler import Cancelled, QueueFull, Scheduler, Ticket
from ttscale.serve.schemas import ApiError, Defaults, Limits, Plan, Prompt, load_json, parse
from ttscale.serve.task import RequestBackend, prompt_tokens
from ttscale.spec import named_presets

POLL_S = 0.25          # how often a waiting handler checks that its client is still there


def create_app(backend: Backend, defaults: Defaults, limits: Limits | None = None, api_key: str | None = None,
               concurrency: int = 32) -> FastAPI:
    limits = limits or Limits()
    defaults = replace(defaults, vocab_size=backend.info.vocab_size)
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

    def answer(prompt: Prompt, context_tokens: int | None, plan: Plan, where: str) -> Answer:
        """A prompt's tokens, checked against the model's context (`where`: "prompt[i]: " for one of several)."""
        ids = prompt_tokens(prompt, backend)
        if not ids:
            raise ApiError(400, f"{where}prompt is empty: it has no tokens", param="prompt")
        try:
            check_context(len(ids), backend.info.context_length, plan.max_tokens or None)
        except ValueError as e:
            raise ApiError(400, f"{where}{e}") from None
        if context_tokens is not None and context_tokens > len(ids):
            raise ApiError(400, f"{where}ttscale.context_tokens {context_tokens} is more than the prompt's {len(ids)} "
                           "tokens", param="ttscale.context_tokens")
        if plan.adapts and plan.logprobs is not None and (context_tokens or len(ids)) < 2:
            raise ApiError(400, f"{where}router deltas are fitted on at least 2 context tokens",
                           param="ttscale.context_tokens")
        return Answer(prompt, ids, context_tokens, RequestBackend(backend, ids))

    def submit(answers: list[Answer], plan: Plan) -> list[Ticket]:
        """One ticket per prompt (so they share batches); all of them or none (429)."""
        tickets: list[Ticket] = []
        try:
            for a in answers:
                tickets.append(scheduler.submit(lambda a=a: solve(a, plan)))
        except QueueFull as e:
            cancel(tickets)
            raise ApiError(429, str(e), "rate_limit_error", code="queue_full") from None
        return tickets

    async def settle(request: Request, tickets: list[Ticket], ready: Callable[[], bool], poll: float) -> bool:
        """Wait until `ready()`; False when the client went away first (its requests are then cancelled)."""
        try:
            while not ready():
                pending = {t.future for t in tickets if not t.future.done()}
                await asyncio.wait(pending, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                if not ready() and await request.is_disconnected():
                    cancel(tickets)
                    return False
        except asyncio.CancelledError:
            cancel(tickets)
            raise
        return True

    def results(tickets: list[Ticket]) -> list[Answer]:
        """The finished answers, or the first failure as an ApiError (the other prompts are dropped)."""
        out = []
        for ticket in tickets:
            outcome = ticket.future.result()
            if isinstance(outcome, Exception):
                cancel(tickets)
                if isinstance(outcome, Cancelled):
                    raise ApiError(499, "the request was cancelled", code="cancelled")
                if isinstance(outcome, ValueError):
                    raise ApiError(400, _one_line(outcome))
                raise ApiError(500, _one_line(outcome), "server_error")
            out.append(outcome)
        return out

    async def complete(kind: str, request: Request) -> Response:
        authorize(request)
        plan = parse(kind, await body(request), defaults, limits)
        several = len(plan.prompts) > 1
        if len(plan.prompts) > limits.max_queue:
            raise ApiError(400, f"{len(plan.prompts)} prompts are more than this server queues ({limits.max_queue}, "
                           "--max-queue)", param="prompt")
        answers = [answer(p, c, plan, f"prompt[{i}]: " if several else "")
                   for i, (p, c) in enumerate(zip(plan.prompts, plan.context_tokens))]
        tickets = submit(answers, plan)

        def done() -> bool:
            return all(t.future.done() for t in tickets)

        if plan.stream and plan.live:       # the text as it is decoded
            if not await settle(request, tickets, lambda: done() or stream.started(answers), stream.STREAM_POLL_S):
                return Response(status_code=499)
            if done():
                results(tickets)            # an error before the first token is a plain HTTP error
            chunks = stream.live(kind, plan, answers, [t.future for t in tickets], backend.tokenizer,
                                 lambda: results(tickets))
            return StreamingResponse(_events(chunks, tickets), media_type="text/event-stream")
        if not await settle(request, tickets, done, POLL_S):
            return Response(status_code=499)
        finished = results(tickets)
        if not plan.stream:
            return JSONResponse(responses.whole(kind, finished, plan, backend.tokenizer))
        head, first = responses.opening(kind, plan, len(finished))
        chunks = [c for c in [first, *responses.closing(kind, head, finished, plan)] if c is not None]
        return StreamingResponse(_events(_iterate(chunks), tickets), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete("completion", request)

    for prefix in ("", "/v1"):          # vLLM's paths (lm-eval's remote tokenizer), and under /v1/
        @app.post(f"{prefix}/tokenize")
        async def tokenize(request: Request) -> dict[str, Any]:
            authorize(request)
            return tokens.tokenize(await body(request), backend)

        @app.post(f"{prefix}/detokenize")
        async def detokenize(request: Request) -> dict[str, Any]:
            authorize(request)
            return tokens.detokenize(await body(request), backend)

        @app.get(f"{prefix}/tokenizer_info")
        async def tokenizer_info(request: Request) -> dict[str, Any]:
            authorize(request)
            return tokens.tokenizer_info(backend)

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


def cancel(tickets: Iterable[Ticket]) -> None:
    for ticket in tickets:
        if not ticket.future.done():
            ticket.cancel()


async def _iterate(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk


async def _events(chunks: AsyncIterator[dict[str, Any]], tickets: list[Ticket]) -> AsyncIterator[str]:
    """Server-sent events; a client gone mid-stream cancels what is still running."""
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancel(tickets)


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
