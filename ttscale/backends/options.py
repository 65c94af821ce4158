"""The backend flags (`--device`, `--dtype`, `--batch-size`, `--decode`): checked before anything is
loaded, torch included, and the device resolved against what this torch can use."""

from __future__ import annotations

import re

DTYPES = ("bfloat16", "float16", "float32")
DECODE_MODES = ("auto", "dynamic", "static", "compiled")   # auto: dynamic (see docs/performance.md)


def check_options(device: str | None = None, dtype: str | None = None, batch_size: int = 32,
                  decode: str = "auto") -> None:
    """One-line errors for values no backend takes (needs no torch)."""
    if device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if decode not in DECODE_MODES:
        raise ValueError(f"--decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")


def torch_device(device: str | None):
    """The torch device to run on: `device`, or cuda when this torch sees a GPU, else cpu. A CUDA device
    this torch cannot use is a one-line error, not a traceback from the first tensor moved there."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"--device {device}: no CUDA device is available (torch {torch.__version__}, {build}); "
                             "use --device cpu, or install a CUDA build of torch on a GPU machine")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return chosen
