"""Generators grow branches: plainly, or with continuous rerouting.

The rerouting generator runs the paper's two-phase loop on a batch of branches: adapt the deltas
of every branch that is due (at prefill, then once `interval` tokens have been generated since its
last adaptation), generate with them fixed, repeat. Branches with identical context and delta state
(the N branches of one problem at prefill) are adapted once and the result is copied, so the shared
prefill adaptation costs one row. Searches that grow branches step by step (beam) call `step`;
rerouting then re-adapts only at step boundaries, once the interval has passed.

Both are coroutines over the backend operations of `ttscale.inflight` (so the branches of many
problems share batches); `drive(backend, generator.grow(branches, sampling))` runs one on its own.
"""

from __future__ import annotations

import copy
from typing import Sequence

from ttscale.backends.base import requests_for
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch, Compute
from ttscale.inflight import Adapt, Extend
from ttscale.routing.config import RerouteConfig


class PlainGenerator:
    name = "plain"

    async def grow(self, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
                   stop: Sequence[str] = ()) -> list[Branch]:
        """Grow every branch to completion."""
        await Extend(requests_for(branches, sampling, stop=stop))
        return list(branches)

    async def step(self, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
                   step_end: str, max_tokens: int, stop: Sequence[str] = ()) -> list[Branch]:
        """Grow every branch by one step: until `step_end` appears, or `max_tokens` more tokens."""
        await Extend(requests_for(branches, sampling, max_tokens, stop, step_end))
        return list(branches)


class RerouteGenerator(PlainGenerator):
    name = "reroute"

    def __init__(self, cfg: RerouteConfig | None = None):
        self.cfg = cfg or RerouteConfig()

    async def grow(self, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
                   stop: Sequence[str] = ()) -> list[Branch]:
        params = [sampling] * len(branches) if isinstance(sampling, Sampling) else list(sampling)
        while live := [i for i, b in enumerate(branches) if not b.finished]:
            await self.adapt_due([branches[i] for i in live])
            adapting = [self.cfg.interval - _since_adapted(branches[i]) for i in live if not self._done(branches[i])]
            await Extend(requests_for([branches[i] for i in live], [params[i] for i in live],
                                      min(adapting) if adapting else None, stop,
                                      resumable=self.cfg.kv == "recompute"), keep_cache=self.cfg.kv == "keep")
        return list(branches)

    async def step(self, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
                   step_end: str, max_tokens: int, stop: Sequence[str] = ()) -> list[Branch]:
        await self.adapt_due(branches)
        return await super().step(branches, sampling, step_end, max_tokens, stop)

    async def adapt_due(self, branches: Sequence[Branch]) -> None:
        due = [b for b in branches if not b.finished and not self._done(b)
               and (not b.cycles or _since_adapted(b) >= self.cfg.interval)]
        if due:
            await self.adapt(due)

    def _done(self, b: Branch) -> bool:
        """With `guard_sticky`, a branch whose last phase the guard rejected adapts no more."""
        last = b.cycles[-1].guard if b.cycles else None
        return self.cfg.guard_sticky and last is not None and not last["accepted"]

    async def adapt(self, branches: Sequence[Branch]) -> None:
        """One adaptation phase for every branch; identical branches share one computation."""
        unique: list[Branch] = []
        copies: list[tuple[Branch, Branch]] = []
        for b in branches:
            twin = next((u for u in unique if _same_state(u, b)), None)
            if twin is None:
                unique.append(b)
            else:
                copies.append((b, twin))
        sharers = {id(twin): twin for _, twin in copies}
        before = {key: copy.deepcopy(twin.compute) for key, twin in sharers.items()}
        await Adapt(unique, self.cfg)
        for key, twin in sharers.items():     # done once on behalf of its copies: noted as shared (curves)
            twin.meta["shared_compute"] = twin.meta.get("shared_compute", Compute()) + (twin.compute - before[key])
        for b, twin in copies:
            b.delta = twin.delta.clone()
            b.cycles.append(copy.copy(twin.cycles[-1]))


def _since_adapted(b: Branch) -> int:
    return len(b.generated) - b.cycles[-1].at_token if b.cycles else 0


def _same_state(a: Branch, b: Branch) -> bool:
    if a.tokens != b.tokens or (a.delta is None) != (b.delta is None):
        return False
    return a.delta is None or a.delta.same_as(b.delta)
