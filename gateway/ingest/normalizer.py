"""FeedNormalizer: one upstream feed's frames in, normalized and sequenced records out.

Sans-IO: the upstream task owns the socket and the clock, and calls
``connected`` / ``receive`` / ``disconnected`` with the time; each returns the
records to publish, in order. One session per configured feed lives across
reconnects, so books, sequence numbers and the execution dedup window survive
them.

Streams: every data record goes to ``<kind>.<market>``; every status change
goes to ``status.<feed name>`` and to every data stream the feed has produced
so far (a single-market feed's stream counts from the start), so a consumer
of one market sees its feed's outages in line with the data.

Order books (no sequence numbers upstream, so these rules are the protection):

* A SNAPSHOT replaces the market's book and is published whole. Fragments
  (``final_snapshot`` false) accumulate until the final one.
* A market's UPDATEs wait (parsed, bounded) until its snapshot of the current
  connection is complete, then are applied in arrival order after it: on the
  all-markets channel the order across markets is unknown. Too many waiting
  updates means the snapshot is not coming: that market is dropped for the
  rest of the connection and ``resync_reason`` asks for a reconnect.
* After every applied update (and for every snapshot) a crossed book, best
  bid >= best ask, means an update was missed: a "resyncing" status is
  published, the market's updates wait again, and ``resync_reason`` asks the
  upstream task to reconnect, whose fresh snapshot repairs the book.

A bad frame (undecodable, or failing validation) never raises and never
touches a book: it is counted, logged (rate-limited) and skipped.

``ready``: connected, no pending resync or upstream error, and for book feeds
at least one book and every known book synced in this connection. Executions
and stablecoin feeds are ready once connected: an idle market may
legitimately send nothing for a long time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gateway.contract.records import (
    BookSnapshot,
    BookUpdate,
    Level,
    Price,
    Record,
    Side,
    Status,
    StatusState,
    Trade,
)
from gateway.ingest import decimals, paxos_messages, timestamps
from gateway.ingest.backfill import Notice, NoticeState, Release, TapeTrade, TradeTape
from gateway.ingest.book import OrderBook
from gateway.ingest.dedup import RecentIds
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.sequence import Sequencer
from gateway.io.metrics import FeedStats

__all__ = ["FeedNormalizer"]

log = logging.getLogger("gateway.session")

# Same rule as feeds.py applies to configured markets: a market named by a
# frame on an all-markets channel becomes a stream name, so it must be tame.
_MARKET = re.compile(r"[A-Z0-9]{2,20}")
_MAX_MATCH_NUMBER = 64
EXCERPT_CHARS = 200
# A storm of bad frames must not flood the logs: one line per interval per
# feed, each saying how many were dropped silently since the previous line.
INVALID_LOG_INTERVAL_NS = 10_000_000_000

_SIDES: dict[str, Side] = {"BUY": "bid", "SELL": "ask"}

# A held update: side, price, amount and the receive time of its frame.
_Held = tuple[Side, Decimal, Decimal, int]


class FeedNormalizer:
    def __init__(
        self,
        feed: FeedSpec,
        epoch: str,
        *,
        dedup_capacity: int = 65536,
        max_held_updates: int = 10_000,
        max_snapshot_levels: int = 1_000_000,
        price_cache: int = 16384,
        tape: TradeTape | None = None,
    ) -> None:
        self.feed = feed
        # Backfill (ingest/backfill.py): holds live executions while a REST backfill runs.
        self.tape = tape
        # Markets Paxos halted or delisted (ingest/markets.py) -> why; not waited for.
        self.unavailable: dict[str, str] = {}
        self.epoch = epoch
        self.stats = FeedStats()
        self.books: dict[str, OrderBook] = {}
        # Set when the connection must be replaced (crossed book, lost
        # updates); the upstream task reconnects and ``connected`` clears it.
        self.resync_reason: str | None = None
        # Set by an upstream ``{"error": ...}`` frame; the upstream task backs
        # off before reconnecting. Cleared by ``connected``.
        self.upstream_error: str | None = None

        self._max_held = max_held_updates
        self._max_snapshot_levels = max_snapshot_levels
        self._decoder = paxos_messages.decoder_for(feed.kind)
        self._seq = Sequencer()
        self._dedup = RecentIds(dedup_capacity)
        self._prices = decimals.ParseCache(price_cache)
        self._status_stream = f"status.{feed.name}"
        # market -> its stream, for markets whose stream has had a record (or,
        # for a single-market feed, from the start). Also the status fan-out.
        self._streams: dict[str, str] = {}
        self._connected = False
        # Book state of the current connection.
        self._synced: set[str] = set()
        self._held: dict[str, list[_Held]] = {}
        self._fragments: dict[str, tuple[list[Level], list[Level]]] = {}
        self._dropping: set[str] = set()
        # Markets whose book was found crossed; their next snapshot is the repair.
        self._crossed: set[str] = set()

        self._invalid_logged_at: int | None = None
        self._invalid_unlogged = 0

        if feed.market is not None:
            self._streams[feed.market] = feed.stream_for(feed.market)
            if feed.kind == "book":
                self.books[feed.market] = OrderBook(feed.market)

        self._handlers: dict[type[Any], Callable[[Any, int], list[Record]]] = {
            paxos_messages.Execution: self._on_execution,
            paxos_messages.BookUpdate: self._on_update,
            paxos_messages.BookSnapshot: self._on_snapshot,
            paxos_messages.StablecoinPrice: self._on_price,
            paxos_messages.ErrorFrame: self._on_error,
        }

    # -- public surface ------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def ready(self) -> bool:
        if not self._connected or self.resync_reason is not None or self.upstream_error:
            return False
        if self.feed.kind != "book":
            return True
        if not self.unavailable:  # the common case: _synced only holds markets with a book
            return bool(self.books) and len(self._synced) == len(self.books)
        wanted = [m for m in self.books if m not in self.unavailable]
        return bool(wanted) and all(m in self._synced for m in wanted)

    @property
    def market_gone(self) -> bool:
        """A single-market feed whose market Paxos halted or delisted: nothing to wait for."""
        return self.feed.market is not None and self.feed.market in self.unavailable

    def streams(self) -> list[str]:
        """The status stream, then every data stream produced so far."""
        return [self._status_stream, *self._streams.values()]

    def unsynced_markets(self) -> list[str]:
        """Known book markets still waiting for their snapshot on this connection
        (or for a repair after a crossed book), sorted; for /readyz explanations.
        ``OrderBook.has_snapshot`` cannot tell this: it stays true across reconnects."""
        return sorted(m for m in self.books if m not in self._synced and m not in self.unavailable)

    def head(self, stream: str) -> int:
        """Sequence number of the last record published on ``stream`` (0: none)."""
        return self._seq.head(stream)

    def connected(self, now_ns: int) -> list[Record]:
        """A new upstream connection is open; the feed starts over from snapshots."""
        self._connected = True
        self.resync_reason = None
        self.upstream_error = None
        self._reset_connection_state()
        if self.tape is not None:  # backfill hook: hold executions until the backfill is in
            self.tape.connected(now_ns)
        return self._status("connected", f"connected to {self.feed.url}", now_ns)

    def disconnected(self, reason: str, now_ns: int) -> list[Record]:
        """The upstream connection is gone. Publishes a status only on the
        transition, so failed reconnect attempts do not repeat it."""
        if not self._connected:
            return []
        self._connected = False
        self._reset_connection_state()
        return self._status("disconnected", reason, now_ns)

    def receive(self, payload: bytes | str, now_ns: int) -> list[Record]:
        """One upstream frame, received at ``now_ns``. Never raises for bad input."""
        try:
            message = self._decoder.decode(payload)
            return self._handlers[type(message)](message, now_ns)
        except ValueError as exc:  # WireError, DecimalError, TimestampError, checks
            return self._invalid(payload, exc, now_ns)

    def release(self, release: Release, now_ns: int) -> list[Record]:
        """Sequence what the trade tape released (backfill): its notices as status records,
        then its executions as trades, in the order given."""
        records: list[Record] = []
        for notice in release.notices:
            records += self._notice(notice, now_ns)
        for t in release.trades:
            stream = self._streams.get(t.market) or self._add_stream(t.market)
            records.append(
                Trade(
                    stream=stream,
                    seq=self._seq.next(stream),
                    epoch=self.epoch,
                    receive_time=str(t.receive_time),
                    market=t.market,
                    price=t.price,
                    amount=t.amount,
                    match_number=t.match_number,
                    exchange_time=str(t.exchange_time),
                    backfilled=t.backfilled,
                )
            )
        return records

    def market_changed(
        self, market: str, *, available: bool, listed: bool, reason: str, now_ns: int
    ) -> list[Record]:
        """Markets come and go (ingest/markets.py): announce ``market``'s new state in its
        stream and the feed's status stream. Unavailable, it no longer counts for readiness;
        delisted (not ``listed``), its book and stream are retired: forgotten here, so a
        relisting starts over from a fresh snapshot (``initial``) in the same stream."""
        known = market in self._streams or market in self.books or market in self.unavailable
        if not known:
            return []  # never seen on this feed: nothing to announce or retire
        if available:
            self.unavailable.pop(market, None)
        else:
            self.unavailable[market] = reason
        state: NoticeState = "market_available" if available else "market_unavailable"
        records = self._notice(Notice(state, market, reason), now_ns)
        if not listed and self.feed.market is None:
            self.books.pop(market, None)
            self._synced.discard(market)
            self._held.pop(market, None)
            self._fragments.pop(market, None)
            self._crossed.discard(market)
            self._streams.pop(market, None)  # no more feed statuses into a retired stream
        return records

    def _notice(self, notice: Notice, now_ns: int) -> list[Record]:
        log.log(
            logging.INFO if notice.state == "market_available" else logging.WARNING,
            "feed %s: %s: %s", self.feed.name, notice.state, notice.reason,
            extra={"feed": self.feed.name, "event": notice.state, "reason": notice.reason,
                   "market": notice.market},
        )  # fmt: skip
        if notice.market is None:
            return self._status(notice.state, notice.reason, now_ns)
        stream = self._streams.get(notice.market) or self._add_stream(notice.market)
        return [
            Status(
                stream=name,
                seq=self._seq.next(name),
                epoch=self.epoch,
                receive_time=str(now_ns),
                feed=self.feed.name,
                state=notice.state,
                reason=notice.reason,
                market=notice.market,
                gap_from=None if notice.gap_from is None else str(notice.gap_from),
                gap_to=None if notice.gap_to is None else str(notice.gap_to),
            )
            for name in (self._status_stream, stream)
        ]

    # -- executions and prices -------------------------------------------------

    def _on_execution(self, msg: paxos_messages.Execution, now_ns: int) -> list[Record]:
        market = msg.market
        stream = self._streams.get(market)
        if stream is None:
            self._check_new_market(market)
        price = self._prices.parse(msg.price)
        amount = decimals.parse(msg.amount)
        exchange_time = timestamps.parse_ns(msg.executed_at)
        match_number = msg.match_number
        if not price or not amount:
            raise ValueError(f"execution with zero price or amount: {msg.price} x {msg.amount}")
        if not match_number or len(match_number) > _MAX_MATCH_NUMBER:
            raise ValueError(f"bad match_number {match_number[:_MAX_MATCH_NUMBER]!r}")
        self.stats.count_message("execution")
        if not self._dedup.add(match_number):
            self.stats.duplicates_suppressed += 1
            return []
        if self.tape is not None:  # backfill hook: the tape may hold it, or release a batch
            trade = TapeTrade(market, price, amount, match_number, exchange_time, now_ns)
            return self.release(self.tape.live(trade), now_ns)
        if stream is None:
            stream = self._add_stream(market)
        return [
            Trade(
                stream=stream,
                seq=self._seq.next(stream),
                epoch=self.epoch,
                receive_time=str(now_ns),
                market=market,
                price=price,
                amount=amount,
                match_number=match_number,
                exchange_time=str(exchange_time),
            )
        ]

    def _on_price(self, msg: paxos_messages.StablecoinPrice, now_ns: int) -> list[Record]:
        market = msg.market
        stream = self._streams.get(market)
        if stream is None:
            self._check_new_market(market)
        price = self._prices.parse(msg.price)
        exchange_time = timestamps.parse_ns(msg.timestamp)
        if not price:
            raise ValueError("stablecoin price of zero")
        self.stats.count_message("price")
        if stream is None:
            stream = self._add_stream(market)
        return [
            Price(
                stream=stream,
                seq=self._seq.next(stream),
                epoch=self.epoch,
                receive_time=str(now_ns),
                market=market,
                price=price,
                exchange_time=str(exchange_time),
            )
        ]

    # -- order book ------------------------------------------------------------

    def _on_update(self, msg: paxos_messages.BookUpdate, now_ns: int) -> list[Record]:
        market = msg.market
        side = _SIDES[msg.side]  # msgspec already restricted it to BUY/SELL
        price = self._prices.parse(msg.price)
        amount = decimals.parse(msg.amount)
        if not price:
            raise ValueError(f"book update at price zero in {market}")
        if market not in self._synced:
            return self._hold(market, side, price, amount, now_ns)
        self.stats.count_message("update")
        book = self.books[market]
        book.apply(side, price, amount)
        stream = self._streams[market]
        record = BookUpdate(
            stream=stream,
            seq=self._seq.next(stream),
            epoch=self.epoch,
            receive_time=str(now_ns),
            market=market,
            side=side,
            price=price,
            amount=amount,
        )
        # The book was not crossed before (else the market would not be
        # synced), so only a non-zero level can have crossed it.
        if amount and book.crosses(side, price):
            return [record, *self._book_crossed(book, now_ns)]
        return [record]

    def _hold(
        self, market: str, side: Side, price: Decimal, amount: Decimal, now_ns: int
    ) -> list[Record]:
        if market not in self.books:
            self._check_new_market(market)
            self.books[market] = OrderBook(market)
        self.stats.count_message("update")
        if market in self._dropping:
            return []
        held = self._held.get(market)
        if held is None:
            held = self._held[market] = []
        if len(held) >= self._max_held:
            return self._drop_market(
                market,
                f"{market}: {len(held)} updates waited for a snapshot that did not come",
                now_ns,
            )
        held.append((side, price, amount, now_ns))
        return []

    def _on_snapshot(self, msg: paxos_messages.BookSnapshot, now_ns: int) -> list[Record]:
        market = msg.market
        if market not in self.books:
            self._check_new_market(market)
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
        self.stats.count_message("snapshot")
        book = self.books.get(market)
        if book is None:
            book = self.books[market] = OrderBook(market)
        if market in self._dropping:
            return []
        self._synced.discard(market)  # a snapshot in progress: updates wait
        fragments = self._fragments.pop(market, None)
        if fragments is not None:
            fragments[0].extend(bids)
            fragments[1].extend(asks)
            bids, asks = fragments
        if not msg.is_final:
            if len(bids) + len(asks) > self._max_snapshot_levels:
                return self._drop_market(
                    market, f"{market}: split snapshot exceeds {self._max_snapshot_levels} levels",
                    now_ns,
                )  # fmt: skip
            self._fragments[market] = (bids, asks)
            return []
        return self._complete_snapshot(book, bids, asks, now_ns)

    def _complete_snapshot(
        self, book: OrderBook, bids: list[Level], asks: list[Level], now_ns: int
    ) -> list[Record]:
        market = book.market
        resync = book.has_snapshot
        repaired = market in self._crossed
        if not resync:
            reason = "initial"
        elif repaired:
            reason = "crossed"
        else:
            # After a reconnect, or upstream re-sent a snapshot on the same
            # connection (a failover on its side): either way a resync.
            reason = "reconnect"
        book.replace(bids, asks)
        if resync:
            self.stats.resnapshots += 1
        stream = self._streams.get(market) or self._add_stream(market)
        records: list[Record] = [
            BookSnapshot(
                stream=stream,
                seq=self._seq.next(stream),
                epoch=self.epoch,
                receive_time=str(now_ns),
                market=market,
                bids=book.bids(),
                asks=book.asks(),
                resync=resync,
                reason=reason,
            )
        ]
        held = self._held.pop(market, ())
        if book.is_crossed():
            # Upstream's own snapshot is crossed: its waiting updates are moot.
            records += self._book_crossed(book, now_ns)
            return records
        self._synced.add(market)
        if repaired:
            self._crossed.discard(market)
            records += self._status("resynced", f"{market}: fresh snapshot", now_ns)
        for side, price, amount, received in held:
            book.apply(side, price, amount)
            records.append(
                BookUpdate(
                    stream=stream,
                    seq=self._seq.next(stream),
                    epoch=self.epoch,
                    receive_time=str(received),
                    market=market,
                    side=side,
                    price=price,
                    amount=amount,
                )
            )
            if amount and book.crosses(side, price):
                # The rest would be applied to a book known to be wrong; the
                # reconnect's snapshot supersedes them.
                records += self._book_crossed(book, now_ns)
                break
        return records

    def _book_crossed(self, book: OrderBook, now_ns: int) -> list[Record]:
        market = book.market
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None
        self.stats.crossed_books += 1
        self._crossed.add(market)
        self._synced.discard(market)
        reason = (
            f"{market}: crossed book, best bid {decimals.to_str(bid[0])} >= "
            f"best ask {decimals.to_str(ask[0])}"
        )
        return self._request_resync(reason, now_ns)

    def _drop_market(self, market: str, reason: str, now_ns: int) -> list[Record]:
        # Updates were lost for good on this connection: stop taking any for
        # this market and have the connection replaced.
        self._dropping.add(market)
        self._held.pop(market, None)
        self._fragments.pop(market, None)
        return self._request_resync(reason, now_ns)

    def _request_resync(self, reason: str, now_ns: int) -> list[Record]:
        log.warning(
            "feed %s: %s; resyncing", self.feed.name, reason,
            extra={"feed": self.feed.name, "event": "resyncing", "reason": reason},
        )  # fmt: skip
        if self.resync_reason is None:
            self.resync_reason = reason
        return self._status("resyncing", reason, now_ns)

    # -- errors --------------------------------------------------------------

    def _on_error(self, msg: paxos_messages.ErrorFrame, now_ns: int) -> list[Record]:
        self.stats.count_message("error")
        self.stats.error_frames += 1
        self.upstream_error = msg.error or "(empty error)"
        log.warning(
            "feed %s: upstream sent an error frame %r for %s; backing off",
            self.feed.name, msg.error[:EXCERPT_CHARS], self.feed.url,
            extra={"feed": self.feed.name, "event": "error_frame",
                   "reason": msg.error[:EXCERPT_CHARS]},
        )  # fmt: skip
        return []

    def _invalid(self, payload: bytes | str, exc: Exception, now_ns: int) -> list[Record]:
        self.stats.count_message("invalid")
        self.stats.decode_errors += 1
        last = self._invalid_logged_at
        if last is None or not 0 <= now_ns - last < INVALID_LOG_INTERVAL_NS:
            self._invalid_logged_at = now_ns
            unlogged, self._invalid_unlogged = self._invalid_unlogged, 0
            log.warning(
                "feed %s: dropped an invalid upstream frame (%s)%s: %s",
                self.feed.name, exc,
                f" [and {unlogged} more since the last report]" if unlogged else "",
                _excerpt(payload),
                extra={"feed": self.feed.name, "event": "invalid_frame", "reason": str(exc),
                       "unlogged": unlogged},
            )  # fmt: skip
        else:
            self._invalid_unlogged += 1
        return []

    # -- helpers ---------------------------------------------------------------

    def _check_new_market(self, market: str) -> None:
        if self.feed.market is not None:
            raise ValueError(f"market {market!r} on the {self.feed.market} feed")
        if not _MARKET.fullmatch(market):
            raise ValueError(f"bad market name {market[:40]!r}")

    def _add_stream(self, market: str) -> str:
        stream = self._streams[market] = self.feed.stream_for(market)
        return stream

    def _status(self, state: StatusState, reason: str, now_ns: int) -> list[Record]:
        records: list[Record] = []
        for stream in (self._status_stream, *self._streams.values()):
            records.append(
                Status(
                    stream=stream,
                    seq=self._seq.next(stream),
                    epoch=self.epoch,
                    receive_time=str(now_ns),
                    feed=self.feed.name,
                    state=state,
                    reason=reason,
                )
            )
        return records

    def _reset_connection_state(self) -> None:
        self._synced.clear()
        self._held.clear()
        self._fragments.clear()
        self._dropping.clear()


def _excerpt(payload: bytes | str) -> str:
    if isinstance(payload, str):
        text = payload[:EXCERPT_CHARS]
        more = len(payload) > EXCERPT_CHARS
    else:
        text = payload[:EXCERPT_CHARS].decode("utf-8", "replace")
        more = len(payload) > EXCERPT_CHARS
    return repr(text) + ("..." if more else "")
