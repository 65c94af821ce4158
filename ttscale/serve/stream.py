"""Live streams: the text of one-branch strategies (greedy, reroute) sent as it is decoded.

The scheduler thread grows each prompt's branch; the stream reads it every `STREAM_POLL_S` and sends
what can no longer change: the text decoded so far, cut before a stop string, less its tail that a
stop string could still begin, a partial character, or a trailing space (a tokenizer's clean-up may
join it to the next token). Once the strategy is done, the rest of the final text, the finish reasons,
the `ttscale` extension and usage follow as for any stream (`responses.closing`)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Sequence

from ttscale.branch import Branch
from ttscale.serve import responses
from ttscale.serve.answer import Answer
from ttscale.serve.schemas import ApiError, Plan

STREAM_POLL_S = 0.05


def visible(b: Branch, stop: Sequence[str], tokenizer: Any) -> str:
    """The part of a growing branch's text that is final."""
    text = tokenizer.decode(b.tokens[b.prompt_len:], skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s in text]
    if cuts:
        return text[:min(cuts)]
    hold = max((len(s) - 1 for s in stop), default=0)
    return text[:len(text) - hold].rstrip("\ufffd").rstrip()


def started(answers: Sequence[Answer]) -> bool:
    """Whether some prompt's branch has decoded a token."""
    return any(a.view.branches and a.view.branches[0].generated for a in answers)


async def live(kind: str, plan: Plan, answers: list[Answer], futures: Sequence[asyncio.Future], tokenizer: Any,
               results: Callable[[], list[Answer]]) -> AsyncIterator[dict[str, Any]]:
    """The stream's chunks; `results()` gives the finished answers (or raises the request's ApiError,
    which ends the stream as an error event)."""
    head, first = responses.opening(kind, plan, len(answers))
    if first is not None:
        yield first
    sent = [""] * len(answers)
    while pending := [f for f in futures if not f.done()]:
        for i, (answer, future) in enumerate(zip(answers, futures)):
            if future.done() or not answer.view.branches:
                continue
            text = visible(answer.view.branches[0], plan.stop, tokenizer)
            if len(text) > len(sent[i]) and text.startswith(sent[i]):
                yield responses.text_chunk(kind, head, i * plan.choices, text[len(sent[i]):])
                sent[i] = text
        await asyncio.wait(pending, timeout=STREAM_POLL_S)
    try:
        for chunk in responses.closing(kind, head, results(), plan, sent):
            yield chunk
    except ApiError as e:
        yield e.body()
    except RuntimeError as e:
        yield ApiError(500, str(e), "server_error").body()
