"""Backends run branches on a model: extend them, score them, adapt their router deltas."""

from ttscale.backends.base import Backend, ModelInfo
from ttscale.backends.sampling import Sampling

__all__ = ["Backend", "ModelInfo", "Sampling", "load_backend"]


def load_backend(name: str, model: str, **options) -> Backend:
    """A backend over `model`: a hub id, a local directory, or a bundled model's name (`demo`)."""
    url = options.pop("url", None)
    if url and name != "sglang":
        raise ValueError("--url drives a running SGLang server: use it with --backend sglang")
    from ttscale.demo import resolve_model

    model = resolve_model(model)
    if name == "hf":
        from ttscale.backends.hf import HFBackend
        return HFBackend(model, **options)
    if name == "sglang" and url:
        from ttscale.backends.sglang_http import SGLangHTTPBackend
        return SGLangHTTPBackend(model, url, **options)
    if name == "sglang":
        from ttscale.backends.sglang_engine import SGLangBackend
        return SGLangBackend(model, **options)
    raise ValueError(f"unknown backend {name!r}; choose from: hf, sglang")
