"""Strategy specs and `--set section.key=value` overrides.

This is the minimal grammar of the core: `greedy` and `reroute`, each one greedy branch. The full
composition grammar (sc, bon, beam, presets) builds on the same `Settings`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ttscale.backends.sampling import Sampling
from ttscale.generators import PlainGenerator, RerouteGenerator
from ttscale.routing.reroute import RerouteConfig

STRATEGIES = ("greedy", "reroute")
SECTIONS = {"reroute": RerouteConfig, "sample": Sampling}


@dataclass
class Settings:
    reroute: RerouteConfig = field(default_factory=RerouteConfig)
    sample: Sampling = field(default_factory=Sampling)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(getattr(self, name).__dict__) for name in SECTIONS}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3)
    return f"; did you mean {' or '.join(close)}?" if close else f"; valid: {', '.join(choices)}"


def parse_settings(overrides: list[str]) -> Settings:
    """Apply `section.key=value` overrides to the defaults; errors name the closest valid keys."""
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for item in overrides:
        key, eq, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not eq or not dot:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        if section not in SECTIONS:
            raise ValueError(f"unknown --set section {section!r}" + _suggest(section, list(SECTIONS)))
        known = [f.name for f in fields(SECTIONS[section])]
        if name not in known:
            raise ValueError(f"unknown setting {key!r}" + _suggest(f"{section}.{name}",
                                                                    [f"{section}.{k}" for k in known]))
        values[section][name] = _value(raw.strip())
    try:
        return Settings(**{s: replace(SECTIONS[s](), **v) for s, v in values.items()})
    except TypeError as e:
        raise ValueError(f"invalid --set value: {e}") from None


def build_generator(strategy: str, settings: Settings):
    if strategy == "greedy":
        return PlainGenerator()
    if strategy == "reroute":
        return RerouteGenerator(settings.reroute)
    raise ValueError(f"unknown strategy {strategy!r}" + _suggest(strategy, list(STRATEGIES)))
