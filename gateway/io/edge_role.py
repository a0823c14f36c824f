"""The edge role: JetStream's records in order into this process's hub, as the leader made them.

``EdgeRole.run`` (given a connected bridge):

1. reads every book's checkpoint (the last message of each ``PGW_SNAP`` subject): each seeds an
   ``OrderBook`` (``cluster.replica.ReplicaBooks``), registered with the hub, the hub's stream
   head (``Hub.seed_stream``) and the ``OrderedApply`` position;
2. reads ``PGW`` with an ordered consumer from the oldest checkpoint's record on
   (``Pgw-Rec-Seq`` + 1; without checkpoints, the last ``server.history`` messages);
3. per batch, synchronously (the hub's rule: no checkpoint between the books and the
   publish): admit by ``(epoch, seq)`` (duplicates of what a checkpoint covers are dropped), decode,
   apply book records to the edge's books, ``hub.publish``. A ``GAP`` (records aged out before
   this edge read them) gives that book a fresh book that waits for the next snapshot;
4. is ready once it has applied everything the stream held when it started reading
   (``pending == 0`` or the start's last sequence reached).

The bytes: the hub re-encodes the decoded record with the same msgspec encoder the leader used
(``cluster.codec``), so every edge sends the leader's bytes for every ``(epoch, seq)``.
"""

from __future__ import annotations

import logging
import time

import msgspec
import trio

from gateway.cluster import subjects
from gateway.cluster.codec import decode_record
from gateway.cluster.ordered import OrderedApply, Position, Verdict
from gateway.cluster.replica import ReplicaBooks
from gateway.cluster.stats import EdgeStats
from gateway.cluster.subjects import RecordId, StreamLayout, SubjectError
from gateway.contract.records import BookSnapshot, Record
from gateway.fanout.hub import Hub
from gateway.io.ingest_role import HEADER_REC_SEQ
from gateway.io.nats_bridge import BridgeClosed, Delivery, NatsBridge, StoredMessage

__all__ = ["EdgeRole"]

log = logging.getLogger("gateway.cluster.edge")

STALL_CHECK = 5.0  # s without a delivery before the stream's last sequence is compared


class EdgeRole:
    def __init__(self, hub: Hub, *, layout: StreamLayout) -> None:
        self.hub = hub
        self.layout = layout
        self.stats = EdgeStats()
        self.caught_up = trio.Event()
        self.books = ReplicaBooks()
        self.apply = OrderedApply()
        self._epoch: str | None = None
        self._applied = trio.Event()  # set after each batch, then replaced

    @property
    def ready(self) -> bool:
        return self.stats.caught_up

    @property
    def epoch(self) -> str | None:
        """The epoch this edge serves, adopted from the stream; None before its first record."""
        return self._epoch

    async def run(
        self, bridge: NatsBridge, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read and serve until cancelled. A restart (a new bridge) starts over from the
        checkpoints, but the hub keeps its streams: positions already applied stay, so nothing
        is published twice."""
        target = await bridge.last_sequence(self.layout.records)
        checkpoints = await bridge.last_messages(self.layout.checkpoints)
        start = self._seed(checkpoints, target)
        if start is None and target > self.hub.history:
            # No checkpoint (no book feeds): the last records are enough for the history ring
            # and the last values; reading the whole retention window (24 h) is not.
            start = target - self.hub.history + 1
        if self.stats.last_stream_seq:  # a restart of the bridge: on from where this edge was
            start = self.stats.last_stream_seq + 1
        self.stats.catchup_target = target
        if (start is not None and start > target) or target == 0:
            self._caught_up()
        task_status.started()
        while True:
            try:
                await self._read(bridge, start)
            except (BridgeClosed, trio.Cancelled):
                raise
            except Exception as exc:  # the consumer could not be made (a stream leader moving)
                self.stats.consumer_restarts += 1
                log.warning(
                    "edge: cannot read the stream: %r; again from stream seq %d", exc,
                    self.stats.last_stream_seq + 1,
                    extra={"event": "edge_read_failed", "reason": repr(exc)},
                )  # fmt: skip
                await trio.sleep(STALL_CHECK / 5)
            if self.stats.last_stream_seq:
                start = self.stats.last_stream_seq + 1

    async def _read(self, bridge: NatsBridge, start: int | None) -> None:
        """One ordered consumer, until it stalls: nothing delivered for ``STALL_CHECK`` seconds
        while the stream holds records past the last one applied (measured on 3 nodes: after
        the loss of the stream leader's node, nats-py's ordered consumer may not come back by
        itself). Then the caller makes a new one from where this edge is."""
        async with bridge.ordered_reader(
            subjects.RECORDS_PREFIX + ">", stream=self.layout.records, start_sequence=start
        ) as reader:
            while True:
                batch: list[Delivery] | None = None
                with trio.move_on_after(STALL_CHECK):
                    batch = await reader.receive()
                if batch is not None:
                    self.deliver(batch)
                    continue
                last = await bridge.last_sequence(self.layout.records)
                if last > self.stats.last_stream_seq:
                    self.stats.consumer_restarts += 1
                    log.warning(
                        "edge: the consumer stalled at stream seq %d of %d; a new one",
                        self.stats.last_stream_seq, last,
                        extra={"event": "edge_consumer_stalled", "stream_seq": last},
                    )  # fmt: skip
                    return

    def _seed(self, checkpoints: dict[str, StoredMessage], last: int) -> int | None:
        """Seed the books from the checkpoints; the ``PGW`` sequence to read from. A checkpoint
        naming a record past the stream's ``last`` sequence belongs to a ``PGW`` that was lost
        and made again (its sequences started over): ignored, the book waits for a snapshot."""
        starts: list[int] = []
        for subject, message in checkpoints.items():
            try:
                snapshot = decode_record(message.data)
                rec_seq = int((message.headers or {})[HEADER_REC_SEQ])
                if not isinstance(snapshot, BookSnapshot):
                    raise ValueError(f"a {type(snapshot).__name__}, not a book snapshot")
            except (ValueError, KeyError) as exc:
                self.stats.undecodable += 1
                log.warning(
                    "edge: unreadable checkpoint on %s: %r", subject, exc,
                    extra={"event": "bad_checkpoint", "subject": subject, "reason": repr(exc)},
                )  # fmt: skip
                continue
            if rec_seq > last:
                continue
            stream = snapshot.stream
            known = self.apply.position(stream)
            if known is not None and known.epoch == snapshot.epoch and known.seq >= snapshot.seq:
                starts.append(rec_seq + 1)  # this edge is already past it (a reconnect)
                continue
            self._adopt_epoch(snapshot.epoch)
            self.hub.seed_stream(stream, snapshot.epoch, snapshot.seq)
            self.hub.register_book(stream, self.books.seed(snapshot))
            self.apply = OrderedApply(
                {**self.apply.positions(), stream: Position(snapshot.epoch, snapshot.seq)}
            )
            starts.append(rec_seq + 1)
        return min(starts) if starts else None

    def _adopt_epoch(self, epoch: str) -> None:
        # Hello carries the hub's epoch; an edge has none of its own: the leader's, the newest
        # (epochs are the leader's time_ns at a new epoch: digits that grow).
        if self._epoch is None or int(epoch) > int(self._epoch):
            self._epoch = self.hub.epoch = epoch
            log.info("edge: serving epoch %s", epoch, extra={"event": "edge_epoch", "epoch": epoch})

    def deliver(self, batch: list[Delivery]) -> None:
        """One batch from the consumer, synchronously into the books and the hub."""
        ids: list[tuple[RecordId, Delivery]] = []
        for delivery in batch:
            try:
                ids.append(
                    (subjects.record_id_of_headers(delivery.subject, delivery.headers), delivery)
                )
            except SubjectError as exc:
                self._undecodable(delivery, exc)
        accepted, problems = self.apply.admit_batch(ids, lambda x: x[0])
        verdicts: dict[RecordId, Verdict] = {p.record: p.verdict for p in problems}
        records: list[Record] = []
        for record_id, delivery in accepted:
            try:
                record = decode_record(delivery.data)
            except msgspec.DecodeError as exc:
                self._undecodable(delivery, exc)
                continue
            stream = record_id.stream
            verdict = verdicts.get(record_id)
            if verdict is Verdict.FIRST or verdict is Verdict.NEW_EPOCH:
                self._adopt_epoch(record.epoch)
                self.hub.seed_stream(stream, record.epoch, record.seq - 1)
            elif verdict is Verdict.GAP and stream in self.books.books:
                self.stats.resyncs += 1
                log.warning(
                    "edge: records of %s before seq %s were lost before this edge read them; "
                    "its book waits for the next snapshot", stream, record.seq,
                    extra={"event": "edge_gap", "stream": stream, "seq": record.seq},
                )  # fmt: skip
                market = self.books.books[stream].market
                self.hub.register_book(stream, self.books.lost(stream, market))
            book = self.books.apply(record)
            if book is not None:
                self.hub.register_book(stream, book)
            records.append(record)
        if records:
            self.hub.publish(records)
            self._applied.set()
            self._applied = trio.Event()
        if batch:
            last = batch[-1]
            stats = self.stats
            stats.records += len(records)
            stats.pending = last.pending
            if not stats.first_stream_seq:
                stats.first_stream_seq = batch[0].stream_seq
            stats.last_stream_seq = last.stream_seq
            if records:
                stats.last_receive_ns = int(records[-1].receive_time)
            if not stats.caught_up and (
                last.pending == 0 or last.stream_seq >= stats.catchup_target
            ):
                self._caught_up()

    def next_batch(self) -> trio.Event:
        """Set once the next batch of records is in the hub (``io.resume_wait``)."""
        return self._applied

    def lag_seconds(self) -> float:
        """Seconds behind: 0 when nothing is pending, else now - the last applied record's
        receive time (the leader's clock: comparable to the ms, good enough for seconds)."""
        if self.stats.pending == 0 or not self.stats.last_receive_ns:
            return 0.0
        return max(0.0, (time.time_ns() - self.stats.last_receive_ns) / 1e9)

    def _caught_up(self) -> None:
        if not self.stats.caught_up:
            self.stats.caught_up = True
            self.caught_up.set()
            log.info(
                "edge: caught up at stream seq %d", self.stats.last_stream_seq,
                extra={"event": "edge_caught_up", "stream_seq": self.stats.last_stream_seq},
            )  # fmt: skip

    def _undecodable(self, delivery: Delivery, exc: Exception) -> None:
        self.stats.undecodable += 1
        log.warning(
            "edge: dropped an unreadable message on %s (stream seq %d): %r",
            delivery.subject, delivery.stream_seq, exc,
            extra={"event": "bad_record", "subject": delivery.subject, "reason": repr(exc)},
        )  # fmt: skip
