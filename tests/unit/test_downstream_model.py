"""The checking model the soak and the e2e rig trust: it must see what it claims to count."""

from __future__ import annotations

from typing import Any

import pytest

from bench.downstream_model import RECENT_TRADES, Model


def trade(seq: int, match: str, epoch: str = "1") -> dict[str, Any]:
    return {"type": "trade", "stream": "trades.BTCUSD", "epoch": epoch, "seq": seq,
            "match_number": match}  # fmt: skip


@pytest.mark.parametrize("keep_records", [True, False])
def test_a_gap_and_a_duplicate_execution_are_seen_with_or_without_records(
    keep_records: bool,
) -> None:
    model = Model(keep_records=keep_records)
    model.feed({"type": "subscribed", "id": "a", "streams": [{"stream": "trades.BTCUSD",
                                                              "seq": 0}]})  # fmt: skip
    model.feed(trade(1, "m1"))
    model.feed(trade(1, "m1"))  # the same record again (a replay): a seq problem, not a dup
    model.feed(trade(2, "m2"))
    model.feed(trade(4, "m1"))  # m1 under another seq: a duplicate execution, and a gap
    assert model.duplicate_trades == ["m1"]
    assert model.problems == [
        "trades.BTCUSD: expected seq 2, got 1",
        "trades.BTCUSD: expected seq 3, got 4",
    ]
    assert model.record_count == 4
    assert model.positions == {"trades.BTCUSD": ("1", 4)}
    assert model.answers["subscribed"] == 1
    assert len(model.records) == (4 if keep_records else 0)


def test_without_records_memory_is_bounded_by_the_recent_trades() -> None:
    model = Model(keep_records=False)
    for seq in range(1, RECENT_TRADES + 100):
        model.feed(trade(seq, f"m{seq}"))
    model.feed({"type": "book_snapshot", "stream": "book.BTCUSD", "epoch": "1", "seq": 1,
                "reason": "resync", "bids": [], "asks": []})  # fmt: skip
    assert len(model._recent_trades) == RECENT_TRADES
    assert model.snapshots == [] and model.snapshot_reasons["resync"] == 1
    assert model.problems == []
