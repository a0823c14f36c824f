"""Book sync: whether one market's ``OrderBook`` matches upstream, as a named state machine.

Paxos sends no sequence numbers, so a book is trusted only after a complete snapshot on the
current connection; the rules are in ``normalizer``'s docstring. Everything that decides a
market's sync state lives in its ``MarketSync`` (h11's rule: the state machine owns all the
state that affects it): the state, the updates held while waiting, the fragments of a split
snapshot, and whether the next snapshot repairs a crossed book. ``FeedNormalizer`` builds the
records; the transitions happen only here.

States (``SyncState``), per connection:

* ``AWAITING_SNAPSHOT``: no snapshot yet on this connection (the start of every connection);
  updates are held, in arrival order, to be applied after the snapshot.
* ``ASSEMBLING``: fragments of a split snapshot (``final_snapshot`` false) are accumulating;
  updates are held.
* ``SYNCED``: the book is at upstream's state; updates are applied as they come.
* ``CROSSED``: the book was found crossed (an update was missed); the connection is being
  replaced and updates are held (and dropped with the connection) until a snapshot repairs it.
* ``DROPPED``: updates were lost for good on this connection (too many held, or a split
  snapshot too big); everything for the market is ignored until the next connection.

``repairing`` is not a state of the connection but of the book: set when it was found crossed,
it survives the reconnect, so the snapshot that completes next is published with reason
``crossed`` and followed by a ``resynced`` status.

Transitions: ``connection_changed`` (connect or disconnect: every state but the book's
``repairing`` starts over), ``hold`` (an update while not synced), ``add_fragment`` /
``complete_snapshot`` (snapshot frames), ``synced`` (the completed snapshot is good: returns
the held updates to apply), ``crossed`` and ``drop``.
"""

from __future__ import annotations

import enum
from decimal import Decimal

from gateway.contract.records import Level, Side
from gateway.ingest.book import OrderBook

__all__ = ["Held", "MarketSync", "SyncState"]

# A held update: side, price, amount and the receive time of its frame.
Held = tuple[Side, Decimal, Decimal, int]


class SyncState(enum.Enum):
    AWAITING_SNAPSHOT = "awaiting_snapshot"
    ASSEMBLING = "assembling"
    SYNCED = "synced"
    CROSSED = "crossed"
    DROPPED = "dropped"


AWAITING_SNAPSHOT: SyncState = SyncState.AWAITING_SNAPSHOT
ASSEMBLING: SyncState = SyncState.ASSEMBLING
SYNCED: SyncState = SyncState.SYNCED
CROSSED: SyncState = SyncState.CROSSED
DROPPED: SyncState = SyncState.DROPPED


class MarketSync:
    """One market's book and its sync state on the current connection."""

    __slots__ = ("book", "fragments", "held", "repairing", "state")

    def __init__(self, book: OrderBook) -> None:
        self.book = book
        self.state = AWAITING_SNAPSHOT
        self.held: list[Held] = []
        self.fragments: tuple[list[Level], list[Level]] | None = None
        self.repairing = False  # found crossed: the next complete snapshot is its repair

    @property
    def market(self) -> str:
        return self.book.market

    @property
    def resyncing(self) -> bool:
        """Not synced, although the book had a snapshot before (a reconnect or a repair)."""
        return self.state is not SYNCED and self.book.has_snapshot

    def connection_changed(self) -> None:
        """A connection opened or closed: the feed starts over from snapshots."""
        self.state = AWAITING_SNAPSHOT
        self.held = []
        self.fragments = None

    def hold(self, update: Held, limit: int) -> bool:
        """Keep an update that arrived before the book is synced; False if ``limit`` updates
        already wait (the snapshot is not coming: the caller drops the market)."""
        if len(self.held) >= limit:
            return False
        self.held.append(update)
        return True

    def add_fragment(self, bids: list[Level], asks: list[Level]) -> int:
        """A non-final snapshot frame; returns the number of levels assembled so far."""
        self.state = ASSEMBLING
        if self.fragments is None:
            self.fragments = (bids, asks)
        else:
            self.fragments[0].extend(bids)
            self.fragments[1].extend(asks)
        return len(self.fragments[0]) + len(self.fragments[1])

    def complete_snapshot(
        self, bids: list[Level], asks: list[Level]
    ) -> tuple[list[Level], list[Level]]:
        """The final snapshot frame: the whole snapshot's levels (with earlier fragments).
        Until ``synced`` or ``crossed`` follows, updates still wait."""
        fragments, self.fragments = self.fragments, None
        if self.state is SYNCED:
            self.state = AWAITING_SNAPSHOT  # re-sent on the same connection
        if fragments is None:
            return bids, asks
        fragments[0].extend(bids)
        fragments[1].extend(asks)
        return fragments

    def synced(self) -> list[Held]:
        """The completed snapshot is good: the book is synced. Returns the held updates, to
        be applied in order (a crossing among them calls ``crossed``)."""
        held, self.held = self.held, []
        self.state = SYNCED
        self.repairing = False
        return held

    def crossed(self) -> None:
        """The book is crossed: held updates are moot, the next snapshot repairs it."""
        self.state = CROSSED
        self.held = []
        self.repairing = True

    def drop(self) -> None:
        """Updates were lost for good on this connection: ignore the market until the next."""
        self.state = DROPPED
        self.held = []
        self.fragments = None

    def __repr__(self) -> str:
        return f"MarketSync({self.market}, {self.state.name}, held={len(self.held)})"
