"""beam: step-level beam search. Each step, every live beam is expanded K times by sampling up to the
step delimiter; children are scored and the best survive. A finished child keeps its slot, so the
live width shrinks until W beams have finished (or `max_steps` is reached). Every beam carries its
own router-delta state; children inherit their parent's."""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.aggregate import best
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch
from ttscale.scorers import Scorer, make_scorer
from ttscale.search.base import Context, Outcome, derive_seed, register, sampled


@register
class Beam:
    name = "beam"

    @dataclass
    class Params:
        expansions: int = 4           # K children per live beam per step
        step: str = "\n\n"            # the step delimiter
        step_tokens: int = 128        # at most this many tokens per step
        max_steps: int = 16
        temperature: float = 0.7
        top_p: float = 1.0
        scorer: str = "logprob_sum"   # logprob_sum | logprob | rm
        reward_model: str = ""

    def __init__(self, params: Params, n: int, sampling: Sampling, scorer: Scorer | None = None):
        if params.expansions < 1 or params.max_steps < 1 or params.step_tokens < 1 or not params.step:
            raise ValueError(f"invalid beam settings: {params}")
        self.params, self.width, self.sampling = params, n, sampled(sampling, params)
        self.rows = n * params.expansions
        self.scorer = scorer or make_scorer(params.scorer, params.reward_model)

    async def solve(self, ctx: Context) -> Outcome:
        p = self.params
        beams = ctx.branches(1)
        spent, finished, score = list(beams), [], {}
        for _ in range(p.max_steps):
            children = [b.fork(seed=derive_seed(b.seed, k + 1)) for b in beams for k in range(p.expansions)]
            spent += children
            await ctx.generator.step(children, self.sampling, step_end=p.step, max_tokens=p.step_tokens,
                               stop=ctx.stop)
            score.update(zip((c.id for c in children), self.scorer.score(children, ctx.problem, ctx.task)))
            finished += [c for c in children if c.finished]
            beams = _top([c for c in children if not c.finished], score, self.width - len(finished))
            if not beams:
                break
        for b in beams:                    # out of steps: the live beams end here
            b.finished, b.finish_reason = True, "steps"
        candidates = _top(finished + beams, score, self.width)
        answers = ctx.answers(candidates)
        scores = [score[c.id] for c in candidates]
        chosen = best(scores)
        return Outcome(answers[chosen], candidates, answers, chosen, scores, spent)


def _top(branches: list[Branch], score: dict[int, float], k: int) -> list[Branch]:
    """The k best-scored branches with distinct token sequences."""
    out, seen = [], set()
    for b in sorted(branches, key=lambda b: -score[b.id]):
        if len(out) >= k:
            break
        if (key := tuple(b.tokens)) not in seen:
            seen.add(key)
            out.append(b)
    return out
