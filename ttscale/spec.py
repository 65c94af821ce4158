"""Strategy specs: the grammar, presets from `strategies/*.toml`, and `--set section.key=value` overrides.

A spec joins with `+` at most one generator modifier (`reroute`) and at most one search (`greedy`,
`sc`, `bon`, `beam`; `greedy` when none is named): `reroute+sc`, `sc`, `reroute`. A name may also
be a preset file `strategies/NAME.toml` holding `spec = "..."` and settings tables.

Settings resolve in order: the dataclass defaults; the preset of each component named in the spec
(`strategies/reroute.toml` for `reroute`, `strategies/sc.toml` for `sc`, ...); a named preset's
tables; then `--set` overrides. Sections: `sample`, `reroute`, and one per search.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

from ttscale.backends.sampling import LIMITS as SAMPLING_LIMITS, Sampling, check as check_sampling
from ttscale.routing.config import RerouteConfig
from ttscale.search import SEARCHES
from ttscale.tasks.registry import TaskSettings

GENERATORS = ("reroute",)


@dataclass(frozen=True)
class Spec:
    text: str
    generator: str        # "plain" | "reroute"
    search: str


def sections() -> dict[str, type]:
    return {"sample": Sampling, "reroute": RerouteConfig, "task": TaskSettings,
            **{name: cls.Params for name, cls in SEARCHES.items()}}


def presets_dir() -> Path:
    """`$TTSCALE_STRATEGIES`, else the presets shipped in the package (`ttscale/presets`, a link to the
    checkout's top-level `strategies/` folder, copied into wheels)."""
    return Path(os.environ.get("TTSCALE_STRATEGIES") or Path(__file__).resolve().parent / "presets")


def suggest(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=3)
    return f"; did you mean {' or '.join(close)}?" if close else f"; valid: {', '.join(choices)}"


def _preset(name: str, directory: Path) -> dict[str, Any]:
    path = directory / f"{name}.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"preset {path.name}: {e}") from None


def named_presets(directory: Path | None = None) -> dict[str, str]:
    """Preset name -> its spec, for every preset file that names a spec."""
    directory = directory or presets_dir()
    return {p.stem: spec for p in sorted(directory.glob("*.toml")) if (spec := _preset(p.stem, directory).get("spec"))}


def split_count(text: str) -> tuple[str, int]:
    """`reroute+sc@8` -> (`reroute+sc`, 8); a spec without `@N` draws one sample."""
    spec, at, count = text.partition("@")
    if not at:
        return text, 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"strategy {text!r}: the number after @ must be a positive integer")
    return spec, int(count)


def parse_spec(text: str, directory: Path | None = None) -> tuple[Spec, dict[str, Any]]:
    """The spec's components, and the settings tables of a named preset (empty for a plain spec)."""
    directory = directory or presets_dir()
    named = _preset(text, directory) if "+" not in text else {}
    if "spec" in named:
        spec, _ = parse_spec(named["spec"], directory)
        return Spec(text, spec.generator, spec.search), {k: v for k, v in named.items() if k != "spec"}
    parts = [part.strip() for part in text.split("+")]
    valid = [*GENERATORS, *SEARCHES, *named_presets(directory)]
    for part in parts:
        if part not in GENERATORS and part not in SEARCHES:
            raise ValueError(f"unknown strategy {part!r}" + suggest(part, valid))
    generators = [p for p in parts if p in GENERATORS]
    searches = [p for p in parts if p in SEARCHES]
    if len(generators) > 1 or len(searches) > 1:
        raise ValueError(f"strategy {text!r}: at most one generator ({', '.join(GENERATORS)}) "
                         f"and one search ({', '.join(SEARCHES)})")
    return Spec(text, generators[0] if generators else "plain", searches[0] if searches else "greedy"), {}


def _value(text: str) -> Any:
    """A `--set` value: JSON when it parses (`0.1`, `true`, `"= "`, `["\\n", "Q:"]`), else the text itself,
    with `\\n` and `\\t` read as a newline and a tab (so `task.stop=\\n` is a newline, as it reads)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.replace("\\n", "\n").replace("\\t", "\t")


def _check(section: str, key: str, known: dict[str, type], where: str) -> None:
    if section not in known:
        raise ValueError(f"unknown setting section {section!r} in {where}" + suggest(section, known))
    names = [f.name for f in fields(known[section])]
    if key not in names:
        raise ValueError(f"unknown setting '{section}.{key}' in {where}"
                         + suggest(f"{section}.{key}", [f"{section}.{n}" for n in names]))


def check_override(item: str, where: str = "--set") -> tuple[str, str, str]:
    """A `section.key=value` item's section, key and raw value; an unknown section or key is an error
    naming `where` it came from."""
    key, eq, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not eq or not dot:
        raise ValueError(f"{where} expects section.key=value, got {item!r}")
    _check(section, name, sections(), where)
    return section, name, raw


def resolve_settings(spec: Spec, overrides: Iterable[str] = (), named: dict[str, Any] | None = None,
                     directory: Path | None = None) -> dict[str, Any]:
    """Every section's dataclass, with presets and overrides applied in order."""
    directory = directory or presets_dir()
    known = sections()
    values: dict[str, dict[str, Any]] = {name: {} for name in known}
    layers = [(f"strategies/{c}.toml", _preset(c, directory)) for c in (spec.generator, spec.search)]
    layers.append((f"strategies/{spec.text}.toml", named or {}))
    for where, tables in layers:
        for section, table in tables.items():
            if not isinstance(table, dict):
                raise ValueError(f"{where}: expected [section] tables, found {section!r}")
            for key, value in table.items():
                _check(section, key, known, where)
                values[section][key] = value
    for item in overrides:
        section, name, raw = check_override(item)
        values[section][name] = _value(raw.lstrip())      # trailing spaces kept: `task.extract=after:= `
    settings = {s: replace(cls(), **{k: _typed(s, cls(), k, v) for k, v in values[s].items()})
                for s, cls in known.items()}
    for section, value in settings.items():      # sampling ranges under every section (sc.temperature, ...)
        for name in SAMPLING_LIMITS.keys() & value.__dict__.keys():
            check_sampling(f"{section}.{name}", getattr(value, name))
    return settings


def check_used(spec: Spec, overrides: Iterable[str]) -> None:
    """A `--set` the strategy would record but never read is an error: a section it has no part for
    (`sc.*` under greedy), or shared sampling its search replaces with its own (`sample.temperature` under sc)."""
    used = {"sample", "task", spec.search, *(("reroute",) if spec.generator == "reroute" else ())}
    own = {f.name for f in fields(SEARCHES[spec.search].Params)}
    for item in overrides:
        section, _, name = item.partition("=")[0].strip().partition(".")
        if section not in used:
            having = sorted(s for s in used if fields(sections()[s]))
            raise ValueError(f"--set {item.strip()} has no effect: strategy {spec.text} has no {section} part "
                             f"(its settings: {', '.join(f'{s}.*' for s in having)})")
        if section == "sample" and name in ("temperature", "top_p") and name in own:
            raise ValueError(f"--set {item.strip()} has no effect: {spec.search} samples with its own "
                             f"{spec.search}.{name}; set that instead")


def task_settings(overrides: Iterable[str]) -> TaskSettings:
    """`task.*` settings alone (`ttscale grade`); any other section is an error."""
    overrides = list(overrides)
    for item in overrides:
        if not item.strip().startswith("task."):
            raise ValueError(f"--set {item.strip()}: only task.* settings apply here")
    return resolve_settings(parse_spec("greedy")[0], overrides)["task"]


def check_n(spec: Spec, n: int) -> None:
    """A spec whose search is greedy draws one sample: say so in terms of the spec the user wrote."""
    if spec.search == "greedy" and n != 1:
        prefix = "reroute+" if spec.generator == "reroute" else ""
        raise ValueError(f"--n {n}: {spec.text} draws one sample per problem (its search is greedy); pass --n 1, "
                         f"or use {prefix}sc, {prefix}bon or {prefix}beam to spend {n} samples")


def _typed(section: str, defaults: Any, key: str, value: Any) -> Any:
    """The value, checked against the type of the setting's default (an int may stand for a float)."""
    kind = type(getattr(defaults, key))
    if kind is float and type(value) is int:
        return float(value)
    if kind is list:                     # a list of strings; one string stands for a list of one
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ValueError(f"setting {section}.{key} expects a string or a JSON list of strings, got {value!r}")
        return value
    if type(value) is not kind:
        raise ValueError(f"setting {section}.{key} expects a {kind.__name__}, got {value!r}")
    return value
