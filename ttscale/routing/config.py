"""The `reroute.*` settings, apart from the optimiser so that reading and checking them needs no torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

SELECTIONS = ("uncertain", "confident", "all", "soft")


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

    def __post_init__(self):
        checks = {
            "lr": self.lr > 0, "steps": self.steps >= 1, "interval": self.interval >= 1,
            "ratio": 0 < self.ratio <= 1, "select": self.select in SELECTIONS,
            "optimizer": self.optimizer in ("adam", "sgd"), "kv": self.kv in ("recompute", "keep"),
            "adapter": self.adapter in ("auto", "hf", "spsa"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid reroute setting {bad[0]}={getattr(self, bad[0])!r} "
                             f"(select: {'|'.join(SELECTIONS)}; optimizer: adam|sgd; kv: recompute|keep; adapter: auto|hf|spsa)")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
