"""greedy: one branch, decoded with the `sample.*` settings (temperature 0 by default)."""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.backends.sampling import Sampling
from ttscale.search.base import Context, Outcome, register


@register
class Greedy:
    name = "greedy"

    @dataclass
    class Params:
        pass

    def __init__(self, params: Params, n: int, sampling: Sampling):
        if n != 1:
            raise ValueError(f"--n {n}: greedy draws one sample; pass --n 1 or use sc, bon or beam")
        self.sampling, self.rows = sampling, 1

    async def solve(self, ctx: Context) -> Outcome:
        branches = ctx.branches(1)
        await ctx.generator.grow(branches, self.sampling, stop=ctx.stop)
        answers = ctx.answers(branches)
        return Outcome(answers[0], branches, answers, chosen=0, spent=branches)
