"""The edge's synchronous step (``EdgeRole.deliver``) on hand-made deliveries: order, a gap's
resync, unreadable messages, and the hub it feeds. No server: the batches are what the ordered
consumer would hand over."""

from __future__ import annotations

from decimal import Decimal

from gateway.cluster import subjects
from gateway.cluster.codec import encode_record
from gateway.cluster.subjects import StreamLayout
from gateway.contract.records import BookSnapshot, BookUpdate, Record
from gateway.fanout.hub import Hub
from gateway.io.edge_role import EdgeRole
from gateway.io.nats_bridge import Delivery

E = "1795582622048325592"
BOOK = "book.BTCUSD"


def snap(seq: int, bid: str) -> BookSnapshot:
    return BookSnapshot(
        stream=BOOK, seq=seq, epoch=E, receive_time=str(seq), market="BTCUSD",
        bids=[(Decimal(bid), Decimal(1))], asks=[(Decimal(100_000), Decimal(1))], resync=False,
        reason="initial",
    )  # fmt: skip


def upd(seq: int, bid: str) -> BookUpdate:
    return BookUpdate(
        stream=BOOK, seq=seq, epoch=E, receive_time=str(seq), market="BTCUSD",
        side="bid", price=Decimal(bid), amount=Decimal(2),
    )  # fmt: skip


def delivery(record: Record, stream_seq: int, pending: int = 0) -> Delivery:
    return Delivery(
        subjects.record_subject(record.stream),
        encode_record(record),
        subjects.publish_headers(record.epoch, record.stream, record.seq, None),
        stream_seq,
        pending,
    )


def test_records_reach_the_hub_in_order_and_a_gap_waits_for_the_next_snapshot() -> None:
    hub = Hub("1")
    edge = EdgeRole(hub, layout=StreamLayout(replicas=1))
    edge.stats.catchup_target = 3  # what run() reads from the stream before the first batch
    edge.deliver([delivery(snap(1, "100"), 1, 2), delivery(upd(2, "101"), 2, 1)])
    assert hub.head(BOOK) == 2 and hub.epoch == E
    book = hub.snapshot(BOOK)
    assert book is not None and [str(p) for p, _ in book.bids] == ["101", "100"]
    assert not edge.ready
    edge.deliver([delivery(upd(2, "101"), 3, 0)])  # a repeat (a consumer reset): dropped
    assert hub.head(BOOK) == 2 and edge.ready
    edge.deliver([delivery(upd(5, "102"), 4)])  # 3 and 4 aged out before this edge read them
    assert edge.stats.resyncs == 1
    assert hub.snapshot(BOOK) is None  # no late-joiner snapshot from a book known to be wrong
    edge.deliver([delivery(snap(6, "99"), 5)])
    fresh = hub.snapshot(BOOK)
    assert fresh is not None and [str(p) for p, _ in fresh.bids] == ["99"]
    assert edge.stats.records == 4 and edge.stats.last_stream_seq == 5


def test_an_unreadable_message_is_counted_and_dropped() -> None:
    hub = Hub("1")
    edge = EdgeRole(hub, layout=StreamLayout(replicas=1))
    bad_headers = Delivery(subjects.record_subject(BOOK), b"{}", None, 1, 1)
    bad_body = delivery(snap(1, "100"), 2, 0)
    bad_body = Delivery(bad_body.subject, b"not json", bad_body.headers, 2, 0)
    edge.deliver([bad_headers, bad_body])
    assert edge.stats.undecodable == 2 and hub.head(BOOK) == 0
