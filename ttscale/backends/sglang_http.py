"""The SGLang backend over a running server's HTTP API (`--backend sglang --url http://HOST:PORT`).

The server must have been launched with ttscale's model package and custom logit processors
enabled (docs/sglang.md has the command); the client checks both before it sends a branch, by
scoring one context under two different deltas. Requests are built and read by `SGLangClient`,
exactly as for the in-process engine; the rows of one call are posted concurrently to `/generate`
over a bounded connection pool, so the server's scheduler batches them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from ttscale.backends.base import check_local_dir
from ttscale.backends.sglang_client import (SGLangClient, auto_adapter, describe_for_sglang, has_local_weights,
                                            usable_context)


# what a server needs so ttscale's deltas reach its model: the model package, custom logit processors
SERVER_ENV = {"SGLANG_EXTERNAL_MODEL_PACKAGE": "ttscale.sglang_models"}
CPU_SERVER_ENV = {**SERVER_ENV, "SGLANG_USE_CPU_ENGINE": "1"}
CPU_SERVER_ARGS = ["--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph",
                   "--dtype", "bfloat16", "--mem-fraction-static", "0.1", "--max-total-tokens", "16384"]


def server_command(model: str, host: str = "127.0.0.1", port: int = 30000, cpu: bool = False) -> list[str]:
    """The `python -m sglang.launch_server` arguments of a server this backend can drive (docs/sglang.md);
    run it with `SERVER_ENV` (`CPU_SERVER_ENV` on CPU) in the environment."""
    return ["-m", "sglang.launch_server", "--model-path", model, "--host", host, "--port", str(port),
            "--enable-custom-logit-processor", "--max-running-requests", "1024",   # < the delta table's rows
            *(CPU_SERVER_ARGS if cpu else [])]


class ServerError(ValueError):
    """The server refused a request or could not be reached."""


class SGLangHTTPBackend(SGLangClient):
    def __init__(self, model: str, url: str, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 32, decode: str = "auto", adapter: str = "auto", connections: int = 64,
                 timeout: float = 600.0):
        """A client of the SGLang server at `url` serving `model` (whose config and tokenizer are read
        here; its weights only for the `hf` adapter)."""
        import httpx

        if decode not in ("auto", "compiled"):
            raise ValueError("the sglang backend decodes with its own scheduler: no --decode")
        check_local_dir(model)
        adapter = auto_adapter(adapter, model, weights_local=has_local_weights(model))
        self.url = url.rstrip("/")
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.Client(base_url=self.url, timeout=timeout, limits=limits)
        self.pool = ThreadPoolExecutor(connections, thread_name_prefix="ttscale-sglang")
        served = self._get("/model_info")["model_path"]
        if PurePosixPath(served.rstrip("/")).name != PurePosixPath(model.rstrip("/")).name:
            raise ValueError(f"the server at {self.url} serves {served}, not {model}")
        context_length = usable_context(self._get("/v1/models")["data"][0]["max_model_len"],
                                        self._get("/server_info")["max_req_input_len"])
        info = describe_for_sglang(model)
        self._setup(model, info, context_length, adapter, device or "cpu", dtype, batch_size)
        self._check_deltas_reach_the_model()

    def _get(self, path: str) -> dict[str, Any]:
        import httpx
        try:
            response = self.http.get(path)
        except httpx.HTTPError as e:
            raise ServerError(f"cannot reach the sglang server at {self.url}: {e}") from None
        return self._json(response, path)

    def _json(self, response, path: str) -> Any:
        if response.status_code != 200:
            try:
                error = response.json()
                message = error.get("error", error)
                message = message.get("message", message) if isinstance(message, dict) else message
            except ValueError:
                message = response.text
            raise ServerError(f"sglang server at {self.url}{path}: HTTP {response.status_code}: "
                              f"{str(message).strip().splitlines()[0] if str(message).strip() else ''}")
        return response.json()

    def _post(self, row: dict[str, Any]) -> dict[str, Any]:
        import httpx
        try:
            response = self.http.post("/generate", json=row)
        except httpx.HTTPError as e:
            raise ServerError(f"sglang server at {self.url}: {type(e).__name__}: {e}") from None
        return self._json(response, "/generate")

    def _submit(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All rows at once, each its own POST, at most `connections` in flight."""
        return list(self.pool.map(self._post, rows))

    def _check_deltas_reach_the_model(self) -> None:
        """Score a short context under deltas favouring two different expert sets: the same log-probs mean
        the server ignores deltas (launched without ttscale's model package)."""
        probes = []
        for experts in (slice(0, 2), slice(-2, None)):
            b = self.new_branch([{"role": "user", "content": "1 2 3"}])
            b.delta = self.zero_state()
            b.delta.delta[:, experts] = 8.0
            probes.append(b)
        first, second = self.score(probes, start=1)
        if first == second:
            raise ValueError(f"the sglang server at {self.url} does not apply router deltas: launch it with "
                             f"SGLANG_EXTERNAL_MODEL_PACKAGE=ttscale.sglang_models (docs/sglang.md)")

    def close(self) -> None:
        self.pool.shutdown()
        self.http.close()
