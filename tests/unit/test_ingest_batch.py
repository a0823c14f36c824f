"""``ingest_batch``: the messages of one socket read normalized and published once, without a
socket. Being a plain function is what makes the no-checkpoint invariant hold."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence

import pytest

from gateway.contract.records import BookSnapshot, BookUpdate, Record, Status
from gateway.ingest.batch import CONTINUE, Batch, Verdict, ingest_batch
from gateway.ingest.book import OrderBook
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer

EPOCH = "1700000000000000000"


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def register_book(self, stream: str, book: OrderBook) -> None:
        self.calls.append(("register", (stream, book)))

    def publish(self, records: Sequence[Record]) -> None:
        self.calls.append(("publish", list(records)))


def normalizer(path: str = "/marketdata") -> FeedNormalizer:
    return FeedNormalizer(feed_from_url("wss://ws.sandbox.paxos.com" + path), EPOCH)


def snapshot(market: str, bid: str = "100", ask: str = "101") -> bytes:
    return json.dumps(
        {
            "type": "SNAPSHOT",
            "market": market,
            "bids": [{"price": bid, "amount": "1"}],
            "asks": [{"price": ask, "amount": "1"}],
            "final_snapshot": True,
        }
    ).encode()


def update(market: str, side: str, price: str, amount: str = "1") -> bytes:
    return json.dumps(
        {"type": "UPDATE", "market": market, "side": side, "price": price, "amount": amount}
    ).encode()


def test_it_is_a_plain_function() -> None:
    # The invariant's guard: a synchronous function cannot reach a trio checkpoint.
    assert not inspect.iscoroutinefunction(ingest_batch)
    assert not inspect.isasyncgenfunction(ingest_batch)


def test_one_read_is_one_publish_after_its_new_books_are_registered() -> None:
    n, sink = normalizer(), Sink()
    n.connected(1)
    messages = [snapshot("BTCUSD"), update("BTCUSD", "BUY", "99"), snapshot("ETHUSD")]
    batch = ingest_batch(n, sink, messages, 2)
    assert batch.verdict == CONTINUE and batch.messages == 3
    assert batch.size == sum(len(m) for m in messages)
    register_btc, register_eth, (kind, published) = sink.calls
    assert register_btc == ("register", ("book.BTCUSD", n.books["BTCUSD"]))
    assert register_eth == ("register", ("book.ETHUSD", n.books["ETHUSD"]))
    assert kind == "publish" and published == batch.records
    assert [type(r) for r in batch.records] == [BookSnapshot, BookUpdate, BookSnapshot]
    # Registered once: the next read only publishes.
    ingest_batch(n, sink, [update("ETHUSD", "SELL", "102")], 3)
    assert [call for call, _ in sink.calls[3:]] == ["publish"]


def test_nothing_to_publish_publishes_nothing() -> None:
    n, sink = normalizer("/executiondata"), Sink()
    batch = ingest_batch(n, sink, [b"not json"], 1)
    assert batch.verdict == CONTINUE and batch.records == [] and sink.calls == []
    assert batch.messages == 1


def test_a_crossed_book_stops_the_batch_and_asks_for_a_resync() -> None:
    n, sink = normalizer(), Sink()
    n.connected(1)
    messages = [snapshot("BTCUSD"), update("BTCUSD", "BUY", "105"), update("BTCUSD", "BUY", "98")]
    batch = ingest_batch(n, sink, messages, 2)
    assert batch.verdict == Verdict("resync", n.resync_reason or "")
    assert batch.verdict.reason.startswith("BTCUSD: crossed book")
    assert batch.messages == 2  # the third belongs to a connection about to be replaced
    assert any(isinstance(r, Status) and r.state == "resyncing" for r in batch.records)


def test_an_error_frame_asks_to_back_off() -> None:
    n, sink = normalizer("/marketdata/NOPEUSD"), Sink()
    n.connected(1)
    batch = ingest_batch(n, sink, [b'{"error":"Not Found"}', snapshot("NOPEUSD")], 2)
    assert batch.verdict == Verdict("upstream_error", "Not Found")
    assert batch.messages == 1


def test_records_sequenced_before_a_failure_are_still_published() -> None:
    n, sink = normalizer(), Sink()
    n.connected(1)
    original = n.receive

    def receive(payload: bytes | str, now_ns: int) -> list[Record]:
        if payload == b"boom":
            raise RuntimeError("a bug")
        return original(payload, now_ns)

    n.receive = receive  # type: ignore[method-assign]
    batch = Batch()
    with pytest.raises(RuntimeError):
        ingest_batch(n, sink, [snapshot("BTCUSD"), b"boom", snapshot("ETHUSD")], 2, batch)
    assert batch.messages == 1
    assert [call for call, _ in sink.calls] == ["register", "publish"]
    published = sink.calls[1][1]
    assert isinstance(published, list) and [type(r) for r in published] == [BookSnapshot]


def test_a_delisted_book_is_retired_and_a_relisting_registers_a_fresh_one() -> None:
    # Markets come and go: the normalizer forgets a delisted market's book; when the market
    # comes back, its new book is registered with the sink before its first record again.
    n, sink = normalizer(), Sink()
    n.connected(1)
    ingest_batch(n, sink, [snapshot("BTCUSD"), snapshot("ETHUSD")], 2)
    old = n.books["ETHUSD"]
    n.market_changed("ETHUSD", available=False, listed=False, reason="delisted", now_ns=3)
    assert "ETHUSD" not in n.books and n.unsynced_markets() == [] and n.ready
    sink.calls.clear()
    ingest_batch(n, sink, [snapshot("ETHUSD", "200", "201")], 4)
    n.market_changed("ETHUSD", available=True, listed=True, reason="relisted", now_ns=5)
    (register, (stream, book)), (publish, published) = sink.calls
    assert (register, stream, publish) == ("register", "book.ETHUSD", "publish")
    assert book is n.books["ETHUSD"] and book is not old
    assert isinstance(published, list)
    (record,) = published
    assert isinstance(record, BookSnapshot) and record.reason == "initial" and not record.resync
    assert n.ready
