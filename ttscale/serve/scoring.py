"""Log-probs for requests with `logprobs` (and `echo`): the prompt's tokens and the returned choices',
read by the backend's `score_top` through the scheduler (an op like extend and adapt, so concurrent
requests share its forward batches), under the strategy's scoring model: the plain model, or, for a
strategy that adapts router deltas (reroute), deltas fitted on the context only (the first
`context_tokens` tokens, else the whole prompt), never on the tokens being scored."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Sequence

from ttscale import ledger
from ttscale.backends.base import Backend, Scored
from ttscale.branch import Branch
from ttscale.inflight import Adapt, Op
from ttscale.serve.schemas import Plan


@dataclass(eq=False)
class Score(Op):
    """The log-probs of each branch's tokens past its `prompt_len`, with the `top` most likely tokens."""
    branches: list[Branch]
    top: int

    def key(self) -> Hashable:
        return Score

    @staticmethod
    def run(backend: Backend, ops: Sequence[Score]) -> list[list[Scored]]:
        scored = iter(backend.score_top([b for op in ops for b in op.branches], max(op.top for op in ops)))
        return [[_keep(next(scored), op.top) for _ in op.branches] for op in ops]


def _keep(s: Scored, k: int) -> Scored:
    return Scored(s.logprobs, [top[:k] for top in s.top] if k else [])


@dataclass
class Scoring:
    """A prompt's scored rows: one per returned choice (prompt + its generated tokens), or the prompt
    alone when nothing is generated."""
    tokens: list[list[int]]          # each row's tokens
    rows: list[Scored]               # each row's log-probs from `start` on
    start: int                       # the first scored position: 1 with echo, else the prompt's length
    context: int | None              # tokens the deltas were fitted on (None: the plain model)
    compute: dict[str, Any]          # what the fit and the scoring forward passes cost (a ledger record)


async def score(prompt: list[int], generated: list[list[int]], plan: Plan, context_tokens: int | None,
                backend: Backend) -> Scoring:
    delta, spent, context = None, [], None
    if plan.adapts:
        context = context_tokens or len(prompt)
        fit = Branch(tokens=prompt[:context], prompt_len=context)
        await Adapt([fit], plan.cfg.plan.settings["reroute"])
        delta, spent = fit.delta, [fit]
    start = 1 if plan.echo else len(prompt)
    rows = [Branch(tokens=prompt + g, prompt_len=start, delta=None if delta is None else delta.clone())
            for g in generated or [[]]]
    scored = await Score(rows, plan.logprobs or 0)
    compute = ledger.as_record(ledger.total(b.compute for b in spent + rows), backend.info)
    return Scoring([r.tokens for r in rows], scored, start, context, compute)
