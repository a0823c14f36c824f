"""One feed's book frames: SNAPSHOT and UPDATE messages in, book records out.

``FeedNormalizer`` hands every book message here. Each market's sync state is its
``book_sync.MarketSync``; this class applies the rules of the normalizer's docstring with it:
updates wait (bounded) until the market's snapshot of the current connection is complete, a
split snapshot is assembled (bounded), and a crossed book or lost updates ask for a resync.
Records are stamped and statuses published through the normalizer, which owns the sequence
numbers and the streams.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from gateway.contract.records import BookSnapshot, BookUpdate, Level, Record, Side
from gateway.ingest import decimals, paxos_messages
from gateway.ingest.book import OrderBook
from gateway.ingest.book_sync import DROPPED, SYNCED, Held, MarketSync

if TYPE_CHECKING:
    from gateway.ingest.normalizer import FeedNormalizer

__all__ = ["BookFrames"]

_SIDES: dict[str, Side] = {"BUY": "bid", "SELL": "ask"}


class BookFrames:
    """The books of one feed and their sync state machines."""

    def __init__(
        self, normalizer: FeedNormalizer, *, max_held_updates: int, max_snapshot_levels: int
    ) -> None:
        self._n = normalizer
        self.max_held = max_held_updates
        self.max_snapshot_levels = max_snapshot_levels
        self.books: dict[str, OrderBook] = {}
        # Every book's sync state (the same markets as ``books``).
        self.sync: dict[str, MarketSync] = {}
        # Books created since ``take_new_books`` was last called.
        self.new_books: list[tuple[str, OrderBook]] = []

    def add_book(self, market: str) -> MarketSync:
        book = self.books[market] = OrderBook(market)
        sync = self.sync[market] = MarketSync(book)
        self.new_books.append((self._n.feed.stream_for(market), book))
        return sync

    def connection_changed(self) -> None:
        for sync in self.sync.values():
            sync.connection_changed()

    def all_synced(self, unavailable: Container[str] = ()) -> bool:
        """At least one book, and every book synced but those of ``unavailable`` markets
        (halted or delisted: not waited for)."""
        if not unavailable:  # the common case
            return bool(self.sync) and all(s.state is SYNCED for s in self.sync.values())
        wanted = [s for m, s in self.sync.items() if m not in unavailable]
        return bool(wanted) and all(s.state is SYNCED for s in wanted)

    def retire(self, market: str) -> None:
        """Forget a delisted market's book and sync state: a relisting starts over with a
        fresh book (``add_book``, registered with the hub by ``ingest.batch``)."""
        self.books.pop(market, None)
        self.sync.pop(market, None)
        self.new_books = [(st, b) for st, b in self.new_books if b.market != market]

    def on_update(self, msg: paxos_messages.BookUpdate, now_ns: int) -> list[Record]:
        market = msg.market
        side = _SIDES[msg.side]  # msgspec already restricted it to BUY/SELL
        price = self._n._prices.parse(msg.price)
        amount = decimals.parse(msg.amount)
        if not price:
            raise ValueError(f"book update at price zero in {market}")
        sync = self.sync.get(market)
        if sync is None or sync.state is not SYNCED:
            return self._hold(market, sync, (side, price, amount, now_ns), now_ns)
        self._n.stats.count_message("update")
        book = sync.book
        book.apply(side, price, amount)
        record = BookUpdate(
            **self._n._stamp(self._n._streams[market], now_ns),
            market=market,
            side=side,
            price=price,
            amount=amount,
        )
        # The book was not crossed before (else the market would not be
        # synced), so only a non-zero level can have crossed it.
        if amount and book.crosses(side, price):
            return [record, *self._book_crossed(sync, now_ns)]
        return [record]

    def _hold(
        self, market: str, sync: MarketSync | None, update: Held, now_ns: int
    ) -> list[Record]:
        if sync is None:
            self._n._check_new_market(market)
            sync = self.add_book(market)
        self._n.stats.count_message("update")
        if sync.state is DROPPED:
            return []
        if not sync.hold(update, self.max_held):
            return self._drop_market(
                sync,
                f"{market}: {len(sync.held)} updates waited for a snapshot that did not come",
                now_ns,
            )
        return []

    def on_snapshot(self, msg: paxos_messages.BookSnapshot, now_ns: int) -> list[Record]:
        market = msg.market
        sync = self.sync.get(market)
        if sync is None:
            self._n._check_new_market(market)
        # Plain parse, not the cache: deep levels would only churn it.
        parse = decimals.parse
        bids = [(parse(level.price), parse(level.amount)) for level in msg.bids]
        asks = [(parse(level.price), parse(level.amount)) for level in msg.asks]
        for price, _ in bids:
            if not price:
                raise ValueError(f"snapshot level at price zero in {market}")
        for price, _ in asks:
            if not price:
                raise ValueError(f"snapshot level at price zero in {market}")
        # Validated: from here on the frame is accepted.
        self._n.stats.count_message("snapshot")
        if sync is None:
            sync = self.add_book(market)
        if sync.state is DROPPED:
            return []
        if not msg.is_final:
            if sync.add_fragment(bids, asks) > self.max_snapshot_levels:
                return self._drop_market(
                    sync, f"{market}: split snapshot exceeds {self.max_snapshot_levels} levels",
                    now_ns,
                )  # fmt: skip
            return []
        bids, asks = sync.complete_snapshot(bids, asks)
        return self._complete_snapshot(sync, bids, asks, now_ns)

    def _complete_snapshot(
        self, sync: MarketSync, bids: list[Level], asks: list[Level], now_ns: int
    ) -> list[Record]:
        book = sync.book
        market = book.market
        stream = self._n._streams.get(market) or self._n._add_stream(market)
        # A takeover (docs/cluster.md): the former leader published this book in this epoch.
        takeover = not book.has_snapshot and stream in self._n.continued
        resync = book.has_snapshot or takeover
        repaired = sync.repairing
        if takeover:
            reason = "takeover"
        elif not resync:
            reason = "initial"
        elif repaired:
            reason = "crossed"
        else:
            # After a reconnect, or upstream re-sent a snapshot on the same
            # connection (a failover on its side): either way a resync.
            reason = "reconnect"
        book.replace(bids, asks)
        if resync:
            self._n.stats.resnapshots += 1
        records: list[Record] = [
            BookSnapshot(
                **self._n._stamp(stream, now_ns),
                market=market,
                bids=book.bids(),
                asks=book.asks(),
                resync=resync,
                reason=reason,
            )
        ]
        if book.is_crossed():
            # Upstream's own snapshot is crossed: its waiting updates are moot.
            records += self._book_crossed(sync, now_ns)
            return records
        held = sync.synced()
        if repaired:
            records += self._n._status("resynced", f"{market}: fresh snapshot", now_ns)
        for side, price, amount, received in held:
            book.apply(side, price, amount)
            records.append(
                BookUpdate(
                    **self._n._stamp(stream, received),
                    market=market,
                    side=side,
                    price=price,
                    amount=amount,
                )
            )
            if amount and book.crosses(side, price):
                # The rest would be applied to a book known to be wrong; the
                # reconnect's snapshot supersedes them.
                records += self._book_crossed(sync, now_ns)
                break
        return records

    def _book_crossed(self, sync: MarketSync, now_ns: int) -> list[Record]:
        book = sync.book
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None
        self._n.stats.crossed_books += 1
        sync.crossed()
        reason = (
            f"{book.market}: crossed book, best bid {decimals.to_str(bid[0])} >= "
            f"best ask {decimals.to_str(ask[0])}"
        )
        return self._n._request_resync(reason, now_ns)

    def _drop_market(self, sync: MarketSync, reason: str, now_ns: int) -> list[Record]:
        # Updates were lost for good on this connection: stop taking any for
        # this market and have the connection replaced.
        sync.drop()
        return self._n._request_resync(reason, now_ns)
