"""sc (self-consistency): N sampled branches to completion, a vote over equivalent answers."""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.aggregate import vote, vote_weights
from ttscale.backends.sampling import Sampling
from ttscale.scorers import Scorer, make_scorer
from ttscale.search.base import Context, Outcome, register, sampled


@register
class SelfConsistency:
    name = "sc"

    @dataclass
    class Params:
        temperature: float = 0.7
        top_p: float = 1.0
        vote: str = "majority"        # majority | weighted (each vote weighted by exp(score - max))
        scorer: str = "logprob"       # for weighted votes: logprob | logprob_sum | rm | tests
        reward_model: str = ""        # hub id or directory, for scorer=rm

    def __init__(self, params: Params, n: int, sampling: Sampling, scorer: Scorer | None = None):
        if params.vote not in ("majority", "weighted"):
            raise ValueError(f"invalid sc.vote {params.vote!r}; choose majority or weighted")
        self.params, self.n, self.rows, self.sampling = params, n, n, sampled(sampling, params)
        self.scorer = scorer or (make_scorer(params.scorer, params.reward_model) if params.vote == "weighted"
                                 else None)

    async def solve(self, ctx: Context) -> Outcome:
        branches = ctx.branches(self.n)
        await ctx.generator.grow(branches, self.sampling, stop=ctx.stop)
        answers = ctx.answers(branches)
        scores = self.scorer.score(branches, ctx.problem, ctx.task) if self.scorer else None
        keys = [None if a is None else ctx.task.answer_key(a) for a in answers]
        chosen = vote(keys, vote_weights(scores) if scores else None, seed=ctx.seed)
        return Outcome(None if chosen is None else answers[chosen], branches, answers, chosen, scores, branches)
