"""One prompt of a request, solved in the scheduler thread: the strategy's outcome and its record (what
`ttscale run` writes for the same prompt) and, when asked, the log-probs of the prompt and the choices."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ttscale import runs
from ttscale.branch import Branch
from ttscale.serve.schemas import Plan, Prompt
from ttscale.serve.scoring import Scoring, score
from ttscale.serve.task import RequestBackend, RequestTask, problem


@dataclass
class Answer:
    prompt: Prompt                   # as the request gave it
    tokens: list[int]                # what it runs as
    context_tokens: int | None       # where its context ends (ttscale.context_tokens)
    view: RequestBackend             # the backend as its strategy sees it (its branches, as they grow)
    record: dict[str, Any] | None = None     # None: nothing generated (echo with max_tokens 0)
    samples: list[Branch] = field(default_factory=list)
    scoring: Scoring | None = None


async def solve(answer: Answer, plan: Plan) -> Answer:
    """Run the strategy on the prompt (unless max_tokens is 0), then, when log-probs are asked, score the
    prompt and the choices' tokens."""
    if plan.max_tokens != 0:
        task, p, start = RequestTask(plan.stop), problem(answer.prompt), time.perf_counter()
        outcome = await plan.cfg.plan.solving(p, task, answer.view, seed=plan.cfg.seed)
        answer.record = runs.record(p, outcome, task, answer.view, plan.cfg, wall=time.perf_counter() - start)
        answer.samples = outcome.samples
    if plan.logprobs is not None:
        chosen = [answer.samples[i].generated for i in choices(answer.record, plan.choices)] if answer.record else []
        answer.scoring = await score(answer.tokens, chosen, plan, answer.context_tokens, answer.view)
    return answer


def choices(record: dict[str, Any], n: int) -> list[int]:
    """The samples returned as choices: the chosen one first (sample 0 when none had an answer), then the
    others in order, n in all."""
    first = record["chosen"] if record["chosen"] is not None else 0
    return [first, *(i for i in range(len(record["samples"])) if i != first)][:n]
