"""``MarketSync``: one market's book-sync state machine, transition by transition."""

from __future__ import annotations

from gateway.ingest.book import OrderBook
from gateway.ingest.book_sync import Held, MarketSync, SyncState
from gateway.ingest.decimals import parse as dec

UPDATE: Held = ("bid", dec("100"), dec("1"), 7)


def test_a_connection_starts_awaiting_a_snapshot_and_holds_updates() -> None:
    sync = MarketSync(OrderBook("BTCUSD"))
    assert sync.state is SyncState.AWAITING_SNAPSHOT
    assert sync.hold(UPDATE, limit=2) and sync.hold(UPDATE, limit=2)
    assert not sync.hold(UPDATE, limit=2)  # the snapshot is not coming
    assert sync.synced() == [UPDATE, UPDATE]
    assert sync.state is SyncState.SYNCED and sync.held == []


def test_fragments_assemble_into_one_snapshot() -> None:
    sync = MarketSync(OrderBook("BTCUSD"))
    assert sync.add_fragment([(dec("1"), dec("1"))], []) == 1
    assert sync.state is SyncState.ASSEMBLING
    assert sync.add_fragment([], [(dec("2"), dec("1"))]) == 2
    bids, asks = sync.complete_snapshot([(dec("0.5"), dec("1"))], [])
    assert bids == [(dec("1"), dec("1")), (dec("0.5"), dec("1"))]
    assert asks == [(dec("2"), dec("1"))]
    assert sync.fragments is None


def test_a_crossed_book_is_repaired_by_a_snapshot_even_after_a_reconnect() -> None:
    sync = MarketSync(OrderBook("BTCUSD"))
    sync.synced()
    sync.crossed()
    assert sync.state is SyncState.CROSSED and sync.repairing
    sync.connection_changed()
    assert sync.state is SyncState.AWAITING_SNAPSHOT and sync.repairing
    sync.synced()
    assert sync.state is SyncState.SYNCED and not sync.repairing


def test_a_dropped_market_waits_for_the_next_connection() -> None:
    sync = MarketSync(OrderBook("BTCUSD"))
    sync.hold(UPDATE, limit=5)
    sync.add_fragment([(dec("1"), dec("1"))], [])
    sync.drop()
    assert sync.state is SyncState.DROPPED and sync.held == [] and sync.fragments is None
    sync.connection_changed()
    assert sync.state is SyncState.AWAITING_SNAPSHOT


def test_resyncing_means_a_book_that_was_synced_before() -> None:
    book = OrderBook("BTCUSD")
    sync = MarketSync(book)
    assert not sync.resyncing  # the first snapshot
    book.replace([(dec("1"), dec("1"))], [])
    sync.synced()
    assert not sync.resyncing
    sync.connection_changed()
    assert sync.resyncing
