from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest.sequence import Sequencer


def test_numbers_start_at_one_per_stream() -> None:
    seq = Sequencer()
    assert seq.head("book.BTCUSD") == 0
    assert [seq.next("book.BTCUSD") for _ in range(3)] == [1, 2, 3]
    assert seq.next("trades.BTCUSD") == 1
    assert seq.head("book.BTCUSD") == 3 and seq.head("trades.BTCUSD") == 1
    assert seq.streams() == ["book.BTCUSD", "trades.BTCUSD"]


@given(st.lists(st.sampled_from(["a", "b", "c", "status.x"]), max_size=500))
def test_gap_free_over_any_interleaving(streams: list[str]) -> None:
    seq = Sequencer()
    taken: dict[str, list[int]] = {}
    for stream in streams:
        taken.setdefault(stream, []).append(seq.next(stream))
    for stream, numbers in taken.items():
        assert numbers == list(range(1, len(numbers) + 1))
        assert seq.head(stream) == len(numbers)
    assert set(seq.streams()) == set(taken)


def test_a_stream_continues_after_a_given_head() -> None:
    # An ingest takeover (docs/cluster.md): the new leader numbers on after the cluster's last.
    seq = Sequencer({"book.BTCUSD": 41, "status.marketdata": 7, "trades.ETHUSD": 0})
    assert seq.head("book.BTCUSD") == 41
    assert seq.next("book.BTCUSD") == 42
    assert seq.next("status.marketdata") == 8
    assert seq.next("trades.ETHUSD") == 1  # a head of 0 is a stream that had nothing
    assert seq.next("price.USDCUSD") == 1
    assert seq.streams() == ["book.BTCUSD", "status.marketdata", "trades.ETHUSD", "price.USDCUSD"]


def test_a_negative_head_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="head"):
        Sequencer({"book.BTCUSD": -1})
