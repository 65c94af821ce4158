"""The SGLang backend in-process: each branch is a request on an `sglang.Engine` carrying its own deltas.

The engine loads the model through ttscale's model package (`ttscale.sglang_models`, registered with
`SGLANG_EXTERNAL_MODEL_PACKAGE`), whose MoE blocks add each request's router deltas to the logits
before top-k. Requests are built and read by `SGLangClient` (shared with the HTTP client); all rows
of one call go to `Engine.generate` as one list, which its scheduler batches. Runs on CUDA, or on
CPU (`device="cpu"`: SGLang's CPU engine, bf16 on AVX512/AMX Xeons, with SGLang's CPU kernel library).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ttscale.backends.base import check_local_dir
from ttscale.backends.sglang_client import SGLangClient, auto_adapter, describe_for_sglang, usable_context

MODEL_PACKAGE = "ttscale.sglang_models"

# engine settings for SGLang's CPU engine (../docs/sglang.md); each can be overridden by an engine argument
CPU_ENGINE = dict(attention_backend="torch_native", disable_cuda_graph=True, mem_fraction_static=0.1,
                  max_total_tokens=16384)


def require_sglang():
    try:
        import sglang
    except ImportError:
        raise ValueError("the sglang backend needs sglang: pip install 'ttscale[sglang]' (docs/sglang.md)") from None
    return sglang


def engine_environment(device: str) -> None:
    """What the engine's spawned scheduler processes read from the environment."""
    os.environ["SGLANG_EXTERNAL_MODEL_PACKAGE"] = MODEL_PACKAGE
    if device == "cpu":
        os.environ["SGLANG_USE_CPU_ENGINE"] = "1"


class SGLangBackend(SGLangClient):
    def __init__(self, model: str, device: str | None = None, dtype: str | None = None, batch_size: int = 32,
                 decode: str = "auto", adapter: str = "auto", tp_size: int = 1,
                 mem_fraction_static: float | None = None, **engine_args: Any):
        """Start an engine on `model` (a local directory or hub id of a supported MoE family)."""
        from ttscale.sglang_models.runtime import ROWS

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device not in ("cuda", "cpu"):
            raise ValueError(f"the sglang backend runs on cuda or cpu, not {device!r}")
        if decode not in ("auto", "compiled"):
            raise ValueError("the sglang backend decodes with its own scheduler (CUDA graphs on GPU): no --decode")
        adapter = auto_adapter(adapter, model, weights_local=True)
        sglang = require_sglang()
        check_local_dir(model)
        info = describe_for_sglang(model)
        engine_environment(device)
        if device == "cpu":
            settings = {**CPU_ENGINE, **engine_args, "device": "cpu"}
            dtype_arg = dtype or "bfloat16"      # SGLang's CPU kernels run bf16 (fp32 only without AMX)
        else:
            # the HF copy used for adaptation shares the GPU: leave it room
            settings = {"mem_fraction_static": 0.45 if adapter == "hf" else 0.85, **engine_args}
            dtype_arg = dtype or "auto"
        if mem_fraction_static is not None:
            settings["mem_fraction_static"] = mem_fraction_static
        settings.setdefault("log_level", "warning")
        self.engine = sglang.Engine(
            model_path=model, dtype=dtype_arg, tp_size=tp_size, enable_custom_logit_processor=True,
            max_running_requests=min(ROWS - 1, 1024), enable_dp_attention=False, enable_two_batch_overlap=False,
            **settings)
        manager = self.engine.tokenizer_manager
        self._setup(model, info, usable_context(manager.context_len, manager.max_req_input_len), adapter, device, dtype,
                    batch_size)

    def _submit(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One `Engine.generate` over all rows (each field a list, one entry per request)."""
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        outputs = self.engine.generate(**columns)
        return outputs if isinstance(outputs, list) else [outputs]

    def close(self) -> None:
        self.engine.shutdown()
