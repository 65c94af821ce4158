"""Comparing records across runs whose batches differed: everything equal, floats within a tolerance
(batch shapes change fp32 summation order, ~1e-7 relative), seconds ignored."""

from __future__ import annotations

import math
from typing import Any


def differences(a: Any, b: Any, rel: float = 1e-4, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (a.keys() | b.keys()) - {"seconds"}
        return [d for k in sorted(keys) for d in differences(a.get(k), b.get(k), rel, f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, rel, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=rel, abs_tol=rel):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
