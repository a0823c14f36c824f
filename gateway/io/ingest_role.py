"""The ingest role: contend for the lease; while leading, hold the upstream and publish.

One task per process that may lead (``IngestRole.run``, given a connected bridge):

1. ``run_lease`` contends for the KV lease every TTL/3.
2. On acquiring, the leader reads the last message of every ``PGW`` subject
   (``cluster.takeover.plan_takeover``): the epoch to continue (a new one only when ``PGW`` is
   empty), each stream's last seq and the fence.
3. It starts the upstream tasks (``start_upstream``: the feeds' normalizers continue the
   numbering, each book's first snapshot is a ``takeover`` resync) into an
   ``cluster.outbound.Outbound`` and publishes what they queue, batch after batch, fenced and
   named by the leadership term. ``FAILED``/``SKIPPED`` records are re-sent with the same ids
   in order until stored; ``FENCED`` or a lost lease ends the term at once: the upstream tasks
   are cancelled (their WebSockets closed) and the process stands by again.
4. After each batch is stored, the checkpoints cut with it go to ``PGW_SNAP`` with the
   ``Pgw-Rec-Seq`` header (best effort: a failed checkpoint is counted, the next one follows).

The records queued when a term ends are dropped: none of them was stored, and the next leader
continues after what was (its first book records are snapshots, so no subscriber holds a book
that misses them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import trio

from gateway.cluster import subjects
from gateway.cluster.codec import encode_record
from gateway.cluster.fence import PublishStatus, SubjectFence
from gateway.cluster.lease import Lease, LeaseRole
from gateway.cluster.outbound import Outbound
from gateway.cluster.stats import IngestStats
from gateway.cluster.subjects import LEASE_KEY, RecordId, StreamLayout
from gateway.cluster.takeover import Takeover, plan_takeover
from gateway.contract.records import BookSnapshot, Record
from gateway.ingest.batch import RecordSink
from gateway.io.nats_bridge import BridgeClosed, NatsBridge, PublishItem
from gateway.io.nats_lease import run_lease

__all__ = ["HEADER_REC_SEQ", "IngestRole", "StartUpstream"]

log = logging.getLogger("gateway.cluster.ingest")

HEADER_REC_SEQ = "Pgw-Rec-Seq"
RETRY_INITIAL = 0.05  # s before re-sending what was not stored; doubles up to RETRY_MAX
RETRY_MAX = 1.0

# (nursery, epoch, heads to continue after, sink): start the upstream tasks of one term.
StartUpstream = Callable[[trio.Nursery, str, Mapping[str, int], RecordSink], Awaitable[None]]


class _Fenced(Exception):
    pass


class _NotLeading(Exception):
    pass


class IngestRole:
    def __init__(
        self,
        start_upstream: StartUpstream,
        *,
        holder: str,
        layout: StreamLayout,
        checkpoint_interval: float,
        ack_timeout: float = 5.0,
        new_epoch: Callable[[], str] = lambda: str(time.time_ns()),
        on_ack: Callable[[float], None] | None = None,
    ) -> None:
        self.start_upstream = start_upstream
        self.layout = layout
        self.lease = Lease(holder, layout.lease_ttl_seconds)
        self.checkpoint_interval = checkpoint_interval
        self.ack_timeout = ack_timeout
        self.new_epoch = new_epoch
        self.on_ack = on_ack  # ack latency in seconds, per batch (a histogram)
        self.stats = IngestStats()
        self.epoch: str | None = None  # of the current or last term
        self.leading = False  # publishing now (the lease held and the takeover done)
        self._changed = trio.Event()
        self._term: trio.CancelScope | None = None
        self._outbound: Outbound | None = None

    @property
    def role(self) -> LeaseRole:
        return self.lease.role

    def queued(self) -> int:
        """Records the upstream tasks handed over that the publisher has not taken yet."""
        return 0 if self._outbound is None else self._outbound.pending

    def _on_change(self, lease: Lease) -> None:
        log.info(
            "ingest lease: %s (%s)", lease.role, lease.reason,
            extra={"event": "lease_" + lease.role, "reason": lease.reason, "term": lease.term},
        )  # fmt: skip
        if lease.role is LeaseRole.STANDBY and self._term is not None:
            self._term.cancel()
        self._changed.set()

    async def run(
        self, bridge: NatsBridge, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Contend, lead, stand by, until cancelled (the streams and bucket must exist)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_lease(
                    bridge, self.lease, bucket=self.layout.lease_bucket,
                    on_change=self._on_change, task_status=task_status,
                )
            )  # fmt: skip
            task_status.started()
            try:
                while True:
                    while not self.lease.is_leader(trio.current_time()):
                        self._changed = trio.Event()
                        await self._changed.wait()
                    await self._lead(bridge)
            finally:
                self.leading = False
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await self._release(bridge)

    async def _release(self, bridge: NatsBridge) -> None:
        """On a stop (the term's tasks have ended, nothing more is written): delete the key
        if it is still ours, so a standby takes over at its next attempt (TTL/3), not after
        the TTL. Best effort and bounded: a key not deleted expires by itself."""
        revision = self.lease.revision
        if not self.lease.is_leader(trio.current_time()) or revision is None:
            return
        with trio.move_on_after(self.lease.interval):
            try:
                await bridge.kv_delete(self.layout.lease_bucket, LEASE_KEY, revision)
            except Exception as exc:  # a conflict (not ours any more), NATS gone: it expires
                log.info(
                    "ingest: lease not released: %r", exc,
                    extra={"event": "lease_not_released", "reason": repr(exc)},
                )  # fmt: skip
                return
            self.lease.released()
            log.info("ingest: lease released", extra={"event": "lease_released"})

    async def _lead(self, bridge: NatsBridge) -> None:
        term = self.lease.term
        assert term is not None
        with trio.CancelScope() as scope:
            self._term = scope
            try:
                try:
                    last = await bridge.last_messages(self.layout.records)
                except BridgeClosed:
                    raise
                except Exception as exc:
                    # Reading the fence failed (NATS just went away): try again soon, if
                    # still leading; never lead without it.
                    log.warning(
                        "ingest: cannot read the stream's last messages: %r", exc,
                        extra={"event": "takeover_failed", "reason": repr(exc)},
                    )  # fmt: skip
                    await trio.sleep(self.lease.interval)
                    return
                plan = plan_takeover(
                    ((s, m.stream_seq, m.headers) for s, m in last.items()), self.new_epoch()
                )
                if not self.lease.is_leader(trio.current_time()):
                    return
                self._took_over(plan, term)
                wake = trio.Event()

                def pending() -> None:
                    wake.set()

                outbound = Outbound(self.checkpoint_interval, trio.current_time, on_pending=pending)
                self._outbound = outbound
                self.leading = True
                async with trio.open_nursery() as nursery:
                    await self.start_upstream(nursery, plan.epoch, plan.heads, outbound)
                    try:
                        while True:
                            if not outbound.pending:
                                await wake.wait()
                            wake = trio.Event()
                            await self._publish_pending(bridge, outbound, term)
                    except _Fenced:
                        log.warning(
                            "ingest: another writer holds a subject (fenced): standing by",
                            extra={"event": "fenced", "term": term},
                        )
                    except _NotLeading:
                        pass
                    nursery.cancel_scope.cancel()
            finally:
                self.leading = False
                self._term = None
                self._outbound = None
        # FENCED: the lease may still look held; give it up by waiting for the lease's own
        # verdict (a conflict at the next renew), not by leading again at once.
        if self.lease.is_leader(trio.current_time()):
            self.lease.check(self.lease.valid_until())

    def _took_over(self, plan: Takeover, term: str) -> None:
        self.epoch = plan.epoch
        self._fence = SubjectFence(plan.fence)
        kind = "continued" if plan.continued else "new_epoch"
        self.stats.takeovers[kind] += 1
        log.info(
            "ingest: leading (%s), epoch %s, %d streams continued", kind, plan.epoch,
            len(plan.heads),
            extra={"event": "leading", "epoch": plan.epoch, "term": term, "takeover": kind,
                   "streams": len(plan.heads), "unreadable": list(plan.unreadable)},
        )  # fmt: skip

    async def _publish_pending(self, bridge: NatsBridge, outbound: Outbound, term: str) -> None:
        records, checkpoints = outbound.take()
        if not records:
            return
        stored = await self._publish_records(bridge, records, term)
        if checkpoints:
            await self._publish_checkpoints(bridge, checkpoints, stored)

    async def _publish_records(
        self, bridge: NatsBridge, records: Sequence[Record], term: str
    ) -> dict[RecordId, int]:
        """Publish until every record is stored (same ids, in order); their JetStream seqs."""
        remaining = [PublishItem.of(r.epoch, r.stream, r.seq, encode_record(r)) for r in records]
        stored: dict[RecordId, int] = {}
        delay = RETRY_INITIAL
        while remaining:
            if not self.lease.is_leader(trio.current_time()):
                raise _NotLeading
            sent_at = trio.current_time()
            outcomes = await bridge.publish_batch(
                remaining, fence=self._fence, writer=term, stream=self.layout.records,
                ack_timeout=self.ack_timeout,
            )  # fmt: skip
            if self.on_ack is not None:
                self.on_ack(trio.current_time() - sent_at)
            again: list[PublishItem] = []
            for item, outcome in zip(remaining, outcomes, strict=True):
                status = outcome.status
                if status is PublishStatus.STORED or status is PublishStatus.DUPLICATE:
                    stored[item.record] = outcome.stream_seq
                    if status is PublishStatus.STORED:
                        self.stats.publish_stored += 1
                    else:
                        self.stats.publish_duplicates += 1
                elif status is PublishStatus.FENCED:
                    self.stats.publish_fenced += 1
                    raise _Fenced(outcome.error)
                else:
                    self.stats.publish_failures += 1
                    again.append(item)
            if again:
                log.warning(
                    "ingest: %d of %d records not stored, re-sending: %s", len(again),
                    len(remaining), outcomes[0].error or "(no error text)",
                    extra={"event": "publish_retry", "records": len(again)},
                )  # fmt: skip
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            remaining = again
        return stored

    async def _publish_checkpoints(
        self, bridge: NatsBridge, checkpoints: list[BookSnapshot], stored: dict[RecordId, int]
    ) -> None:
        items = []
        for cp in checkpoints:
            rec_seq = stored.get(RecordId(cp.epoch, cp.stream, cp.seq))
            if rec_seq is None:  # cannot happen: cut with a record of this batch
                continue
            items.append(
                PublishItem(
                    subjects.checkpoint_subject(cp.stream),
                    encode_record(cp),
                    RecordId(cp.epoch, cp.stream, cp.seq),
                    headers={HEADER_REC_SEQ: str(rec_seq)},
                )
            )
        outcomes = await bridge.publish_batch(
            items, fence=None, stream=self.layout.checkpoints, ack_timeout=self.ack_timeout
        )
        for outcome in outcomes:
            if outcome.status in (PublishStatus.STORED, PublishStatus.DUPLICATE):
                self.stats.checkpoints += 1
            else:
                self.stats.checkpoint_failures += 1
