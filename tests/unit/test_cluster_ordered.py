from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.cluster.ordered import OrderedApply, Position, Problem, Verdict
from gateway.cluster.subjects import RecordId


def rid(seq: int, epoch: str = "1", stream: str = "book.BTCUSD") -> RecordId:
    return RecordId(epoch, stream, seq)


def test_in_order_records_are_next() -> None:
    apply = OrderedApply()
    assert apply.admit(rid(5)) is Verdict.FIRST
    assert [apply.admit(rid(s)) for s in (6, 7)] == [Verdict.NEXT, Verdict.NEXT]
    assert apply.position("book.BTCUSD") == Position("1", 7)


def test_a_checkpoint_start_drops_what_it_already_covers() -> None:
    apply = OrderedApply({"book.BTCUSD": Position("1", 10)})
    assert apply.admit(rid(9)) is Verdict.DUPLICATE
    assert apply.admit(rid(10)) is Verdict.DUPLICATE
    assert apply.admit(rid(11)) is Verdict.NEXT


def test_gap_is_accepted_and_reported() -> None:
    apply = OrderedApply({"book.BTCUSD": Position("1", 10)})
    accepted, problems = apply.admit_batch([rid(11), rid(14), rid(15)], lambda r: r)
    assert accepted == [rid(11), rid(14), rid(15)]
    assert problems == [Problem(rid(14), Verdict.GAP, Position("1", 11))]


def test_epochs_new_and_stale() -> None:
    apply = OrderedApply({"book.BTCUSD": Position("1", 10)})
    assert apply.admit(rid(1, epoch="2")) is Verdict.NEW_EPOCH
    assert apply.admit(rid(11, epoch="1")) is Verdict.STALE_EPOCH
    assert apply.admit(rid(2, epoch="2")) is Verdict.NEXT
    assert apply.counts[Verdict.STALE_EPOCH] == 1


def test_streams_are_independent() -> None:
    apply = OrderedApply()
    a = [rid(1, stream="a.X"), rid(1, stream="b.X"), rid(2, stream="a.X"), rid(2, stream="b.X")]
    accepted, problems = apply.admit_batch(a, lambda r: r)
    assert accepted == a
    assert [p.verdict for p in problems] == [Verdict.FIRST, Verdict.FIRST]


@given(st.lists(st.integers(1, 30), max_size=60))
def test_accepted_seqs_strictly_increase(seqs: list[int]) -> None:
    # Whatever the delivery (repeats, reorders), the hub never sees a seq go back.
    apply = OrderedApply()
    accepted, _ = apply.admit_batch([rid(s) for s in seqs], lambda r: r)
    got = [r.seq for r in accepted]
    assert got == sorted(set(got))
