"""ingest/markets.py and FeedNormalizer.market_changed: markets come and go."""

from __future__ import annotations

from gateway.contract.records import Status
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.markets import MarketChange, MarketDirectory
from gateway.ingest.normalizer import FeedNormalizer
from gateway.ingest.paxos_rest import MarketInfo

OPEN = MarketInfo("BTCUSD", True, "")
ETH = MarketInfo("ETHUSD", True, "")
ETH_HALTED = MarketInfo("ETHUSD", False, "MARKET_HALTED")


def test_the_first_list_reports_only_what_is_unavailable() -> None:
    directory = MarketDirectory()
    assert directory.update([OPEN, ETH_HALTED]) == [
        MarketChange("ETHUSD", False, True, "ETHUSD: halted (MARKET_HALTED)")
    ]
    assert directory.listed == {"BTCUSD", "ETHUSD"}


def test_halts_delistings_returns_and_new_markets() -> None:
    directory = MarketDirectory()
    assert directory.update([OPEN, ETH]) == []
    assert directory.update([OPEN, ETH]) == []  # nothing changed
    assert directory.update([OPEN, ETH_HALTED]) == [
        MarketChange("ETHUSD", False, True, "ETHUSD: halted (MARKET_HALTED)")
    ]
    assert directory.update([OPEN, ETH]) == [
        MarketChange("ETHUSD", True, True, "ETHUSD: trading again")
    ]
    assert directory.update([ETH]) == [
        MarketChange("BTCUSD", False, False, "BTCUSD: no longer listed by Paxos")
    ]
    assert directory.update([ETH, OPEN]) == [
        MarketChange("BTCUSD", True, True, "BTCUSD: newly listed")
    ]


SNAPSHOT = (
    '{{"type":"SNAPSHOT","market":"{m}","bids":[{{"price":"1","amount":"1"}}],'
    '"asks":[{{"price":"2","amount":"1"}}],"final_snapshot":true}}'
)


def test_an_unavailable_market_is_announced_and_not_waited_for() -> None:
    session = FeedNormalizer(feed_from_url("ws://x/marketdata"), epoch=1)
    session.connected(0)
    for market in ("BTCUSD", "ETHUSD"):
        session.receive(SNAPSHOT.format(m=market), 1)
    assert session.ready
    session.connected(2)  # a reconnect: ETHUSD's book never comes again (delisted)
    session.receive(SNAPSHOT.format(m="BTCUSD"), 3)
    assert not session.ready and session.unsynced_markets() == ["ETHUSD"]
    records = session.market_changed(
        "ETHUSD", available=False, listed=False, reason="ETHUSD: no longer listed", now_ns=4
    )
    assert [(r.stream, type(r).__name__) for r in records] == [
        ("status.marketdata", "Status"),
        ("book.ETHUSD", "Status"),
    ]
    status = records[1]
    assert isinstance(status, Status)
    assert (status.state, status.market) == ("market_unavailable", "ETHUSD")
    assert session.ready and session.unsynced_markets() == []
    # retired: no longer a stream of this feed, its book forgotten
    assert "book.ETHUSD" not in session.streams() and "ETHUSD" not in session.books
    # relisted: the book starts over from its first snapshot, in the same stream, seq going on
    records = session.market_changed(
        "ETHUSD", available=True, listed=True, reason="ETHUSD: newly listed", now_ns=5
    )
    assert [(r.stream, r.seq, getattr(r, "state", None)) for r in records] == [
        ("status.marketdata", 4, "market_available"),
        ("book.ETHUSD", 4, "market_available"),
    ]
    assert session.unavailable == {}
    assert session.ready  # its book counts again once Paxos sends it
    again = session.receive(SNAPSHOT.format(m="ETHUSD"), 6)
    assert [(r.stream, r.seq, getattr(r, "reason", None)) for r in again] == [
        ("book.ETHUSD", 5, "initial")
    ]
    assert session.ready


def test_a_single_market_feed_whose_market_halted_is_not_waited_for() -> None:
    session = FeedNormalizer(feed_from_url("ws://x/marketdata/ETHUSD"), epoch=1)
    assert not session.market_gone
    session.market_changed(
        "ETHUSD", available=False, listed=True, reason="ETHUSD: halted", now_ns=1
    )
    assert session.market_gone and session.unavailable == {"ETHUSD": "ETHUSD: halted"}
    session.market_changed("ETHUSD", available=True, listed=True, reason="back", now_ns=2)
    assert not session.market_gone
    # markets the feed never saw: nothing to say
    assert (
        session.market_changed("BTCUSD", available=False, listed=False, reason="x", now_ns=3) == []
    )
