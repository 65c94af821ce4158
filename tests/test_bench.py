"""`ttscale bench` on CPU: a smoke run on a small shape, and the bandwidth-floor arithmetic."""

import json

from typer.testing import CliRunner

from ttscale.bench import BenchConfig, build_backend, step_bytes
from ttscale.cli import app


def test_bench_smoke_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", "--layers", "1", "--batches", "1,2",
                                      "--prompt-tokens", "16", "--new-tokens", "12", "--decode-tokens", "4",
                                      "--repeats", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [d["batch"] for d in data["decode"]] == [1, 2]
    assert all(d["tok_s"] > 0 and d["floor_tok_s"] > d["tok_s"] for d in data["decode"])
    assert data["prefill_tok_s"] > 0 and data["adapt_step_s_batch8"] > 0
    assert set(data["strategy_seconds"]) == {"greedy", "reroute", "sc@8", "reroute+sc@8"}
    assert data["reroute_over_greedy"] > 0 and "olmoe" == data["model"]["family"]


def test_step_bytes_counts_the_experts_a_batch_touches():
    backend = build_backend(BenchConfig(shape="tiny", layers=2))
    config = backend.model.config           # special token ids inside the vocabulary: no transformers warning
    assert all(v is None or 0 <= v < config.vocab_size for k, v in config.to_dict().items() if k.endswith("_token_id"))
    info = backend.info
    one, many = step_bytes(backend, 1), step_bytes(backend, 10_000)
    assert many == (info.total_params - info.embedding_params) * 4      # every expert, fp32
    assert one == (info.active_params - info.embedding_params) * 4      # top-k of E per layer
