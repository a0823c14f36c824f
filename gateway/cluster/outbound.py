"""The ingest leader's outbound queue: the ``RecordSink`` the upstream tasks publish into.

The upstream tasks hand each socket read's records over synchronously (``ingest.batch``), as
they would to the hub; the leader's publisher task takes everything queued at once and
publishes it, fenced, in order. Book checkpoints are cut here, at the very moment the records
arrive, because only then is the normalizer's book exactly the state at its stream's last
record: a checkpoint is due per book every ``interval`` seconds, and is cut only when the
stream's last record of the call is a book record (a book that just went into a resync is not
checkpointed until its fresh snapshot). The publisher writes a checkpoint after the record it
is valid at was stored, naming that record's JetStream sequence (``Pgw-Rec-Seq``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.contract.records import BookSnapshot, BookUpdate, Record
from gateway.ingest.book import OrderBook

__all__ = ["CHECKPOINT_REASON", "Outbound"]

CHECKPOINT_REASON = "checkpoint"


class Outbound:
    def __init__(
        self,
        checkpoint_interval: float,
        clock: Callable[[], float],
        *,
        on_pending: Callable[[], None] | None = None,
    ) -> None:
        self.checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._on_pending = on_pending
        self._books: dict[str, OrderBook] = {}
        self._pending: list[Record] = []
        self._checkpoints: dict[str, BookSnapshot] = {}
        self._last_cut: dict[str, float] = {}
        self.records_in = 0

    # -- RecordSink (ingest.batch) ---------------------------------------------------------

    def register_book(self, stream: str, book: OrderBook) -> None:
        self._books[stream] = book
        self._last_cut.pop(stream, None)  # a new book (a relisting) is checkpointed at once

    def publish(self, records: Sequence[Record]) -> None:
        if not records:
            return
        was_empty = not self._pending
        self._pending.extend(records)
        self.records_in += len(records)
        last: dict[str, Record] = {}
        for record in records:
            if record.stream in self._books:
                last[record.stream] = record
        now = self._clock()
        for stream, record in last.items():
            if not isinstance(record, BookSnapshot | BookUpdate):
                continue
            cut = self._last_cut.get(stream)
            if cut is not None and now - cut < self.checkpoint_interval:
                continue
            book = self._books[stream]
            if not book.has_snapshot or book.is_crossed():
                continue
            self._last_cut[stream] = now
            self._checkpoints[stream] = BookSnapshot(
                stream=stream,
                seq=record.seq,
                epoch=record.epoch,
                receive_time=record.receive_time,
                market=book.market,
                bids=book.bids(),
                asks=book.asks(),
                resync=False,
                reason=CHECKPOINT_REASON,
            )
        if was_empty and self._on_pending is not None:
            self._on_pending()

    # -- the publisher's side --------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> tuple[list[Record], list[BookSnapshot]]:
        """Everything queued, and the checkpoints cut since the last call (each valid at a
        record among those taken now or before)."""
        records, self._pending = self._pending, []
        checkpoints = list(self._checkpoints.values())
        self._checkpoints.clear()
        return records, checkpoints
