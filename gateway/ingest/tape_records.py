"""Backfill and markets-come-and-go glue of one feed: what the trade tape releases and what
the market list changes, as sequenced records (docs/upstream.md).

``FeedNormalizer`` delegates its hook points here (``release``, ``market_changed``): the trade
tape (``ingest/backfill.py``) holds live executions while a REST backfill runs and lets them go
with the backfilled ones; the market list (``ingest/markets.py``) says which markets Paxos
halted or delisted. Records are stamped and streams created through the normalizer, which owns
the sequence numbers and the streams (the same arrangement as ``book_frames.BookFrames``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.contract.records import Record, Status, Trade
from gateway.ingest.backfill import Notice, NoticeState, Release

if TYPE_CHECKING:
    from gateway.ingest.normalizer import FeedNormalizer

__all__ = ["TapeRecords"]

log = logging.getLogger("gateway.session")


class TapeRecords:
    """One feed's backfill releases and market notices, turned into records."""

    def __init__(self, normalizer: FeedNormalizer) -> None:
        self._n = normalizer

    def release(self, release: Release, now_ns: int) -> list[Record]:
        """Sequence what the trade tape released: its notices as status records, then its
        executions as trades, in the order given."""
        n = self._n
        records: list[Record] = []
        for notice in release.notices:
            records += self.notice(notice, now_ns)
        for t in release.trades:
            stream = n._streams.get(t.market) or n._add_stream(t.market)
            records.append(
                Trade(
                    **n._stamp(stream, t.receive_time),
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
        """Announce ``market``'s new state in its stream and the feed's status stream.
        Unavailable, it no longer counts for readiness; delisted (not ``listed``) on an
        all-markets feed, its book and stream are retired: forgotten here, so a relisting
        starts over from a fresh snapshot (``initial``) in the same stream, whose new book
        ``ingest.batch`` registers with the hub like any new market's."""
        n = self._n
        unavailable = n.unavailable
        known = market in n._streams or market in n.books or market in unavailable
        if not known:
            return []  # never seen on this feed: nothing to announce or retire
        if available:
            unavailable.pop(market, None)
        else:
            unavailable[market] = reason
        state: NoticeState = "market_available" if available else "market_unavailable"
        records = self.notice(Notice(state, market, reason), now_ns)
        if not listed and n.feed.market is None:
            n._book_frames.retire(market)
            n._streams.pop(market, None)  # no more feed statuses into a retired stream
        return records

    def notice(self, notice: Notice, now_ns: int) -> list[Record]:
        """One notice of the tape or the market list: a feed-wide status, or a status in the
        feed's status stream and the market's own stream."""
        n = self._n
        feed = n.feed.name
        log.log(
            logging.INFO if notice.state == "market_available" else logging.WARNING,
            "feed %s: %s: %s", feed, notice.state, notice.reason,
            extra={"feed": feed, "event": notice.state, "reason": notice.reason,
                   "market": notice.market},
        )  # fmt: skip
        if notice.market is None:
            return n._status(notice.state, notice.reason, now_ns)
        stream = n._streams.get(notice.market) or n._add_stream(notice.market)
        return [
            Status(
                **n._stamp(name, now_ns),
                feed=feed,
                state=notice.state,
                reason=notice.reason,
                market=notice.market,
                gap_from=None if notice.gap_from is None else str(notice.gap_from),
                gap_to=None if notice.gap_to is None else str(notice.gap_to),
            )
            for name in (n._status_stream, stream)
        ]
