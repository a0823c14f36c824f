from __future__ import annotations

import json

from gateway.cluster.outbound import CHECKPOINT_REASON, Outbound
from gateway.contract.records import BookSnapshot
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer

EPOCH = "1700000000000000000"


def frame(**fields: object) -> bytes:
    return json.dumps(fields).encode()


SNAP = frame(
    type="SNAPSHOT",
    market="BTCUSD",
    bids=[{"price": "100", "amount": "1"}],
    asks=[{"price": "101", "amount": "2"}],
    final_snapshot=True,
)


def up(price: str, amount: str, side: str = "BUY") -> bytes:
    return frame(type="UPDATE", market="BTCUSD", side=side, price=price, amount=amount)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def feed_into(out: Outbound, session: FeedNormalizer, *messages: bytes) -> None:
    records = []
    for m in messages:
        records += session.receive(m, 1)
    for stream, book in session.take_new_books():
        out.register_book(stream, book)
    out.publish(records)


def test_records_queue_in_order_and_a_checkpoint_is_the_book_at_its_seq() -> None:
    clock = Clock()
    woken: list[int] = []
    out = Outbound(5.0, clock, on_pending=lambda: woken.append(1))
    session = FeedNormalizer(feed_from_url("wss://x/marketdata/BTCUSD"), EPOCH)
    feed_into(out, session, *[])
    out.publish(session.connected(0))
    feed_into(out, session, SNAP, up("99", "3"))
    assert woken == [1]  # once, on empty -> non-empty
    records, checkpoints = out.take()
    assert [r.seq for r in records if r.stream == "book.BTCUSD"] == [1, 2, 3]
    [cp] = checkpoints
    assert (cp.stream, cp.seq, cp.reason, cp.resync) == ("book.BTCUSD", 3, CHECKPOINT_REASON, False)
    assert [str(p) for p, _ in cp.bids] == ["100", "99"]
    # Not due again within the interval; due after it, at the then head.
    feed_into(out, session, up("98", "1"))
    assert out.take()[1] == []
    clock.now = 5.0
    feed_into(out, session, up("97", "1"), up("97", "0"))
    records, [cp2] = out.take()
    assert cp2.seq == records[-1].seq == 6
    assert [str(p) for p, _ in cp2.bids] == ["100", "99", "98"]
    assert out.pending == 0


def test_no_checkpoint_of_a_book_waiting_for_its_resync() -> None:
    clock = Clock()
    out = Outbound(0.0, clock)
    session = FeedNormalizer(feed_from_url("wss://x/marketdata/BTCUSD"), EPOCH)
    out.publish(session.connected(0))
    feed_into(out, session, SNAP)
    out.take()
    feed_into(out, session, up("102", "1"))  # crosses the ask: a resync is asked for
    records, checkpoints = out.take()
    assert records[-1].stream == "book.BTCUSD" and not isinstance(records[-1], BookSnapshot)
    assert checkpoints == []
