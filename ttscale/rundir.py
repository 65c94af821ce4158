"""A run's output directory: its config, its append-only records, resumption.

`OUT/config.json` holds the resolved config; `OUT/records.jsonl` one record per finished problem,
appended and flushed as each finishes. Re-running into the same directory with the same config
(the `--limit` may differ) skips the problems already recorded; a different config is refused
unless `overwrite`. A last line cut short by a kill is dropped on resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESUME_IGNORES = ("limit", "overrides", "concurrency")   # overrides: compared through the settings they resolve to


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in json.loads(json.dumps(config)).items():
        if prefix or k not in RESUME_IGNORES:
            out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two run configs, as `key: old -> new` (settings by their dotted names)."""
    old, new = _flat(before), _flat(after)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a records.jsonl; a truncated last line is dropped (and cut from the file if `repair`)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    records = []
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) or line.endswith("\n"):
                raise ValueError(f"{path}:{n}: not a JSON record") from None
            if repair:
                path.write_text("".join(lines[:-1]))
    return records


class RunDir:
    def __init__(self, path: Path, config: dict[str, Any], overwrite: bool = False):
        self.path = Path(path)
        self.records_file = self.path / "records.jsonl"
        config_file = self.path / "config.json"
        has_records = self.records_file.exists() and self.records_file.stat().st_size > 0
        if has_records and not overwrite:
            if not config_file.exists():
                raise ValueError(f"{self.path} holds records of an unknown run; choose another --out or pass --overwrite")
            changed = config_changes(json.loads(config_file.read_text()), config)
            if changed:
                raise ValueError(f"{self.path} holds a run with a different config ({'; '.join(changed)}); "
                                 "choose another --out or pass --overwrite")
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite or not has_records:
            self.records_file.write_text("")
            (self.path / "summary.json").unlink(missing_ok=True)
        config_file.write_text(json.dumps(config, indent=2) + "\n")

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.records_file, repair=True)

    def append(self, record: dict[str, Any]) -> None:
        with self.records_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
