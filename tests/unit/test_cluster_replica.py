from __future__ import annotations

from decimal import Decimal

from gateway.cluster.replica import ReplicaBooks
from gateway.contract.records import BookSnapshot, BookUpdate

E = "1"


def snap(seq: int, bids: list[tuple[str, str]]) -> BookSnapshot:
    return BookSnapshot(
        stream="book.BTCUSD", seq=seq, epoch=E, receive_time="1", market="BTCUSD",
        bids=[(Decimal(p), Decimal(a)) for p, a in bids], asks=[], resync=False,
        reason="initial",
    )  # fmt: skip


def upd(seq: int, price: str, amount: str) -> BookUpdate:
    return BookUpdate(
        stream="book.BTCUSD", seq=seq, epoch=E, receive_time="1", market="BTCUSD",
        side="bid", price=Decimal(price), amount=Decimal(amount),
    )  # fmt: skip


def test_a_snapshot_makes_a_book_and_updates_keep_it_at_the_head() -> None:
    books = ReplicaBooks()
    new = books.apply(snap(1, [("100", "1")]))
    assert new is not None and new.has_snapshot
    assert books.apply(upd(2, "99", "2")) is None
    assert books.apply(upd(3, "100", "0")) is None
    assert [(str(p), str(a)) for p, a in new.bids()] == [("99", "2")]


def test_a_lost_stream_waits_for_the_next_snapshot() -> None:
    books = ReplicaBooks()
    books.seed(snap(1, [("100", "1")]))
    fresh = books.lost("book.BTCUSD", "BTCUSD")
    assert not fresh.has_snapshot and books.books["book.BTCUSD"] is fresh
    books.apply(upd(9, "99", "2"))  # ignored: nothing to apply it to
    assert not fresh.has_snapshot
    books.apply(snap(10, [("98", "1")]))
    assert fresh.has_snapshot and [str(p) for p, _ in fresh.bids()] == ["98"]
    assert not books.waiting


def test_updates_before_any_snapshot_wait_for_one() -> None:
    books = ReplicaBooks()
    book = books.apply(upd(5, "99", "1"))
    assert book is not None and not book.has_snapshot
    assert books.apply(snap(6, [("100", "1")])) is None
    assert book.has_snapshot
