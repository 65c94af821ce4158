"""Generators grow branches to completion: plainly, or with continuous rerouting.

The rerouting generator runs the paper's two-phase loop on a batch of branches: adapt the deltas
on the current context, generate `interval` tokens with them fixed, repeat until every branch is
done. Branches with identical context and delta state (the N branches of one problem at prefill)
are adapted once and the result is copied, so the shared prefill adaptation costs one row.
"""

from __future__ import annotations

import copy
from typing import Sequence

from ttscale.backends.base import Backend
from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch
from ttscale.routing.reroute import RerouteConfig


class PlainGenerator:
    name = "plain"

    def grow(self, backend: Backend, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
             stop: Sequence[str] = ()) -> list[Branch]:
        return backend.extend(branches, sampling, stop=stop)


class RerouteGenerator:
    name = "reroute"

    def __init__(self, cfg: RerouteConfig | None = None):
        self.cfg = cfg or RerouteConfig()

    def grow(self, backend: Backend, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
             stop: Sequence[str] = ()) -> list[Branch]:
        params = [sampling] * len(branches) if isinstance(sampling, Sampling) else list(sampling)
        while True:
            live = [i for i, b in enumerate(branches) if not b.finished]
            if not live:
                return list(branches)
            self.adapt([branches[i] for i in live], backend)
            backend.extend([branches[i] for i in live], [params[i] for i in live], max_new_tokens=self.cfg.interval,
                           stop=stop, keep_cache=self.cfg.kv == "keep")

    def adapt(self, branches: Sequence[Branch], backend: Backend) -> None:
        """One adaptation phase for every branch; identical branches share one computation."""
        unique: list[Branch] = []
        copies: list[tuple[Branch, Branch]] = []
        for b in branches:
            twin = next((u for u in unique if _same_state(u, b)), None)
            if twin is None:
                unique.append(b)
            else:
                copies.append((b, twin))
        backend.adapt(unique, self.cfg)
        for b, twin in copies:
            b.delta = twin.delta.clone()
            b.cycles.append(copy.copy(twin.cycles[-1]))


def _same_state(a: Branch, b: Branch) -> bool:
    if a.tokens != b.tokens or (a.delta is None) != (b.delta is None):
        return False
    return a.delta is None or a.delta.same_as(b.delta)
