"""The edge's ordered apply: which delivered records go on to the hub, by ``(epoch, seq)``.

JetStream's ordered consumer already delivers in stream order and resets itself on a missed
message, so on a healthy cluster every record is ``NEXT``. The other verdicts are what the
edge must still handle, per gateway stream:

- ``FIRST``: nothing known of the stream yet (a new market, or an edge that started with no
  checkpoint for it): accepted, it fixes the position.
- ``DUPLICATE``: at or below the position in the same epoch: dropped. Happens when the consumer
  starts at a checkpoint's JetStream sequence (the checkpointed record comes again) and after
  a consumer reset.
- ``GAP``: above position + 1 in the same epoch: accepted (the stream goes on from there) and
  reported. With one fenced writer it means records left JetStream before this edge read them
  (``MaxAge``): the caller resyncs that stream (books: wait for the next snapshot).
- ``NEW_EPOCH``: another epoch than the position's: accepted, the old epoch is retired. The
  leader changes the epoch only when continuity is lost, and subscribers see the change.
- ``STALE_EPOCH``: an epoch retired on this stream: dropped (a former epoch's record delivered
  after the new one's, which fencing should make impossible; counted, never applied).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Final, TypeVar

import msgspec

from gateway.cluster.subjects import RecordId

T = TypeVar("T")

# Epochs change on a lost stream only: a handful in a stream's life. Bounded anyway.
RETIRED_EPOCHS_KEPT: Final = 16


class Verdict(StrEnum):
    FIRST = "first"
    NEXT = "next"
    DUPLICATE = "duplicate"
    GAP = "gap"
    NEW_EPOCH = "new_epoch"
    STALE_EPOCH = "stale_epoch"


ACCEPTED: Final = frozenset({Verdict.FIRST, Verdict.NEXT, Verdict.GAP, Verdict.NEW_EPOCH})


class Position(msgspec.Struct, frozen=True):
    """The last accepted ``(epoch, seq)`` of one gateway stream."""

    epoch: str
    seq: int


class Problem(msgspec.Struct, frozen=True):
    """A record that was not simply the next one, with where the stream stood before it."""

    record: RecordId
    verdict: Verdict
    before: Position | None


class OrderedApply:
    """Per gateway stream, the position of the last accepted record; a verdict per delivery."""

    def __init__(self, start: Mapping[str, Position] | None = None) -> None:
        self._positions: dict[str, Position] = dict(start or {})
        self._retired: dict[str, deque[str]] = {}
        self.counts: dict[Verdict, int] = dict.fromkeys(Verdict, 0)

    def position(self, stream: str) -> Position | None:
        return self._positions.get(stream)

    def positions(self) -> dict[str, Position]:
        return dict(self._positions)

    def admit(self, record: RecordId) -> Verdict:
        verdict = self._verdict(record)
        self.counts[verdict] += 1
        if verdict in ACCEPTED:
            before = self._positions.get(record.stream)
            if verdict is Verdict.NEW_EPOCH and before is not None:
                retired = self._retired.setdefault(record.stream, deque(maxlen=RETIRED_EPOCHS_KEPT))
                retired.append(before.epoch)
            self._positions[record.stream] = Position(record.epoch, record.seq)
        return verdict

    def admit_batch(
        self, items: Iterable[T], record_of: Callable[[T], RecordId]
    ) -> tuple[list[T], list[Problem]]:
        """The items to apply, in order, and every record that was not ``NEXT``."""
        accepted: list[T] = []
        problems: list[Problem] = []
        for item in items:
            record = record_of(item)
            before = self._positions.get(record.stream)
            verdict = self.admit(record)
            if verdict in ACCEPTED:
                accepted.append(item)
            if verdict is not Verdict.NEXT:
                problems.append(Problem(record, verdict, before))
        return accepted, problems

    def _verdict(self, record: RecordId) -> Verdict:
        at = self._positions.get(record.stream)
        if at is None:
            return Verdict.FIRST
        if record.epoch != at.epoch:
            if record.epoch in self._retired.get(record.stream, ()):
                return Verdict.STALE_EPOCH
            return Verdict.NEW_EPOCH
        if record.seq <= at.seq:
            return Verdict.DUPLICATE
        return Verdict.NEXT if record.seq == at.seq + 1 else Verdict.GAP
