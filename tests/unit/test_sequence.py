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
