"""The rerouting guard: per-row decisions inside one adaptation phase, from the problem's own context.

`holdout`: the end of each row's context (the last `guard_holdout` share of its target tokens) is held
out. Steps fit the deltas on the rest; every forward also measures the held-out NLL of the deltas as
they stand, a row stops once `guard_patience` steps in a row have not beaten its best, and at the end
it keeps the step with the best held-out NLL, if that beats the unadapted deltas by the relative
margin `guard_margin`; otherwise its deltas stay as they were before the phase. Everything is relative
to the row's own losses, so no constant carries the loss scale of one model or task.

`trust`: a trust region on routing. The loss adds `guard_kl` times the mean KL divergence of the
routing distributions from the ones the phase started with, and a row whose mean routing entropy
falls by more than the share `guard_collapse` is reset to where it started.

Both backends' adaptations (gradient steps on a transformers model, SPSA through scoring) drive the
same `PhaseGuard`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ttscale.branch import DeltaState
from ttscale.routing.config import GUARDS  # noqa: F401  (re-exported)


@dataclass
class Decision:
    """What the guard saw and decided for one row in one phase (a cycle's `guard` in the record)."""
    kind: str
    accepted: bool
    alpha: float                      # share of the adapted change kept (0: deltas as before the phase)
    step: int                         # the step whose deltas are kept (0: none)
    steps_run: int                    # gradient (or SPSA) steps the row took
    held_before: float | None = None  # held-out NLL of the deltas the phase started from
    held_best: float | None = None    # the best held-out NLL any step reached (kept if accepted)
    entropy_before: float | None = None
    entropy_after: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def holdout_split(valid: Tensor, share: float) -> tuple[Tensor, Tensor]:
    """`valid` `[B, T]` target mask -> (fit, held): each row's last ceil(share * its targets) targets are held
    out (at least one, and at least one left to fit where the row has two)."""
    count = valid.sum(-1, keepdim=True)
    held_n = (count * share).ceil().clamp(min=1)
    held_n = torch.minimum(held_n, (count - 1).clamp(min=1))
    from_end = valid.flip(-1).cumsum(-1).flip(-1)        # targets at or after each position
    held = valid.bool() & (from_end <= held_n)
    return valid.bool() & ~held, held


class PhaseGuard:
    """Per-row bookkeeping of one guarded phase over stacked row states (`[B, L, E]`)."""

    def __init__(self, cfg, state: DeltaState):
        self.cfg, self.kind = cfg, cfg.guard
        rows = state.delta.shape[0]
        self.start = state.clone()                          # where each row began: kept on rejection
        self.best = state.clone()
        self.best_held = torch.full((rows,), math.inf)
        self.held_before = torch.full((rows,), math.nan)
        self.best_step = torch.zeros(rows, dtype=torch.long)
        self.stale = torch.zeros(rows, dtype=torch.long)     # evaluations since the row's last best
        self.steps_run = torch.zeros(rows, dtype=torch.long)
        self.active = torch.ones(rows, dtype=torch.bool)

    @property
    def holdout(self) -> bool:
        return self.kind == "holdout"

    def observe(self, step: int, rows: Tensor, held: Tensor | None, state: DeltaState) -> None:
        """The held-out NLL `[len(rows)]` of rows `rows` under their deltas after `step` steps (holdout only);
        rows that have gone `guard_patience` evaluations without a new best stop."""
        if not self.holdout or held is None:
            return
        held = held.detach().float().cpu()
        if step == 0:
            self.held_before[rows] = held
        better = held < self.best_held[rows]
        for i, row in enumerate(rows.tolist()):
            if better[i]:
                self.best_held[row], self.best_step[row], self.stale[row] = held[i], step, 0
                for mine, theirs in zip(self.best.tensors(), state.tensors()):
                    mine[row] = theirs[row]
            else:
                self.stale[row] += 1
                if self.stale[row] >= self.cfg.guard_patience:
                    self.active[row] = False

    def stepped(self, rows: Tensor) -> None:
        self.steps_run[rows] += 1

    def finish(self, state: DeltaState, entropy_before: Tensor | None, entropy_after: Tensor | None) -> list[Decision]:
        """Write each row's kept deltas into `state` (in place) and say what was decided (entropies: where the
        backend sees routing)."""
        decisions = []
        for row in range(state.delta.shape[0]):
            before = None if entropy_before is None else float(entropy_before[row])
            after = None if entropy_after is None or math.isnan(entropy_after[row]) else float(entropy_after[row])
            if self.holdout:
                start, best = float(self.held_before[row]), float(self.best_held[row])
                step = int(self.best_step[row])
                accepted = step > 0 and (start - best) >= self.cfg.guard_margin * start
                kept = self.best if accepted else self.start
                decisions.append(Decision("holdout", accepted, 1.0 if accepted else 0.0, step if accepted else 0,
                                          int(self.steps_run[row]), start, best, before, after))
            else:   # trust: reset on a routing collapse
                accepted = after is None or before is None or after >= (1 - self.cfg.guard_collapse) * before
                kept = state if accepted else self.start
                decisions.append(Decision("trust", accepted, 1.0 if accepted else 0.0,
                                          int(self.steps_run[row]) if accepted else 0, int(self.steps_run[row]),
                                          entropy_before=before, entropy_after=after))
            if kept is not state:
                for mine, theirs in zip(state.tensors(), kept.tensors()):
                    mine[row] = theirs[row]
        return decisions
