"""The `reroute.*` settings, apart from the optimiser so that reading and checking them needs no torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

SELECTIONS = ("uncertain", "confident", "all", "soft")
GUARDS = ("none", "holdout", "trust")        # ttscale.routing.guard


@dataclass
class RerouteConfig:
    lr: float = 0.05
    steps: int = 5
    interval: int = 128                # generated tokens between adaptations
    ratio: float = 0.25                # share of MoE layers adapted (hard selections)
    select: str = "confident"          # confident | uncertain | all | soft (docs/evidence.md)
    optimizer: str = "adam"            # adam | sgd
    kv: str = "recompute"              # recompute | keep: the KV cache after an adaptation
    keep_optimizer: bool = False       # carry Adam's moments across phases
    adapter: str = "auto"              # sglang backend: hf (gradient, on a local transformers copy) | spsa | auto
    guard: str = "none"                # none (the paper's method) | holdout | trust (ttscale.routing.guard)
    guard_holdout: float = 0.25        # holdout: share of the context's end held out
    guard_margin: float = 0.0          # holdout: relative held-out improvement needed to keep the deltas
    guard_patience: int = 2            # holdout: evaluations without a new best before a row stops
    guard_sticky: bool = False         # a branch whose phase the guard rejected adapts no more
    guard_kl: float = 1.0              # trust: weight of the routing KL from the phase's start
    guard_collapse: float = 0.3        # trust: a fall of mean routing entropy by this share resets the row

    def __post_init__(self):
        checks = {
            "lr": self.lr > 0, "steps": self.steps >= 1, "interval": self.interval >= 1,
            "ratio": 0 < self.ratio <= 1, "select": self.select in SELECTIONS,
            "optimizer": self.optimizer in ("adam", "sgd"), "kv": self.kv in ("recompute", "keep"),
            "adapter": self.adapter in ("auto", "hf", "spsa"), "guard": self.guard in GUARDS,
            "guard_holdout": 0 < self.guard_holdout < 1, "guard_margin": 0 <= self.guard_margin < 1,
            "guard_patience": self.guard_patience >= 1, "guard_kl": self.guard_kl >= 0,
            "guard_collapse": 0 < self.guard_collapse <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid reroute setting {bad[0]}={getattr(self, bad[0])!r} "
                             f"(select: {'|'.join(SELECTIONS)}; optimizer: adam|sgd; kv: recompute|keep; adapter: auto|hf|spsa; "
                             f"guard: {'|'.join(GUARDS)}; guard_holdout in (0, 1); guard_margin in [0, 1); "
                             f"guard_patience >= 1; guard_kl >= 0; guard_collapse in (0, 1])")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
