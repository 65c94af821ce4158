"""A run's output directory: its config, its append-only records, resumption; writing output files.

`OUT/config.json` holds the resolved config; `OUT/records.jsonl` one record per finished problem,
appended and flushed as each finishes. Re-running into the same directory with the same config
(the `--limit` may differ) skips the problems already recorded; a different config is refused
unless `overwrite`. A last line cut short by a kill is dropped on resume.

A run's results are the problems of its latest `ttscale run`: `summary.json` lists their `ids`, and
`load_run` (used by `report` and `curve` alike) returns exactly those records, in that order; records of
other problems (from an earlier, larger `--limit`) stay in records.jsonl for a later resume.

Filesystem errors become one-line `ValueError`s naming the path and the flag it came from.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ttscale.demo import model_name

# overrides: compared through the settings they resolve to
RESUME_IGNORES = ("limit", "overrides", "concurrency", "workers", "task_source")
# where the model ran (recorded once the backend is loaded): a resume must match it, but not the batch size, which
# does not change records (docs/cli.md), nor what a run from before it was recorded did not say
BACKEND_KEY, BACKEND_IGNORES = "backend_settings", ("batch_size",)


def check_writable(path: Path, what: str) -> None:
    """Fail early, before any work, if a file cannot be written at `path` (its folder is created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {what} {path}: it is a directory")
    check_folder(path.parent, what, path)


def check_folder(folder: Path, what: str, shown: Path | None = None) -> None:
    """Create `folder` if missing and make sure a file can be written in it (one-line error naming `shown`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {what} {shown or folder}: {e.strerror or e}") from None


def write_text(path: Path, text: str, what: str) -> None:
    """Write an output file (creating its folder), as a one-line error naming `what` on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise ValueError(f"cannot write {what} {path}: {e.strerror or e}") from None


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    config = json.loads(json.dumps(config))
    if not prefix and isinstance(config.get("model"), str):
        config["model"] = model_name(config["model"])     # configs from before the bundled model had a name
    for k, v in config.items():
        if prefix or k not in RESUME_IGNORES:
            out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two run configs, as `key: old -> new` (settings by their dotted names)."""
    old, new = _flat(before), _flat(after)
    backend = BACKEND_KEY + "."
    keys = [k for k in sorted(old.keys() | new.keys())
            if not k.startswith(backend) or (k in old and k in new and k[len(backend):] not in BACKEND_IGNORES)]
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a records.jsonl; a truncated last line is dropped (and cut from the file if `repair`)."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    records = []
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) or line.endswith("\n"):
                raise ValueError(f"{path}:{n}: not a JSON record") from None
            if repair:
                write_text(path, "".join(lines[:-1]), "the repaired")
    return records


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_run(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished run's summary and the records it covers (its `ids`, in order; every record for summaries
    written before `ids` existed)."""
    run = Path(run)
    if not (run / "summary.json").is_file():
        raise ValueError(f"{run}: no summary.json (not a finished ttscale run)")
    summary = read_json(run / "summary.json")
    records = read_records(run / "records.jsonl")
    if "ids" in summary:
        by_id = {r["id"]: r for r in records}
        missing = [i for i in summary["ids"] if i not in by_id]
        if missing:
            raise ValueError(f"{run}: summary.json covers problems missing from records.jsonl, e.g. {missing[0]!r}")
        records = [by_id[i] for i in summary["ids"]]
    return summary, records


class RunDir:
    """A run's output directory. Making one checks it (a file in the way, records of another config, a
    folder that cannot be written) and writes nothing; `start` writes config.json (and empties records.jsonl
    for a new run) once the run is sure to begin, so a run that fails at once leaves no trace."""

    def __init__(self, path: Path, config: dict[str, Any], overwrite: bool = False):
        self.path, self.overwrite = Path(path), overwrite
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a directory; choose another --out")
        self.records_file = self.path / "records.jsonl"
        self.config_file = self.path / "config.json"
        self.resuming = self.records_file.exists() and self.records_file.stat().st_size > 0 and not overwrite
        self.check(config)
        if self.path.exists():
            check_folder(self.path, "--out")
        else:
            check_folder(_existing_parent(self.path), "--out", self.path)

    def check(self, config: dict[str, Any]) -> None:
        """Refuse to add records of `config` to records of another run."""
        if not self.resuming:
            return
        if not self.config_file.exists():
            raise ValueError(f"{self.path} holds records of an unknown run; choose another --out or pass --overwrite")
        changed = config_changes(read_json(self.config_file), config)
        if changed:
            raise ValueError(f"{self.path} holds a run with a different config ({'; '.join(changed)}); "
                             "choose another --out or pass --overwrite")

    def start(self, config: dict[str, Any]) -> None:
        """Write the config (checked again: it may now hold what the backend resolved) and, unless resuming,
        an empty records.jsonl."""
        self.check(config)
        check_folder(self.path, "--out")
        if not self.resuming:
            write_text(self.records_file, "", "--out")
            (self.path / "summary.json").unlink(missing_ok=True)
        write_text(self.config_file, json.dumps(config, indent=2) + "\n", "--out")

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.records_file, repair=True)

    def append(self, record: dict[str, Any]) -> None:
        with self.records_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n", "--out")


def _existing_parent(path: Path) -> Path:
    """The nearest folder above `path` that exists (where a new --out would be created)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent
