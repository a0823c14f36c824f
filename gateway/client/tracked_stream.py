"""One concrete stream as the client holds it (sans-IO): its position, the protocol's sequencing
rules, and its book.

A ``book_snapshot`` resets the position; records at or below the head announced in
``subscribed`` are initial values; everything else must be exactly previous + 1. A record that
breaks the rules (a jump no snapshot explains, another epoch, an update that does not apply) is
reported as an event and ``TrackedStream.receive`` returns False: the stream is broken, and the
session (``client.session``) repairs it by resubscribing. Its records are dropped meanwhile, so
a book is never built on a hole.
"""

from __future__ import annotations

import logging
from typing import Final

from gateway.client import events as ev
from gateway.contract.protocol import Epoch
from gateway.contract.records import BookSnapshot, BookUpdate, Record, Status
from gateway.ingest.book import OrderBook

__all__ = ["SessionStats", "TrackedStream"]

log: Final = logging.getLogger("gateway.client")


class SessionStats:
    __slots__ = ("duplicates", "gaps", "problems", "records", "resume_failures", "resumes")

    def __init__(self) -> None:
        self.records = 0
        self.gaps = 0
        self.duplicates = 0
        self.problems = 0
        self.resumes = 0
        self.resume_failures = 0


class TrackedStream:
    """One concrete stream's position and book."""

    __slots__ = (
        "active", "book", "book_valid", "broken", "epoch", "expected", "held_status",
        "initial_head", "is_book", "last_seq", "name", "resume_pending", "stats",
    )  # fmt: skip

    def __init__(self, name: str, keep_book: bool, stats: SessionStats) -> None:
        self.name = name
        self.stats = stats  # the session's, shared by all its streams
        self.is_book = name.startswith("book.")
        self.book: OrderBook | None = (
            OrderBook(name.partition(".")[2]) if self.is_book and keep_book else None
        )
        self.book_valid = False  # the book holds a snapshot and every update after it
        self.epoch: Epoch | None = None
        self.last_seq: int | None = None  # the last record held, in ``epoch``
        self.expected: int | None = None  # the next live seq; None: take whatever comes
        self.initial_head: int | None = None  # records up to here are initial values
        self.active = False  # delivered on the current connection
        self.resume_pending = False  # resumed/resume_failed not yet received
        self.broken = False  # a gap: records dropped until a fresh state
        self.held_status: Status | None = None  # a status ahead of the position (conflation)

    def resumable(self) -> bool:
        if self.broken or self.epoch is None or self.last_seq is None:
            return False
        # A book is only worth resuming if it holds everything up to the position.
        return not self.is_book or self.book is None or self.book_valid

    def restart(self, epoch: Epoch, head: int) -> None:
        """The stream starts from its current state at ``head`` (a late join)."""
        if self.epoch != epoch:
            self.last_seq = None  # positions of another epoch say nothing about this one
        self.epoch = epoch
        self.initial_head = head
        self.expected = head + 1
        self.broken = False
        self.book_valid = False
        self.held_status = None

    def break_off(self) -> None:
        """Drop the stream's records until a fresh state (``restart``) comes."""
        self.broken = True
        self.book_valid = False
        self.held_status = None

    def receive(self, rec: Record, events: list[ev.Event]) -> bool:
        """Apply one record of this stream, appending its events. False: the record broke the
        stream (its event is appended), and only a fresh state repairs it."""
        if self.broken or self.resume_pending:
            return True  # being repaired / resumed: the fresh state or the replay follows
        if self.epoch is not None and rec.epoch != self.epoch:
            self.stats.problems += 1
            log.warning(
                "%s: record of epoch %s while in epoch %s", self.name, rec.epoch, self.epoch
            )
            events.append(ev.EpochMismatch(self.name, self.epoch, rec.epoch))
            return False
        self.epoch = rec.epoch
        seq = rec.seq
        if self.held_status is not None:
            held, self.held_status = self.held_status, None
            if type(rec) is not BookSnapshot or seq < held.seq:
                return self._gap(held.seq, events)
            if not self._deliver(held, events):
                return False
        if type(rec) is BookSnapshot:
            self.initial_head = None
            return self._deliver(rec, events)
        head = self.initial_head
        if head is not None and seq <= head:
            # An initial value (the last trade, the feed's latest status): new to us unless we
            # held it before this (re)subscription.
            if self.last_seq is None or seq > self.last_seq:
                return self._deliver(rec, events)
            return True
        self.initial_head = None
        expected = self.expected
        if expected is None or seq == expected:
            return self._deliver(rec, events)
        if seq < expected:
            self.stats.duplicates += 1
            log.warning(
                "%s: duplicate record seq %d (expected %d), dropped", self.name, seq, expected
            )
            events.append(ev.Duplicate(self.name, expected, seq))
            return True
        if type(rec) is Status and self.is_book:
            # After a conflation the feed's latest status precedes the snapshot that explains
            # the jump; any other next record makes it a gap.
            self.held_status = rec
            return True
        return self._gap(seq, events)

    def _deliver(self, rec: Record, events: list[ev.Event]) -> bool:
        self.last_seq = rec.seq
        self.expected = rec.seq + 1
        self.stats.records += 1
        book = self.book
        name = self.name
        if isinstance(rec, BookUpdate):
            if book is not None:
                if not self.book_valid:
                    return self._unusable(f"{name}: update at seq {rec.seq} without a snapshot")
                try:
                    book.apply(rec.side, rec.price, rec.amount)
                except ValueError as exc:
                    return self._unusable(f"{name}: update at seq {rec.seq} does not apply: {exc}")
            events.append(ev.RecordReceived(rec))
            if book is not None:
                events.append(ev.BookChanged(name, book, rec))
        elif isinstance(rec, BookSnapshot):
            if book is not None:
                try:
                    book.replace(rec.bids, rec.asks)
                except ValueError as exc:
                    self.book_valid = False
                    return self._unusable(f"{name}: snapshot at seq {rec.seq} unusable: {exc}")
                self.book_valid = True
            events.append(ev.RecordReceived(rec))
            events.append(ev.Snapshot(name, rec.reason, rec.resync, rec))
            if book is not None:
                events.append(ev.BookChanged(name, book, rec))
        elif isinstance(rec, Status):
            events.append(ev.RecordReceived(rec))
            events.append(ev.StatusChanged(name, rec))
        else:
            events.append(ev.RecordReceived(rec))
        return True

    def _gap(self, got: int, events: list[ev.Event]) -> bool:
        expected = self.expected if self.expected is not None else got
        self.stats.gaps += 1
        log.warning(
            "%s: GAP: expected seq %d, got %d (%d missing); resubscribing",
            self.name, expected, got, got - expected,
        )  # fmt: skip
        events.append(ev.Gap(self.name, expected, got))
        return False

    def _unusable(self, detail: str) -> bool:
        self.stats.problems += 1
        log.warning("%s; resubscribing", detail)
        return False
