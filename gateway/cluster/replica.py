"""An edge's books: rebuilt from the records it reads, so its hub serves late joiners.

An edge has no upstream: its ``OrderBook`` of each book stream is seeded from the leader's
checkpoint (or the stream's first snapshot) and kept at the stream's head by applying every
accepted book record, before the records go to the hub in the same synchronous step (the hub's
rule: a registered book is at its stream's head whenever another task runs). A book stream
whose records were lost to this edge (a ``GAP``) gets a fresh, empty book: the hub gives no
snapshot from it, and its updates are ignored, until the next snapshot record arrives.
"""

from __future__ import annotations

from gateway.contract.records import BookSnapshot, BookUpdate, Record
from gateway.ingest.book import OrderBook

__all__ = ["ReplicaBooks"]


class ReplicaBooks:
    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        # Book streams that lost records: waiting for a snapshot.
        self.waiting: set[str] = set()

    def seed(self, snapshot: BookSnapshot) -> OrderBook:
        """A checkpoint: a new book at the snapshot's state (register it with the hub)."""
        book = self.books[snapshot.stream] = OrderBook(snapshot.market)
        book.replace(snapshot.bids, snapshot.asks)
        self.waiting.discard(snapshot.stream)
        return book

    def lost(self, stream: str, market: str) -> OrderBook:
        """Records of ``stream`` were lost: a fresh book that waits for a snapshot."""
        book = self.books[stream] = OrderBook(market)
        self.waiting.add(stream)
        return book

    def apply(self, record: Record) -> OrderBook | None:
        """Apply one accepted record; a book the hub has not seen yet (register it) or None."""
        if isinstance(record, BookSnapshot):
            book = self.books.get(record.stream)
            if book is None:
                return self.seed(record)
            book.replace(record.bids, record.asks)
            self.waiting.discard(record.stream)
            return None
        if isinstance(record, BookUpdate) and record.stream not in self.waiting:
            book = self.books.get(record.stream)
            if book is None:
                # Updates before any snapshot (an edge that started mid-stream without a
                # checkpoint): nothing to apply them to until a snapshot comes.
                return self.lost(record.stream, record.market)
            book.apply(record.side, record.price, record.amount)
        return None
