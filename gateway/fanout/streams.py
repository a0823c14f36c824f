"""The hub's streams: one ``Stream`` per stream name, with what catching up needs.

A stream is created by its first record, by ``Hub.declare_stream`` or by ``register_book``. Its
subscriber groups are replaced, never mutated, so ``Hub.publish`` can go on iterating while a
subscriber is detached mid-call (conflation).
"""

from __future__ import annotations

from collections import deque

from gateway.contract.protocol import Encoding
from gateway.contract.records import BookSnapshot
from gateway.fanout.outbox import OutFrame, Subscriber
from gateway.ingest.book import OrderBook

__all__ = ["Stream"]


class Stream:
    """One stream: its head (``seq``, ``epoch``, ``receive_time``), the history ring of recent
    frames (for resume), its last data and status frames (for late joiners), the normalizer's
    book of a book stream with a cache of encoded snapshots, and its subscribers grouped by
    encoding (the shape ``Hub.publish`` iterates)."""

    __slots__ = (
        "book", "epoch", "groups", "history", "is_book", "key", "kind", "last_data",
        "last_status", "name", "receive_time", "seq", "snapshot_cache", "subscribers",
    )  # fmt: skip

    def __init__(self, name: str, epoch: str, history: int) -> None:
        self.name = name
        self.kind, _, self.key = name.partition(".")
        self.is_book = self.kind == "book"
        self.seq = 0
        self.epoch = epoch
        self.receive_time = "0"
        self.history: deque[OutFrame] = deque(maxlen=history)
        self.last_data: OutFrame | None = None
        self.last_status: OutFrame | None = None
        # The normalizer's book of a book stream (``register_book``): late joiners' snapshots.
        self.book: OrderBook | None = None
        self.subscribers: set[Subscriber] = set()
        # Per encoding in use: its subscribers, in attach order. Replaced, never mutated, so
        # publish can go on iterating while a subscriber is detached mid-call.
        self.groups: tuple[tuple[Encoding, list[Subscriber]], ...] = ()
        self.snapshot_cache: dict[tuple[str, Encoding], OutFrame] = {}

    def add(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            return
        self.subscribers.add(sub)
        groups = dict(self.groups)
        groups[sub.encoding] = [*groups.get(sub.encoding, ()), sub]
        self.groups = tuple(sorted(groups.items()))

    def remove(self, sub: Subscriber) -> None:
        if sub not in self.subscribers:
            return
        self.subscribers.discard(sub)
        groups = ((enc, [s for s in subs if s is not sub]) for enc, subs in self.groups)
        self.groups = tuple((enc, subs) for enc, subs in groups if subs)

    def book_ready(self) -> bool:
        return self.book is not None and self.book.has_snapshot

    def snapshot(self, reason: str) -> BookSnapshot:
        """The book as a snapshot valid at the head (the caller checked ``book_ready``)."""
        book = self.book
        assert book is not None
        return BookSnapshot(
            stream=self.name,
            seq=self.seq,
            epoch=self.epoch,
            receive_time=self.receive_time,
            market=book.market,
            bids=book.bids(),
            asks=book.asks(),
            resync=reason != "subscribe",
            reason=reason,
        )

    def snapshot_frame(self, reason: str, encoding: Encoding) -> OutFrame:
        # Many subscribers joining at one head (a reconnect storm) share one encoded snapshot.
        key = (reason, encoding)
        frame = self.snapshot_cache.get(key)
        if frame is None or frame.seq != self.seq:
            if len(self.snapshot_cache) > 8:
                self.snapshot_cache.clear()
            frame = OutFrame(self.snapshot(reason), self.name, self.seq)
            self.snapshot_cache[key] = frame
        return frame
