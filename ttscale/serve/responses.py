"""Response bodies: OpenAI-style chat completions and completions (whole or as stream chunks) from the
record `ttscale run` would write for each prompt, log-probs in the shape of each API, and the `ttscale`
extension field."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any, Iterator

from ttscale.serve.answer import Answer, choices
from ttscale.serve.schemas import Plan

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "steps": "length"}


def usage(answers: list[Answer]) -> dict[str, int]:
    """Every token the strategy read (prompt prefills and cache rebuilds, adaptation and scoring forward
    passes, reward-model reads) as prompt tokens, every token it generated as completion tokens; the
    scoring of log-probs included."""
    computes = [c for a in answers for c in (a.record and a.record["compute"], a.scoring and a.scoring.compute) if c]
    read = sum(c["prefill_tokens"] + c["adapt_token_passes"]["forward"] + c["score_tokens"] + c["reward_tokens"]
               for c in computes)
    generated = sum(c["generated_tokens"] for c in computes)
    return {"prompt_tokens": read, "completion_tokens": generated, "total_tokens": read + generated}


def extension(answers: list[Answer], plan: Plan) -> dict[str, Any] | list[dict[str, Any]]:
    """What ttscale knows, per prompt (a list when the request had several): the strategy, each sample's
    answer and score, the votes, the compute ledger and the routing telemetry of the chosen sample, and
    how log-probs were scored."""
    out = [_extension(a, plan) for a in answers]
    return out[0] if len(out) == 1 else out


def _extension(answer: Answer, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": plan.cfg.strategy, "n": plan.cfg.n, "seed": plan.cfg.seed,
                           "settings": plan.cfg.as_dict()["settings"]}
    record = answer.record
    if record is not None:
        samples = [{k: s.get(k) for k in ("answer", "key", "score", "tokens", "logprob", "finish_reason", "seed")}
                   for s in record["samples"]]
        chosen = record["chosen"]
        out |= {
            "prediction": record["prediction"],
            "chosen": chosen,
            "samples": samples,
            "votes": dict(Counter(s["key"] for s in record["samples"] if s["key"] is not None)),
            "compute": record["compute"],
            "routing": None if chosen is None else record["samples"][chosen]["routing"],
        }
    if answer.scoring is not None:
        out["scoring"] = {"context_tokens": answer.scoring.context, "compute": answer.scoring.compute}
    return out


def picked(answer: Answer, plan: Plan) -> list[tuple[str, str]]:
    """(text, finish_reason) of a prompt's choices (`answer.choices`); with nothing generated, one
    empty choice."""
    if answer.record is None:
        return [("", "length")]
    samples = answer.record["samples"]
    return [(samples[i]["text"], FINISH.get(samples[i]["finish_reason"], "stop"))
            for i in choices(answer.record, plan.choices)]


def _head(kind: str, plan: Plan, chunk: bool = False) -> dict[str, Any]:
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    obj = {"chat": "chat.completion", "completion": "text_completion"}[kind] + (".chunk" if chunk and kind == "chat" else "")
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()), "model": plan.model}


def whole(kind: str, answers: list[Answer], plan: Plan, tokenizer: Any) -> dict[str, Any]:
    out = []
    for p, answer in enumerate(answers):
        echo = echoed(answer, tokenizer) if plan.echo else ""
        for j, (text, finish) in enumerate(picked(answer, plan)):
            body = {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"text": echo + text}
            logprobs = None if answer.scoring is None else _logprobs(kind, answer, j, plan, tokenizer)
            out.append({"index": p * plan.choices + j, **body, "finish_reason": finish, "logprobs": logprobs})
    return {**_head(kind, plan), "choices": out, "usage": usage(answers), "ttscale": extension(answers, plan)}


def echoed(answer: Answer, tokenizer: Any) -> str:
    """The prompt as it is echoed: its text as given, or its token ids decoded."""
    return answer.prompt if isinstance(answer.prompt, str) else tokenizer.decode(answer.tokens)


def _logprobs(kind: str, answer: Answer, j: int, plan: Plan, tokenizer: Any) -> dict[str, Any]:
    """Choice j's log-probs: completions' legacy shape (`tokens`, `token_logprobs`, `top_logprobs`,
    `text_offset`: the prompt's first, with echo, whose first token has none), or chat's `content`."""
    scoring = answer.scoring
    tokens, scored = scoring.tokens[j], scoring.rows[j]
    ids = tokens[scoring.start:]
    strings = [tokenizer.decode([t]) for t in ids]
    tops = scored.top or [[] for _ in ids]
    if kind == "chat":
        return {"content": [{**_entry(s, lp), "top_logprobs": [_entry(tokenizer.decode([t]), v) for t, v in top]}
                            for s, lp, top in zip(strings, scored.logprobs, tops)]}
    alternatives = [_alternatives(top, t, lp, tokenizer) for t, lp, top in zip(ids, scored.logprobs, tops)]
    values: list[float | None] = list(scored.logprobs)
    if plan.echo:           # the first token, which nothing scores
        strings, values, alternatives = [tokenizer.decode(tokens[:1])] + strings, [None] + values, [None] + alternatives
    offsets, at = [], 0
    for s in strings:
        offsets.append(at)
        at += len(s)
    return {"tokens": strings, "token_logprobs": values, "top_logprobs": alternatives, "text_offset": offsets}


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _alternatives(top: list[tuple[int, float]], token: int, logprob: float, tokenizer: Any) -> dict[str, float]:
    """The most likely tokens at a position and the token itself (so up to k + 1 entries, as vLLM gives)."""
    out: dict[str, float] = {}
    for t, v in [*top, (token, logprob)]:
        out.setdefault(tokenizer.decode([t]), v)
    return out


def opening(kind: str, plan: Plan, prompts: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The stream's head (shared by its chunks) and its first chunk (the assistant role, sent at once;
    None for completions)."""
    head = _head(kind, plan, chunk=True)
    if kind != "chat":
        return head, None
    return head, {**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                                       "logprobs": None} for i in range(prompts * plan.choices)]}


def text_chunk(kind: str, head: dict[str, Any], index: int, text: str) -> dict[str, Any]:
    delta = {"delta": {"content": text}} if kind == "chat" else {"text": text}
    return {**head, "choices": [{"index": index, **delta, "finish_reason": None, "logprobs": None}]}


def closing(kind: str, head: dict[str, Any], answers: list[Answer], plan: Plan,
            sent: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The chunks once the strategy is done: each choice's text (what a live stream has not sent of it:
    `sent[prompt]`), then its finish reason (the last one with the `ttscale` extension), then usage when
    asked (`stream_options.include_usage`)."""
    ends = []
    for p, answer in enumerate(answers):
        for j, (text, finish) in enumerate(picked(answer, plan)):
            index, before = p * plan.choices + j, (sent[p] if sent and j == 0 else "")
            if not text.startswith(before):
                raise RuntimeError("the streamed text is not a prefix of the final text")
            if text[len(before):]:
                yield text_chunk(kind, head, index, text[len(before):])
            ends.append((index, finish))
    for i, (index, finish) in enumerate(ends):
        end = {"delta": {}} if kind == "chat" else {"text": ""}
        last = {"ttscale": extension(answers, plan)} if i == len(ends) - 1 else {}
        yield {**head, "choices": [{"index": index, **end, "finish_reason": finish, "logprobs": None}], **last}
    if plan.include_usage:
        yield {**head, "choices": [], "usage": usage(answers)}
