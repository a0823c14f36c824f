"""What one feed contributes to ``/readyz``: ready or not, and the reason in words.

The normalizer's book-sync states (``ingest.book_sync``) and the connection's ``FeedState`` are
the truth; the reason names what is awaited, so an operator reading a failed probe knows whether
the feed is connecting, resyncing, or waiting for particular markets' snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.ingest.feeds import FeedSpec
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.readiness import FeedHealth
from gateway.io.upstream_health import FeedState


@dataclass(slots=True)
class Feed:
    """One upstream feed of a gateway: what it is, its normalizer and its connection state."""

    spec: FeedSpec
    required: bool
    session: FeedNormalizer
    state: FeedState


def feed_health(feeds: Iterable[Feed]) -> Iterator[FeedHealth]:
    for feed in feeds:
        session, state = feed.session, feed.state
        # market_gone: Paxos halted or delisted the feed's one market (markets come and go).
        ready = (state.connected and session.ready) or session.market_gone
        yield FeedHealth(
            name=feed.spec.name,
            required=feed.required,
            ready=ready,
            reason="" if ready else not_ready_reason(session, state),
        )


def not_ready_reason(session: FeedNormalizer, state: FeedState) -> str:
    if not state.connected:
        if state.connections == 0 and state.last_reason is None:
            return "connecting"
        return f"disconnected ({state.last_reason or 'unknown'}), reconnecting"
    if session.resync_reason is not None:
        return f"resyncing: {session.resync_reason}"
    if session.upstream_error is not None:
        return f"upstream error: {session.upstream_error}"
    # The normalizer's book-sync states are the truth; a book's ``has_snapshot`` stays true
    # across reconnects and cannot tell a first snapshot from a resync.
    resyncing = session.resyncing_markets()
    if resyncing:
        return f"resyncing: waiting for a fresh snapshot of {_shown(resyncing)}"
    waiting = session.unsynced_markets()
    if waiting:
        return f"waiting for the snapshot of {_shown(waiting)}"
    return "waiting for the first snapshot"


def _shown(markets: list[str]) -> str:
    more = len(markets) - 10
    return ", ".join(markets[:10]) + (f" and {more} more" if more > 0 else "")
