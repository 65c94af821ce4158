"""Warm a backend up before timing strategies against each other.

The first forward, backward and sampling calls of a process pay one-time costs (kernel selection,
allocator growth, autograd set-up, lazy imports). Timed runs that share a backend would charge them all
to whichever strategy runs first; `warm_up` runs each strategy once on one problem, untimed and
unrecorded, so per-phase seconds compare strategies fairly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

from ttscale.backends.base import Backend


def warm_up(backend: Backend, model: str, task: str, strategies: Iterable[tuple[str, int]],
            overrides: Iterable[str] = ()) -> None:
    """Solve the task's first problem once with each (spec, n), in a throwaway run directory."""
    from ttscale.runs import RunConfig, execute

    with tempfile.TemporaryDirectory(prefix="ttscale-warmup-") as scratch:
        for i, (spec, n) in enumerate(strategies):
            cfg = RunConfig(model=model, task=task, strategy=spec, n=n, limit=1, overrides=list(overrides))
            execute(cfg, Path(scratch) / str(i), backend=backend)
