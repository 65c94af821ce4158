"""Response bodies: OpenAI-style chat completions and completions (whole or as stream chunks) from the
record `ttscale run` would write for the same prompt, plus the `ttscale` extension field."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any, Iterator

from ttscale.serve.schemas import Plan

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "steps": "length"}


def usage(compute: dict[str, Any]) -> dict[str, int]:
    """Every token the strategy read (prompt prefills and cache rebuilds, adaptation and scoring forward
    passes, reward-model reads) as prompt tokens, every token it generated as completion tokens."""
    read = (compute["prefill_tokens"] + compute["adapt_token_passes"]["forward"] + compute["score_tokens"]
            + compute["reward_tokens"])
    return {"prompt_tokens": read, "completion_tokens": compute["generated_tokens"],
            "total_tokens": read + compute["generated_tokens"]}


def extension(record: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """What ttscale knows: the strategy, each sample's answer and score, the votes, the compute ledger
    and the routing telemetry of the chosen sample."""
    samples = [{k: s.get(k) for k in ("answer", "key", "score", "tokens", "logprob", "finish_reason", "seed")}
               for s in record["samples"]]
    chosen = record["chosen"]
    return {
        "strategy": plan.cfg.strategy,
        "n": plan.cfg.n,
        "seed": plan.cfg.seed,
        "settings": plan.cfg.as_dict()["settings"],
        "prediction": record["prediction"],
        "chosen": chosen,
        "samples": samples,
        "votes": dict(Counter(s["key"] for s in record["samples"] if s["key"] is not None)),
        "compute": record["compute"],
        "routing": None if chosen is None else record["samples"][chosen]["routing"],
    }


def picked(record: dict[str, Any], plan: Plan) -> list[tuple[str, str]]:
    """(text, finish_reason) of the choices: the chosen sample first (sample 0 when none had an
    answer), then the other samples in order, `plan.choices` in all."""
    samples = record["samples"]
    first = record["chosen"] if record["chosen"] is not None else 0
    order = [first, *(i for i in range(len(samples)) if i != first)][:plan.choices]
    return [(samples[i]["text"], FINISH.get(samples[i]["finish_reason"], "stop")) for i in order]


def _head(kind: str, plan: Plan, chunk: bool = False) -> dict[str, Any]:
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    obj = {"chat": "chat.completion", "completion": "text_completion"}[kind] + (".chunk" if chunk and kind == "chat" else "")
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()), "model": plan.model}


def whole(kind: str, record: dict[str, Any], plan: Plan) -> dict[str, Any]:
    choices = []
    for i, (text, finish) in enumerate(picked(record, plan)):
        body = {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"text": text}
        choices.append({"index": i, **body, "finish_reason": finish, "logprobs": None})
    return {**_head(kind, plan), "choices": choices, "usage": usage(record["compute"]),
            "ttscale": extension(record, plan)}


def opening(kind: str, plan: Plan) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The stream's head (shared by its chunks) and its first chunk (the assistant role, sent at once;
    None for completions)."""
    head = _head(kind, plan, chunk=True)
    if kind != "chat":
        return head, None
    return head, {**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                                       "logprobs": None} for i in range(plan.choices)]}


def closing(kind: str, head: dict[str, Any], record: dict[str, Any], plan: Plan) -> Iterator[dict[str, Any]]:
    """The chunks after the strategy is done: each choice's text, then its finish reason (with the
    `ttscale` extension), then usage when asked (`stream_options.include_usage`)."""
    choices = picked(record, plan)
    for i, (text, _) in enumerate(choices):
        delta = {"delta": {"content": text}} if kind == "chat" else {"text": text}
        yield {**head, "choices": [{"index": i, **delta, "finish_reason": None, "logprobs": None}]}
    for i, (_, finish) in enumerate(choices):
        end = {"delta": {}} if kind == "chat" else {"text": ""}
        last = {"ttscale": extension(record, plan)} if i == len(choices) - 1 else {}
        yield {**head, "choices": [{"index": i, **end, "finish_reason": finish, "logprobs": None}], **last}
    if plan.include_usage:
        yield {**head, "choices": [], "usage": usage(record["compute"])}
