from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.contract.records import BookSnapshot, BookUpdate, Level, Price, Record, Status, Trade
from gateway.ingest.book import OrderBook
from gateway.ingest.feeds import FeedSpec, feed_from_url
from gateway.ingest.normalizer import INVALID_LOG_INTERVAL_NS, FeedNormalizer

EPOCH = "1700000000000000000"
SEC = 1_000_000_000


def D(text: str) -> Decimal:
    return Decimal(text)


def session(path: str, **kwargs: Any) -> FeedNormalizer:
    return FeedNormalizer(feed_from_url("wss://ws.sandbox.paxos.com" + path), EPOCH, **kwargs)


def snapshot(
    market: str,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    final: object = True,
) -> bytes:
    message: dict[str, object] = {
        "type": "SNAPSHOT",
        "market": market,
        "bids": [{"price": p, "amount": a} for p, a in bids],
        "asks": [{"price": p, "amount": a} for p, a in asks],
    }
    if final is not None:
        message["final_snapshot"] = final
    return json.dumps(message).encode()


def update(market: str, side: str, price: str, amount: str) -> bytes:
    return json.dumps(
        {"type": "UPDATE", "market": market, "side": side, "price": price, "amount": amount}
    ).encode()


def execution(market: str, match: str, price: str = "24228.75", amount: str = "0.5") -> str:
    return json.dumps(
        {
            "market": market,
            "price": price,
            "amount": amount,
            "executed_at": "2023-03-13T18:46:53.386Z",
            "match_number": match,
        }
    )


BTC_SNAPSHOT = snapshot(
    "BTCUSD",
    [("19994.25", "0.7755"), ("19993.75", "0.83676985")],
    [("19994.5", "0.97548541"), ("19996.00", "1.135")],
)


def of(records: list[Record], kind: type[Any]) -> list[Any]:
    return [r for r in records if isinstance(r, kind)]


def levels(*pairs: tuple[str, str]) -> list[Level]:
    return [(D(p), D(a)) for p, a in pairs]


# -- connection status --------------------------------------------------------


def test_status_goes_to_feed_stream_and_single_market_data_stream() -> None:
    s = session("/marketdata/BTCUSD")
    assert s.streams() == ["status.marketdata/BTCUSD", "book.BTCUSD"]
    records = s.connected(10)
    assert [(r.stream, r.seq, r.state) for r in of(records, Status)] == [
        ("status.marketdata/BTCUSD", 1, "connected"),
        ("book.BTCUSD", 1, "connected"),
    ]
    assert all(r.epoch == EPOCH and r.receive_time == "10" for r in records)
    assert all(r.feed == "marketdata/BTCUSD" for r in of(records, Status))
    out = s.disconnected("ping timeout", 20)
    assert [(r.stream, r.seq, r.state, r.reason) for r in of(out, Status)] == [
        ("status.marketdata/BTCUSD", 2, "disconnected", "ping timeout"),
        ("book.BTCUSD", 2, "disconnected", "ping timeout"),
    ]
    # Failed reconnect attempts do not repeat the status.
    assert s.disconnected("connect refused", 30) == []


def test_all_markets_status_fans_out_to_streams_produced_so_far() -> None:
    s = session("/marketdata")
    assert [r.stream for r in s.connected(1)] == ["status.marketdata"]
    s.receive(BTC_SNAPSHOT, 2)
    s.receive(update("ETHUSD", "BUY", "1500", "1"), 3)  # held: no stream yet
    assert s.streams() == ["status.marketdata", "book.BTCUSD"]
    assert [r.stream for r in s.disconnected("closed", 4)] == ["status.marketdata", "book.BTCUSD"]


# -- order books --------------------------------------------------------------


def test_snapshot_and_updates_single_market() -> None:
    s = session("/marketdata/BTCUSD")
    s.connected(1)
    assert not s.ready
    [snap] = s.receive(BTC_SNAPSHOT, 5)
    assert isinstance(snap, BookSnapshot)
    assert (snap.stream, snap.seq, snap.receive_time) == ("book.BTCUSD", 2, "5")
    assert (snap.market, snap.resync, snap.reason) == ("BTCUSD", False, "initial")
    assert snap.bids == levels(("19994.25", "0.7755"), ("19993.75", "0.83676985"))
    assert snap.asks == levels(("19994.5", "0.97548541"), ("19996", "1.135"))
    assert str(snap.asks[1][0]) == "19996"
    assert s.ready

    [up] = s.receive(update("BTCUSD", "BUY", "19958.50", "0.62649999"), 6)
    assert isinstance(up, BookUpdate)
    assert (up.seq, up.side, str(up.price), str(up.amount)) == (3, "bid", "19958.5", "0.62649999")
    [down] = s.receive(update("BTCUSD", "SELL", "19996.0", "0"), 7)
    assert isinstance(down, BookUpdate)
    assert (down.seq, down.side, str(down.price), str(down.amount)) == (4, "ask", "19996", "0")
    book = s.books["BTCUSD"]
    assert book.asks() == levels(("19994.5", "0.97548541"))
    assert book.bids()[-1] == (D("19958.5"), D("0.62649999"))
    assert s.stats.messages == {"snapshot": 1, "update": 2}


def test_updates_before_the_snapshot_wait_and_follow_it_in_order() -> None:
    s = session("/marketdata")
    s.connected(1)
    assert s.receive(update("BTCUSD", "BUY", "19994.25", "5"), 2) == []
    assert s.receive(update("BTCUSD", "SELL", "19994.5", "0"), 3) == []
    assert "BTCUSD" in s.books and not s.ready
    records = s.receive(BTC_SNAPSHOT, 4)
    assert [type(r) for r in records] == [BookSnapshot, BookUpdate, BookUpdate]
    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.receive_time for r in records] == ["4", "2", "3"]  # when each frame arrived
    assert of(records, BookSnapshot)[0].bids[0] == (D("19994.25"), D("0.7755"))
    assert s.books["BTCUSD"].best_bid() == (D("19994.25"), D("5"))
    assert s.books["BTCUSD"].best_ask() == (D("19996"), D("1.135"))
    assert s.ready


def test_split_snapshot_accumulates_and_holds_updates() -> None:
    s = session("/marketdata")
    s.connected(1)
    assert s.receive(snapshot("ETHUSD", [("1500", "1")], [], final=False), 2) == []
    assert s.receive(update("ETHUSD", "SELL", "1502", "3"), 3) == []
    assert s.receive(snapshot("ETHUSD", [("1499.5", "2")], [("1501", "1")], "false"), 4) == []
    assert not s.ready and not s.books["ETHUSD"].has_snapshot
    records = s.receive(snapshot("ETHUSD", [], [("1503", "4")], final=None), 5)
    snap, held = records
    assert isinstance(snap, BookSnapshot) and isinstance(held, BookUpdate)
    assert snap.bids == levels(("1500", "1"), ("1499.5", "2"))
    assert snap.asks == levels(("1501", "1"), ("1503", "4"))
    assert held.price == D("1502") and held.seq == 2
    assert s.books["ETHUSD"].asks() == levels(("1501", "1"), ("1502", "3"), ("1503", "4"))
    assert s.stats.messages["snapshot"] == 3
    assert s.ready


def test_interleaved_markets_on_the_all_markets_channel() -> None:
    s = session("/marketdata")
    s.connected(1)
    s.receive(BTC_SNAPSHOT, 2)
    assert s.receive(update("ETHUSD", "BUY", "1500", "1"), 3) == []  # ETH not snapshotted yet
    [btc] = s.receive(update("BTCUSD", "BUY", "19990", "1"), 4)
    assert btc.stream == "book.BTCUSD"
    assert not s.ready  # ETHUSD known but not synced
    assert s.unsynced_markets() == ["ETHUSD"]
    records = s.receive(snapshot("ETHUSD", [("1499", "1")], [("1501", "1")]), 5)
    assert [(r.stream, r.seq) for r in records] == [("book.ETHUSD", 1), ("book.ETHUSD", 2)]
    assert s.ready
    assert s.streams() == ["status.marketdata", "book.BTCUSD", "book.ETHUSD"]


def test_reconnect_resyncs_with_a_fresh_snapshot() -> None:
    s = session("/marketdata/BTCUSD")
    s.connected(1)
    s.receive(BTC_SNAPSHOT, 2)
    s.receive(update("BTCUSD", "BUY", "19990", "1"), 3)
    s.disconnected("connection closed", 4)
    assert not s.ready
    assert s.unsynced_markets() == ["BTCUSD"]
    s.connected(5)
    # Until the new snapshot the old book stays as published; updates wait.
    assert s.receive(update("BTCUSD", "BUY", "19991", "1"), 6) == []
    assert s.books["BTCUSD"].best_bid() == (D("19994.25"), D("0.7755"))
    records = s.receive(snapshot("BTCUSD", [("19980", "1")], [("19999", "1")]), 7)
    snap, held = records
    assert isinstance(snap, BookSnapshot)
    assert (snap.resync, snap.reason) == (True, "reconnect")
    assert snap.bids == levels(("19980", "1")) and snap.seq == s.head("book.BTCUSD") - 1
    assert isinstance(held, BookUpdate) and held.price == D("19991")
    assert s.books["BTCUSD"].bids() == levels(("19991", "1"), ("19980", "1"))
    assert s.stats.resnapshots == 1


def test_updates_held_on_the_old_connection_are_discarded() -> None:
    s = session("/marketdata")
    s.connected(1)
    s.receive(update("BTCUSD", "BUY", "1", "1"), 2)
    s.disconnected("closed", 3)
    s.connected(4)
    [snap] = s.receive(BTC_SNAPSHOT, 5)
    assert isinstance(snap, BookSnapshot) and snap.reason == "initial" and not snap.resync


def test_crossed_update_triggers_resync() -> None:
    s = session("/marketdata/BTCUSD")
    s.connected(1)
    s.receive(BTC_SNAPSHOT, 2)
    records = s.receive(update("BTCUSD", "BUY", "19994.5", "1"), 3)
    assert [type(r) for r in records] == [BookUpdate, Status, Status]
    statuses = of(records, Status)
    assert {r.stream for r in statuses} == {"status.marketdata/BTCUSD", "book.BTCUSD"}
    assert all(r.state == "resyncing" and "BTCUSD" in r.reason for r in statuses)
    assert "19994.5" in statuses[0].reason
    assert s.stats.crossed_books == 1
    assert s.resync_reason is not None and "BTCUSD" in s.resync_reason
    assert not s.ready
    # The book is known wrong: further updates wait for the repair, no repeat alarms.
    assert s.receive(update("BTCUSD", "BUY", "19994.75", "1"), 4) == []
    assert s.stats.crossed_books == 1

    s.disconnected("resync", 5)
    s.connected(6)
    assert s.resync_reason is None
    records = s.receive(BTC_SNAPSHOT, 7)
    snap = records[0]
    assert isinstance(snap, BookSnapshot) and (snap.resync, snap.reason) == (True, "crossed")
    assert [r.state for r in of(records, Status)] == ["resynced", "resynced"]
    assert not s.books["BTCUSD"].is_crossed() and s.ready
    # The next resync after that is an ordinary one again.
    s.connected(8)
    [snap] = s.receive(BTC_SNAPSHOT, 9)
    assert isinstance(snap, BookSnapshot) and snap.reason == "reconnect"


def test_crossed_snapshot_is_a_crossed_book() -> None:
    s = session("/marketdata")
    s.connected(1)
    s.receive(update("BTCUSD", "BUY", "5", "1"), 2)
    records = s.receive(snapshot("BTCUSD", [("101", "1")], [("100", "1")]), 3)
    assert [type(r) for r in records] == [BookSnapshot, Status, Status]
    assert s.stats.crossed_books == 1 and s.resync_reason is not None
    assert s.books["BTCUSD"].best_bid() == (D("101"), D("1"))  # the held update was moot


def test_crossing_while_draining_held_updates_stops_the_drain() -> None:
    s = session("/marketdata")
    s.connected(1)
    s.receive(update("BTCUSD", "BUY", "19995", "1"), 2)  # will cross the snapshot's ask
    s.receive(update("BTCUSD", "BUY", "19000", "1"), 3)
    records = s.receive(BTC_SNAPSHOT, 4)
    assert [type(r) for r in records] == [BookSnapshot, BookUpdate, Status, Status]
    assert D("19000") not in dict(s.books["BTCUSD"].bids())


def test_held_update_overflow_asks_for_a_resync() -> None:
    s = session("/marketdata", max_held_updates=3)
    s.connected(1)
    for i in range(3):
        assert s.receive(update("ETHUSD", "BUY", f"{1500 + i}", "1"), 2 + i) == []
    records = s.receive(update("ETHUSD", "BUY", "1600", "1"), 9)
    assert [r.state for r in of(records, Status)] == ["resyncing"]
    assert s.resync_reason is not None and "ETHUSD" in s.resync_reason
    # The snapshot of this connection can no longer be trusted to be followed by all updates.
    assert s.receive(snapshot("ETHUSD", [("1", "1")], []), 10) == []
    assert not s.books["ETHUSD"].has_snapshot
    s.connected(11)
    [snap] = s.receive(snapshot("ETHUSD", [("1", "1")], []), 12)
    assert isinstance(snap, BookSnapshot) and s.ready


def test_split_snapshot_level_bound() -> None:
    s = session("/marketdata", max_snapshot_levels=3)
    s.connected(1)
    s.receive(snapshot("ETHUSD", [("1", "1"), ("2", "1")], [], final=False), 2)
    records = s.receive(snapshot("ETHUSD", [("3", "1"), ("4", "1")], [], final=False), 3)
    assert [r.state for r in of(records, Status)] == ["resyncing"]
    assert s.resync_reason is not None


def test_repeated_snapshot_on_one_connection_replaces_the_book() -> None:
    s = session("/marketdata/BTCUSD")
    s.connected(1)
    s.receive(BTC_SNAPSHOT, 2)
    [snap] = s.receive(snapshot("BTCUSD", [("1", "1")], [("2", "1")]), 3)
    assert isinstance(snap, BookSnapshot) and snap.resync and snap.reason == "reconnect"
    assert s.books["BTCUSD"].bids() == levels(("1", "1"))


# -- executions and prices ----------------------------------------------------


def test_trades_and_duplicate_suppression_across_reconnects() -> None:
    s = session("/executiondata")
    s.connected(1)
    [trade] = s.receive(execution("BTCUSD", "6AJVAX7BTCH8", amount="0.00000412"), 2)
    assert isinstance(trade, Trade)
    assert (trade.stream, trade.seq, trade.match_number) == ("trades.BTCUSD", 1, "6AJVAX7BTCH8")
    assert trade.exchange_time == "1678733213386000000" and trade.receive_time == "2"
    assert str(trade.amount) == "0.00000412" and trade.price == D("24228.75")
    s.disconnected("closed", 3)
    s.connected(4)
    assert s.receive(execution("BTCUSD", "6AJVAX7BTCH8"), 5) == []  # replayed last execution
    assert s.stats.duplicates_suppressed == 1
    [nxt] = s.receive(execution("ETHUSD", "7BKWBY8CUDI9"), 6)
    assert (nxt.stream, nxt.seq) == ("trades.ETHUSD", 1)
    assert s.stats.messages == {"execution": 3}
    assert s.ready  # executions: connected is enough (idle markets are silent)


def test_dedup_window_is_bounded() -> None:
    s = session("/executiondata/BTCUSD", dedup_capacity=2)
    s.connected(1)
    for match in ("A00000000001", "A00000000002", "A00000000003"):
        assert len(s.receive(execution("BTCUSD", match), 2)) == 1
    assert len(s.receive(execution("BTCUSD", "A00000000001"), 3)) == 1  # forgotten
    assert s.receive(execution("BTCUSD", "A00000000003"), 3) == []


def test_stablecoin_prices() -> None:
    s = session("/marketdata/stablecoin/USDCUSD")
    assert s.streams() == ["status.marketdata/stablecoin/USDCUSD", "price.USDCUSD"]
    s.connected(1)
    payload = '{"market":"USDCUSD","price":"1.0000","timestamp":"2024-11-04T17:23:52.05566422Z"}'
    [price] = s.receive(payload, 2)
    assert isinstance(price, Price)
    assert (price.stream, price.seq, str(price.price)) == ("price.USDCUSD", 2, "1")
    assert price.exchange_time == "1730741032055664220"
    assert s.stats.messages == {"price": 1}


# -- errors and bad frames ----------------------------------------------------


def test_error_frame(caplog: pytest.LogCaptureFixture) -> None:
    s = session("/marketdata/NOPEUSD")
    s.connected(1)
    with caplog.at_level(logging.WARNING, logger="gateway.session"):
        assert s.receive(b'{"error":"Not Found"}', 2) == []
    assert s.stats.error_frames == 1 and s.stats.messages == {"error": 1}
    assert s.upstream_error == "Not Found" and not s.ready
    assert "Not Found" in caplog.text and "marketdata/NOPEUSD" in caplog.text
    s.connected(3)
    assert s.upstream_error is None


BAD_BOOK_FRAMES = [
    update("ETHUSD", "BUY", "1", "1"),  # wrong market for this feed
    update("BTCUSD", "BUY", "19990", "-1"),  # negative amount
    update("BTCUSD", "HOLD", "19990", "1"),  # unknown side
    update("BTCUSD", "BUY", "0", "1"),  # zero price
    update("BTCUSD", "BUY", "1e3", "1"),
    b'{"type":"UPDATE","market":"BTCUSD","side":"BUY","price":19990,"amount":"1"}',
    snapshot("BTCUSD", [("19990", "1")], [("x", "1")]),
    snapshot("BTCUSD", [("19990", "NaN")], []),
    snapshot("BTCUSD", [("0", "1")], []),
    snapshot("ETHUSD", [("1", "1")], []),
    BTC_SNAPSHOT[:-5],
    b"",
    b"\x00\xff",
    b"null",
    b'{"type":"SNAPSHOT"}',
]


@pytest.mark.parametrize("payload", BAD_BOOK_FRAMES)
def test_bad_book_frames_are_counted_and_never_touch_the_book(payload: bytes) -> None:
    s = session("/marketdata/BTCUSD")
    s.connected(1)
    s.receive(BTC_SNAPSHOT, 2)
    before = (s.books["BTCUSD"].bids(), s.books["BTCUSD"].asks())
    head = s.head("book.BTCUSD")
    assert s.receive(payload, 3) == []
    assert (s.books["BTCUSD"].bids(), s.books["BTCUSD"].asks()) == before
    assert s.head("book.BTCUSD") == head
    assert s.stats.decode_errors == 1 and s.stats.messages["invalid"] == 1
    assert s.ready  # a bad frame is skipped, not a resync


@pytest.mark.parametrize(
    "payload",
    [
        execution("BTCUSD", "A1", amount="-0.5"),
        execution("BTCUSD", "A1", amount="0"),
        execution("BTCUSD", ""),
        execution("btcusd", "A1"),
        execution("BTC/USD", "A1"),
        execution("BTCUSD", "A1").replace("2023-03-13T18:46:53.386Z", "yesterday"),
        execution("BTCUSD", "A1").replace("2023-03-13T18:46:53.386Z", "2023-03-13T18:46:53"),
    ],
)
def test_bad_executions_are_not_remembered_or_published(payload: str) -> None:
    s = session("/executiondata")
    s.connected(1)
    assert s.receive(payload, 2) == []
    assert s.stats.decode_errors == 1 and s.streams() == ["status.executiondata"]
    # A bad frame must not poison the dedup window for a good one with the same id.
    [trade] = s.receive(execution("BTCUSD", "A1"), 3)
    assert isinstance(trade, Trade)


def test_invalid_frame_logging_is_truncated_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = session("/executiondata/BTCUSD")
    s.connected(1)
    garbage = b"{" + b"x" * 5000
    with caplog.at_level(logging.WARNING, logger="gateway.session"):
        for i in range(1000):
            s.receive(garbage, 2 * SEC + i)
        assert len(caplog.records) == 1
        message = caplog.records[0].getMessage()
        assert "executiondata/BTCUSD" in message and len(message) < 600
        assert "x" * 200 not in message  # a truncated copy only
        s.receive(garbage, 2 * SEC + INVALID_LOG_INTERVAL_NS)
        assert len(caplog.records) == 2
        assert "999 more" in caplog.records[1].getMessage()
    assert s.stats.decode_errors == 1001


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=120) | st.text(max_size=120), max_size=10))
def test_garbage_never_raises_and_never_changes_a_book(payloads: list[bytes | str]) -> None:
    s = session("/marketdata")
    s.connected(1)
    s.receive(BTC_SNAPSHOT, 2)
    before = (s.books["BTCUSD"].bids(), s.books["BTCUSD"].asks())
    for payload in payloads:
        assert s.receive(payload, 3) == []  # random bytes are never a valid frame
    assert (s.books["BTCUSD"].bids(), s.books["BTCUSD"].asks()) == before
    assert list(s.books) == ["BTCUSD"]
    assert s.stats.decode_errors + s.stats.error_frames == len(payloads)


# -- the downstream view: records alone rebuild every book ---------------------

MARKETS = ["BTCUSD", "ETHUSD"]
book_prices = st.integers(1, 40).map(lambda i: f"{i}.{'5' if i % 3 else '50'}")
book_amounts = st.sampled_from(["0", "1", "2.50", "0.00000001"])
actions = st.one_of(
    st.tuples(st.just("update"), st.sampled_from(MARKETS), st.sampled_from(["BUY", "SELL"]),
              book_prices, book_amounts),
    st.tuples(st.just("snapshot"), st.sampled_from(MARKETS),
              st.lists(st.tuples(book_prices, book_amounts), max_size=4),
              st.lists(st.tuples(book_prices, book_amounts), max_size=4), st.booleans()),
    st.tuples(st.just("reconnect")),
    st.tuples(st.just("garbage"), st.binary(max_size=30)),
)  # fmt: skip


class Consumer:
    """What a subscriber does with the published records."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.seqs: dict[str, int] = {}

    def take(self, records: list[Record]) -> None:
        for r in records:
            assert r.seq == self.seqs.get(r.stream, 0) + 1, "gap or repeat"
            self.seqs[r.stream] = r.seq
            if isinstance(r, BookSnapshot):
                book = self.books.setdefault(r.market, OrderBook(r.market))
                book.replace(r.bids, r.asks)
            elif isinstance(r, BookUpdate):
                self.books[r.market].apply(r.side, r.price, r.amount)


@settings(max_examples=150)
@given(st.lists(actions, max_size=60))
def test_records_rebuild_the_session_books_exactly(steps: list[tuple[Any, ...]]) -> None:
    s = session("/marketdata", max_held_updates=8)
    consumer = Consumer()
    consumer.take(s.connected(0))
    now = 1
    for step in steps:
        now += 1
        if step[0] == "update":
            _, market, side, price, amount = step
            consumer.take(s.receive(update(market, side, price, amount), now))
        elif step[0] == "snapshot":
            _, market, bids, asks, final = step
            consumer.take(s.receive(snapshot(market, bids, asks, final), now))
        elif step[0] == "reconnect":
            consumer.take(s.disconnected("test", now))
            consumer.take(s.connected(now))
        else:
            consumer.take(s.receive(step[1], now))
        for market, book in s.books.items():
            if book.has_snapshot:
                mirror = consumer.books[market]
                assert (mirror.bids(), mirror.asks()) == (book.bids(), book.asks())
                for price, amount in book.bids() + book.asks():
                    assert "E" not in str(price) + str(amount)
                if book.is_crossed():  # never missed, and never called ready
                    assert not s.ready and s.stats.crossed_books > 0
            else:
                assert market not in consumer.books
    assert {r: s.head(r) for r in consumer.seqs} == consumer.seqs


def test_feed_spec_is_kept() -> None:
    spec = FeedSpec(name="b", url="wss://h/marketdata/BTCUSD", kind="book", market="BTCUSD")
    s = FeedNormalizer(spec, EPOCH)
    assert s.feed is spec and s.epoch == EPOCH and list(s.books) == ["BTCUSD"]


# -- an ingest takeover (docs/cluster.md) ------------------------------------------------------


def test_a_takeover_continues_the_numbering_and_its_first_snapshot_is_a_resync() -> None:
    heads = {"status.marketdata": 9, "book.BTCUSD": 120}
    s = session("/marketdata", continue_from=heads)
    connected = s.connected(1)
    assert [(r.stream, r.seq) for r in connected] == [("status.marketdata", 10)]
    [snap] = s.receive(BTC_SNAPSHOT, 2)
    assert isinstance(snap, BookSnapshot)
    assert (snap.stream, snap.seq, snap.epoch) == ("book.BTCUSD", 121, EPOCH)
    assert (snap.resync, snap.reason) == (True, "takeover")
    [up] = s.receive(update("BTCUSD", "BUY", "19958.50", "1"), 3)
    assert up.seq == 122
    # A book the former leader never published starts as any first book does.
    [eth] = s.receive(snapshot("ETHUSD", [("1500", "1")], [("1501", "1")]), 4)
    assert isinstance(eth, BookSnapshot)
    assert (eth.stream, eth.seq, eth.resync, eth.reason) == ("book.ETHUSD", 1, False, "initial")
    # After the takeover snapshot, a reconnect's snapshot is an ordinary resync.
    s.disconnected("closed", 5)
    s.connected(6)
    [again] = s.receive(BTC_SNAPSHOT, 7)
    assert isinstance(again, BookSnapshot)
    assert (again.resync, again.reason) == (True, "reconnect")


def test_a_takeover_of_a_single_market_feed_continues_its_status_on_the_book_stream() -> None:
    s = session("/marketdata/BTCUSD", continue_from={"book.BTCUSD": 5})
    assert [(r.stream, r.seq) for r in s.connected(1)] == [
        ("status.marketdata/BTCUSD", 1),
        ("book.BTCUSD", 6),
    ]
    [snap] = s.receive(BTC_SNAPSHOT, 2)
    assert isinstance(snap, BookSnapshot)
    assert (snap.seq, snap.resync, snap.reason) == (7, True, "takeover")
