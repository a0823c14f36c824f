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

Order books (no sequence numbers upstream, so these rules are the protection; each market's
state is a named state machine, ``book_sync.MarketSync``):

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
legitimately send nothing for a long time. Markets Paxos halted or delisted
(``unavailable``) are not waited for.

Backfill and markets come and go (docs/upstream.md): an executions feed may have a
``TradeTape`` (``tape``) that holds live executions while a REST backfill runs;
``release`` sequences what it lets go and ``market_changed`` what the market list
says, both through ``tape_records.TapeRecords``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from gateway.contract.records import (
    Price,
    Record,
    Status,
    StatusState,
    Trade,
)
from gateway.ingest import decimals, paxos_messages, timestamps
from gateway.ingest.backfill import Release, TapeTrade, TradeTape
from gateway.ingest.book import OrderBook
from gateway.ingest.book_frames import BookFrames
from gateway.ingest.book_sync import SYNCED
from gateway.ingest.dedup import RecentIds
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.sequence import Sequencer
from gateway.ingest.stats import FeedStats
from gateway.ingest.tape_records import TapeRecords

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


class _Header(TypedDict):
    """The fields every record starts with (``contract.records._Record``)."""

    stream: str
    seq: int
    epoch: str
    receive_time: str


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
        continue_from: Mapping[str, int] | None = None,
    ) -> None:
        """``continue_from``: per stream, the last seq another process published in this
        ``epoch`` (an ingest takeover, docs/cluster.md): numbering continues after it, and each
        such book's first snapshot is a resync (reason ``takeover``), since subscribers hold
        the former leader's book."""
        self.feed = feed
        # Backfill (ingest/backfill.py): holds live executions while a REST backfill runs.
        self.tape = tape
        # Markets Paxos halted or delisted (ingest/markets.py) -> why; not waited for.
        self.unavailable: dict[str, str] = {}
        self._tape_records = TapeRecords(self)
        self.epoch = epoch
        self.stats = FeedStats()
        self._book_frames = BookFrames(
            self, max_held_updates=max_held_updates, max_snapshot_levels=max_snapshot_levels
        )
        self.books: dict[str, OrderBook] = self._book_frames.books
        # Set when the connection must be replaced (crossed book, lost
        # updates); the upstream task reconnects and ``connected`` clears it.
        self.resync_reason: str | None = None
        # Set by an upstream ``{"error": ...}`` frame; the upstream task backs
        # off before reconnecting. Cleared by ``connected``.
        self.upstream_error: str | None = None

        self._decoder = paxos_messages.decoder_for(feed.kind)
        self._seq = Sequencer(continue_from)
        # Book streams another process already published in this epoch: their first snapshot
        # here replaces what subscribers hold, so it is marked as a resync.
        self.continued: set[str] = {s for s, head in (continue_from or {}).items() if head}
        self._dedup = RecentIds(dedup_capacity)
        self._prices = decimals.ParseCache(price_cache)
        self._status_stream = f"status.{feed.name}"
        # market -> its stream, for markets whose stream has had a record (or,
        # for a single-market feed, from the start). Also the status fan-out.
        self._streams: dict[str, str] = {}
        self._connected = False

        self._invalid_logged_at: int | None = None
        self._invalid_unlogged = 0

        if feed.market is not None:
            self._streams[feed.market] = feed.stream_for(feed.market)
            if feed.kind == "book":
                self._book_frames.add_book(feed.market)

        self._handlers: dict[type[Any], Callable[[Any, int], list[Record]]] = {
            paxos_messages.Execution: self._on_execution,
            paxos_messages.BookUpdate: self._book_frames.on_update,
            paxos_messages.BookSnapshot: self._book_frames.on_snapshot,
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
        return self._book_frames.all_synced(self.unavailable)

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
        return sorted(
            m
            for m, s in self._book_frames.sync.items()
            if s.state is not SYNCED and m not in self.unavailable
        )

    def resyncing_markets(self) -> list[str]:
        """The unsynced markets whose book was synced before (after a reconnect or a crossed
        book: waiting for a fresh snapshot, not the first one), sorted."""
        return sorted(
            m
            for m, s in self._book_frames.sync.items()
            if s.resyncing and m not in self.unavailable
        )

    def take_new_books(self) -> list[tuple[str, OrderBook]]:
        """The books (with their streams) created since the last call, for the hub: a late
        joiner's snapshot is built from them. ``ingest.batch`` registers them before it
        publishes the records that fill them."""
        frames = self._book_frames
        new, frames.new_books = frames.new_books, []
        return new

    def head(self, stream: str) -> int:
        """Sequence number of the last record published on ``stream`` (0: none)."""
        return self._seq.head(stream)

    def connected(self, now_ns: int) -> list[Record]:
        """A new upstream connection is open; the feed starts over from snapshots."""
        self._connected = True
        self.resync_reason = None
        self.upstream_error = None
        self._book_frames.connection_changed()
        if self.tape is not None:  # backfill hook: hold executions until the backfill is in
            self.tape.connected(now_ns)
        return self._status("connected", f"connected to {self.feed.url}", now_ns)

    def disconnected(self, reason: str, now_ns: int) -> list[Record]:
        """The upstream connection is gone. Publishes a status only on the
        transition, so failed reconnect attempts do not repeat it."""
        if not self._connected:
            return []
        self._connected = False
        self._book_frames.connection_changed()
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
        return self._tape_records.release(release, now_ns)

    def market_changed(
        self, market: str, *, available: bool, listed: bool, reason: str, now_ns: int
    ) -> list[Record]:
        """Markets come and go (ingest/markets.py): announce ``market``'s new state; an
        unavailable market no longer counts for readiness, a delisted one on an all-markets
        feed is retired (``tape_records.TapeRecords.market_changed``)."""
        return self._tape_records.market_changed(
            market, available=available, listed=listed, reason=reason, now_ns=now_ns
        )

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
                **self._stamp(stream, now_ns),
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
                **self._stamp(stream, now_ns),
                market=market,
                price=price,
                exchange_time=str(exchange_time),
            )
        ]

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

    def _stamp(self, stream: str, now_ns: int) -> _Header:
        """The header every record carries: its stream, the stream's next ``seq``, the
        gateway's epoch and the receive time."""
        return {
            "stream": stream,
            "seq": self._seq.next(stream),
            "epoch": self.epoch,
            "receive_time": str(now_ns),
        }

    def _add_stream(self, market: str) -> str:
        stream = self._streams[market] = self.feed.stream_for(market)
        return stream

    def _status(self, state: StatusState, reason: str, now_ns: int) -> list[Record]:
        records: list[Record] = []
        for stream in (self._status_stream, *self._streams.values()):
            records.append(
                Status(
                    **self._stamp(stream, now_ns),
                    feed=self.feed.name,
                    state=state,
                    reason=reason,
                )
            )
        return records


def _excerpt(payload: bytes | str) -> str:
    if isinstance(payload, str):
        text = payload[:EXCERPT_CHARS]
        more = len(payload) > EXCERPT_CHARS
    else:
        text = payload[:EXCERPT_CHARS].decode("utf-8", "replace")
        more = len(payload) > EXCERPT_CHARS
    return repr(text) + ("..." if more else "")
