"""The SGLang router-delta table: plain torch, so it is tested on CPU without sglang."""

import pytest
import torch

from ttscale.sglang_models.table import RouterDeltaTable, RowMap, token_rows

SLOTS, EXPERTS = 3, 8


def _payload(seed: int) -> list[float]:
    return torch.randn(SLOTS * EXPERTS, generator=torch.Generator().manual_seed(seed)).tolist()


def test_row_map_reuses_rows_and_evicts_the_least_recently_used():
    rows = RowMap(4)                                   # rows 1..3 usable, 0 is the zero row
    a, b, c = (rows.assign(rid, set()) for rid in "abc")
    assert sorted((a, b, c)) == [1, 2, 3]
    assert rows.get("a") == a                          # a is now the most recently used
    d = rows.assign("d", pinned=set())
    assert d == b and rows.get("b") is None            # b was the least recently used
    e = rows.assign("e", pinned={c})                   # c is in this batch: a goes instead
    assert e == a and rows.get("c") == c
    with pytest.raises(RuntimeError, match="table full"):
        rows.assign("f", pinned={c, d, e})


def test_token_rows_for_extend_decode_and_mixed_batches():
    assert token_rows([5, 0, 2], [3, 1, 2]).tolist() == [5, 5, 5, 0, 2, 2]      # extend
    assert token_rows([5, 0, 2], [1, 1, 1]).tolist() == [5, 0, 2]               # decode
    assert token_rows([7, 5, 0], [4, 1, 1]).tolist() == [7, 7, 7, 7, 5, 0]      # mixed: one extend, two decodes


def test_zero_rows_are_bit_exact_and_a_delta_touches_only_its_request():
    table = RouterDeltaTable(SLOTS, EXPERTS, rows=8, max_tokens=64, device="cpu")
    logits = torch.randn(6, EXPERTS, dtype=torch.bfloat16)
    table.prepare(["a", "b", "c"], [2, 3, 1], [None, None, None])
    assert torch.equal(table.apply(1, logits), logits.float())
    table.prepare(["a", "b", "c"], [2, 3, 1], [None, _payload(1), None])
    out = table.apply(1, logits)
    expected = torch.tensor(_payload(1)).view(SLOTS, EXPERTS)[1]
    assert torch.equal(out[[0, 1, 5]], logits[[0, 1, 5]].float())
    assert torch.allclose(out[2:5], logits[2:5].float() + expected)


def test_evicted_requests_are_rebuilt_from_their_payload():
    table = RouterDeltaTable(SLOTS, EXPERTS, rows=3, max_tokens=16, device="cpu")   # two usable rows
    logits = torch.zeros(1, EXPERTS)
    for rid in ("a", "b", "c", "a"):                   # a is evicted by c, then comes back
        table.prepare([rid], [1], [_payload(ord(rid))])
        for slot in range(SLOTS):
            want = torch.tensor(_payload(ord(rid))).view(SLOTS, EXPERTS)[slot]
            assert torch.equal(table.apply(slot, logits)[0], want)


def test_graph_safe_buffers_are_never_reallocated():
    table = RouterDeltaTable(SLOTS, EXPERTS, rows=4, max_tokens=8, device="cpu")
    pointers = (table.delta.data_ptr(), table.tok_row.data_ptr())
    table.prepare(["a", "b"], [5, 3], [_payload(1), _payload(2)])
    table.prepare(["c"], [1], [_payload(3)])
    assert (table.delta.data_ptr(), table.tok_row.data_ptr()) == pointers


def test_bad_payloads_and_oversized_batches_fail_clearly():
    table = RouterDeltaTable(SLOTS, EXPERTS, rows=4, max_tokens=4, device="cpu")
    with pytest.raises(ValueError, match="router delta has 5 values"):
        table.prepare(["a"], [1], [[0.0] * 5])
    with pytest.raises(RuntimeError, match="exceeds the delta table"):
        table.prepare(["b"], [5], [None])
