"""bon (best-of-N): N sampled branches, the best by a scorer wins."""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.aggregate import best
from ttscale.backends.sampling import Sampling
from ttscale.scorers import Scorer, make_scorer
from ttscale.search.base import Context, Outcome, register, sampled


@register
class BestOfN:
    name = "bon"

    @dataclass
    class Params:
        temperature: float = 0.7
        top_p: float = 1.0
        scorer: str = "logprob"       # logprob | logprob_sum | rm | tests (code tasks)
        reward_model: str = ""        # hub id or directory, for scorer=rm

    def __init__(self, params: Params, n: int, sampling: Sampling, scorer: Scorer | None = None):
        self.n, self.rows, self.sampling = n, n, sampled(sampling, params)
        self.scorer = scorer or make_scorer(params.scorer, params.reward_model)

    async def solve(self, ctx: Context) -> Outcome:
        branches = ctx.branches(self.n)
        await ctx.generator.grow(branches, self.sampling, stop=ctx.stop)
        answers = ctx.answers(branches)
        scores = self.scorer.score(branches, ctx.problem, ctx.task)
        chosen = best(scores)
        return Outcome(answers[chosen], branches, answers, chosen, scores, branches)
