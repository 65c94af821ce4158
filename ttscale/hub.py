"""Loading from the Hugging Face Hub without a minute of retries when there is no network.

`HF_HUB_OFFLINE=1` (honoured as huggingface_hub does) or a hub that does not answer one quick request
makes every hub load local-only: a model in the local cache still loads, anything else fails at once
with one line that says why.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

PROBE_SECONDS = 3.0


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub endpoint answers one HEAD request (any HTTP status counts) within a few seconds."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_SECONDS)
    except Exception:    # DNS, refused, timeout, proxy or TLS errors: all mean "cannot reach it now"
        return False
    return True


def env_offline() -> bool:
    """`HF_HUB_OFFLINE` is set (huggingface_hub, transformers and datasets then use their caches only)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def offline() -> str | None:
    """Why hub loads must be local-only (`HF_HUB_OFFLINE` set, or the hub unreachable), or None."""
    if env_offline():
        return "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        from huggingface_hub import constants

        return f"{constants.ENDPOINT} is unreachable"
    return None


def load_options(model: str) -> dict[str, Any]:
    """`from_pretrained` options for `model`: local-only when offline (local directories never go to the hub)."""
    if Path(model).expanduser().is_dir():
        return {}
    return {"local_files_only": True} if offline() else {}


def load_error(model: str, what: str, error: Exception) -> ValueError:
    """One line saying why `model` could not be loaded, naming the offline reason when there is one."""
    reason = offline() if not Path(model).expanduser().is_dir() else None
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    if reason:
        detail = (f"not in the local Hugging Face cache, and {reason} (download it on a connected machine, "
                  "or pass a local directory)")
    return ValueError(f"cannot load {what} {model!r}: {detail}")
