"""The NATS JetStream edge: nats-py on its own asyncio loop in a thread, batches to and from trio.

Why a thread bridge. nats-py is asyncio-only and there is no trio or anyio NATS client. The
design study (shared/design/scale-out.md, section 3.3) measured four options on this kind of
2-core machine, 100k records of ~164 B: this bridge published 18,307 records/s and read 55,650
in order (native nats-py on plain asyncio: 16,116 and 59,485); trio-asyncio reached 9,642 and
36,989 and mixes two cancellation semantics inside the gateway; a sidecar process adds a hop and
serialization for isolation we do not need unless the GIL becomes contended; a home-made trio
client would have to re-implement JetStream's ordered-consumer resets, flow control and KV.
``bench/nats_bridge.py`` measures this module against raw nats-py in the same run
(docs/cluster.md has the figures).

The rules that keep it that fast and structured:

- **One crossing per batch, both ways.** Out: ``publish_batch`` hands a whole list to the loop
  (``asyncio.run_coroutine_threadsafe``) and gets every ack back in one wake-up of trio
  (``TrioToken.run_sync_soon``). In: the consumer callback appends to a buffer and wakes trio
  only when the buffer goes from empty to non-empty; trio takes everything at once.
- **Backpressure, not unbounded queues.** When the inbound buffer holds ``high_water`` messages
  the callback waits (an ``asyncio.Event``) until trio has taken them; nats-py's ordered
  consumer and JetStream's flow control then hold the rest on the server.
- **A designed start and end.** ``open_bridge`` is an async context manager: it starts the
  thread, returns once connected (or raises ``NatsUnavailable`` within ``connect_timeout``:
  never a hang), and on exit, also on cancellation, closes the connection and joins the thread
  under a shielded, bounded scope. A trio call in flight when its scope is cancelled cancels its
  asyncio task.
- **Only the ``nats_*`` modules import nats.** The sans-IO ``gateway.cluster`` package decides
  subjects, ids, fencing and order; they only move bytes and acks. This module holds the
  connection, its loop thread and the stream and KV calls; ``nats_publish`` what one batch's
  publishing runs on the loop, ``nats_reader`` the ordered consumer's trio side and
  ``nats_crossing`` the crossing itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Final, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.cluster import subjects
from gateway.cluster.fence import PublishOutcome, SubjectFence
from gateway.cluster.subjects import StreamLayout
from gateway.io.nats_crossing import BridgeClosed, NatsUnavailable, text_headers, wait_future
from gateway.io.nats_loop import loop_main
from gateway.io.nats_publish import PublishItem, publish_fenced, publish_pipelined
from gateway.io.nats_reader import Delivery, OrderedReader

T = TypeVar("T")

CLOSE_TIMEOUT: Final = 5.0  # s for the connection to close and the thread to end
DEFAULT_HIGH_WATER: Final = 10_000  # messages buffered for trio before the consumer waits


class LeaseConflict(Exception):
    """A KV create found the key, or an update found another revision (JetStream 10071)."""


class StoredMessage(msgspec.Struct, frozen=True):
    """The last message of one subject, as read by a new leader or a starting edge."""

    subject: str
    stream_seq: int
    data: bytes
    headers: dict[str, str] | None


class NatsBridge:
    """Calls into nats-py from trio. Made by ``open_bridge``; every method is a trio coroutine."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        nc: Client,
        stop: asyncio.Event,
        thread: threading.Thread,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self._loop = loop
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._stop = stop
        self.thread = thread
        self._token = token
        # Written by nats-py's callbacks on the loop thread, read by trio: a str assignment is
        # atomic, and trio only reports it.
        self.state = "connected"
        self.disconnects = 0

    @property
    def closed(self) -> bool:
        return self._nc.is_closed

    # -- the crossing ------------------------------------------------------------------------

    async def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on the loop; the trio caller's cancellation cancels it there."""
        if self._loop.is_closed() or self._stop.is_set():
            raise BridgeClosed("the NATS bridge is closed")
        coroutine = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError as exc:  # the loop closed just now
            coroutine.close()
            raise BridgeClosed("the NATS bridge is closed") from exc
        try:
            return await wait_future(future, self._token)
        except concurrent.futures.CancelledError as exc:
            raise BridgeClosed("the NATS bridge closed during the call") from exc

    # -- streams -----------------------------------------------------------------------------

    async def ensure_streams(self, layout: StreamLayout, *, memory: bool = False) -> None:
        """Create the records and checkpoint streams (idempotent with the same configuration)."""
        storage = js_api.StorageType.MEMORY if memory else js_api.StorageType.FILE

        def limits(name: str, prefix: str) -> js_api.StreamConfig:
            return js_api.StreamConfig(
                name=name,
                subjects=[prefix + ">"],
                retention=js_api.RetentionPolicy.LIMITS,
                discard=js_api.DiscardPolicy.OLD,
                storage=storage,
                num_replicas=layout.replicas,
            )

        records = limits(layout.records, subjects.RECORDS_PREFIX)
        records.max_age = layout.max_age_seconds
        records.duplicate_window = layout.duplicate_window_seconds
        # The last-value store: one message (the latest checkpoint) per book subject.
        checkpoints = limits(layout.checkpoints, subjects.CHECKPOINTS_PREFIX)
        checkpoints.max_msgs_per_subject = 1

        async def ensure() -> None:
            for config in (records, checkpoints):
                await self._js.add_stream(config)

        await self.call(ensure)

    async def message_count(self, stream: str) -> int:
        async def count() -> int:
            info = await self._js.stream_info(stream)
            return info.state.messages

        return await self.call(count)

    async def last_sequence(self, stream: str) -> int:
        """The JetStream sequence of the stream's last message (0: empty)."""

        async def last() -> int:
            info = await self._js.stream_info(stream)
            return info.state.last_seq

        return await self.call(last)

    async def stream_leader(self, stream: str) -> str | None:
        """The server name of the stream's Raft leader (None on a single node)."""

        async def leader() -> str | None:
            info = await self._js.stream_info(stream)
            return None if info.cluster is None else info.cluster.leader

        return await self.call(leader)

    async def last_messages(self, stream: str) -> dict[str, StoredMessage]:
        """The last message of every subject of ``stream``: a new leader's fence and
        continuation point (its last ``(epoch, seq)`` per gateway stream), or an edge's
        checkpoints (``PGW_SNAP``)."""

        async def read() -> dict[str, StoredMessage]:
            info = await self._js.stream_info(stream, subjects_filter=">")
            found: dict[str, StoredMessage] = {}
            for subject in sorted(info.state.subjects or {}):
                msg = await self._js.get_last_msg(stream, subject)
                found[subject] = StoredMessage(
                    subject, msg.seq or 0, msg.data or b"", text_headers(msg.headers)
                )
            return found

        return await self.call(read)

    # -- publishing --------------------------------------------------------------------------

    async def publish_batch(
        self,
        items: Sequence[PublishItem],
        *,
        fence: SubjectFence | None,
        writer: str = "",
        stream: str = subjects.RECORDS_STREAM,
        ack_timeout: float = 5.0,
    ) -> list[PublishOutcome]:
        """Publish ``items``; one outcome per item, in the items' order.

        With a ``fence`` (the leader's), every publish names the subject's expected last
        sequence, so the records of one subject go one ack after another and subjects run
        concurrently; the fence follows the acks. It crosses with the batch and is touched only
        by the loop thread while the batch is in flight, so one batch per fence at a time (the
        leader publishes from one task, batch after batch, which also keeps the order).
        ``writer`` names the leadership term: a rejection whose subject ends with this very
        record from this term is our retry after a lost ack (a ``DUPLICATE``), anything else is
        ``FENCED``. Without a fence (tools, the
        bench), the whole batch is pipelined.
        """
        if not items:
            return []
        if fence is None:
            return await self.call(lambda: publish_pipelined(self._js, items, ack_timeout))
        return await self.call(
            lambda: publish_fenced(self._js, items, fence, writer, stream, ack_timeout)
        )

    # -- the lease's key-value bucket --------------------------------------------------------

    async def ensure_bucket(self, bucket: str, *, ttl: float, replicas: int) -> None:
        """A KV bucket whose ``MaxAge`` is the lease TTL: a key not rewritten within it goes."""

        async def create() -> None:
            await self._js.create_key_value(
                js_api.KeyValueConfig(bucket=bucket, history=1, ttl=ttl, replicas=replicas)
            )

        await self.call(create)

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int:
        """Store ``key`` only if absent; its revision. ``LeaseConflict`` if it exists."""

        async def create() -> int:
            kv = await self._js.key_value(bucket)
            try:
                return await kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                raise LeaseConflict(str(exc)) from exc

        return await self.call(create)

    async def kv_update(self, bucket: str, key: str, value: bytes, last: int) -> int:
        """Rewrite ``key`` only if its revision is ``last``; the new revision, or
        ``LeaseConflict``."""

        async def update() -> int:
            kv = await self._js.key_value(bucket)
            try:
                return await kv.update(key, value, last=last)
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                raise LeaseConflict(str(exc)) from exc

        return await self.call(update)

    async def kv_delete(self, bucket: str, key: str, last: int) -> None:
        """Delete ``key`` only if its revision is still ``last`` (a leader giving its lease
        up); ``LeaseConflict`` if another holder wrote it since."""

        async def delete() -> None:
            kv = await self._js.key_value(bucket)
            try:
                await kv.delete(key, last=last)
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                raise LeaseConflict(str(exc)) from exc

        await self.call(delete)

    # -- ordered reading ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def ordered_reader(
        self,
        filter_subject: str,
        *,
        stream: str = subjects.RECORDS_STREAM,
        start_sequence: int | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> AsyncIterator[OrderedReader]:
        """An ordered consumer on ``stream`` (from ``start_sequence``, else from the first
        message), delivering batches to trio. Ended (unsubscribed) on exit."""
        reader = OrderedReader(self._loop, self._token, high_water)
        config = js_api.ConsumerConfig()
        if start_sequence is not None:
            config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_sequence

        async def subscribe() -> Any:
            return await self._js.subscribe(
                filter_subject,
                stream=stream,
                cb=reader.on_message,
                ordered_consumer=True,
                config=config,
            )

        subscription = await self.call(subscribe)
        try:
            yield reader
        finally:
            reader.close()
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(CLOSE_TIMEOUT),
                contextlib.suppress(BridgeClosed, nats.errors.Error),
            ):
                await self.call(subscription.unsubscribe)


# -- starting and ending -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_bridge(
    servers: str | list[str],
    *,
    name: str = "paxos-gateway",
    connect_timeout: float = 2.0,
    on_state: Callable[[str], None] | None = None,
) -> AsyncIterator[NatsBridge]:
    """Connect to NATS on a loop thread; yield the bridge; close and join on exit.

    Unreachable at start: ``NatsUnavailable`` within about ``connect_timeout`` (one attempt per
    server, no retry loop: the caller decides, e.g. a role's readiness stays false and it
    tries again with backoff). After a successful start, nats-py reconnects by itself; the
    bridge's ``state`` says ``disconnected`` / ``connected`` meanwhile (and ``on_state`` is
    called on the loop thread: it must only hand the value on).
    """
    token = trio.lowlevel.current_trio_token()
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, Client, asyncio.Event]]
    started = concurrent.futures.Future()
    states: list[Callable[[str], None]] = []

    def state(value: str) -> None:
        for callback in states:
            callback(value)

    thread = threading.Thread(
        target=lambda: asyncio.run(
            loop_main(servers, name, connect_timeout, started, state), debug=False
        ),
        name="nats-bridge",
        # Daemon only as a last resort: the designed end below always joins it.
        daemon=True,
    )
    thread.start()
    try:
        with trio.fail_after(connect_timeout + CLOSE_TIMEOUT):
            loop, nc, stop = await wait_future(started, token)
    except BaseException:
        # Also when cancelled: the loop thread sees the cancelled start and ends by itself.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join, CLOSE_TIMEOUT)
        raise
    bridge = NatsBridge(loop, nc, stop, thread, token)

    def track(value: str) -> None:
        if value == "disconnected":
            bridge.disconnects += 1
        bridge.state = value
        if on_state is not None:
            on_state(value)

    states.append(track)
    try:
        yield bridge
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(BridgeClosed):
                await bridge.call(nc.close)
            loop.call_soon_threadsafe(stop.set)
            await trio.to_thread.run_sync(thread.join, CLOSE_TIMEOUT)
            bridge.state = "closed"


__all__ = [
    "BridgeClosed",
    "Delivery",
    "LeaseConflict",
    "NatsBridge",
    "NatsUnavailable",
    "OrderedReader",
    "PublishItem",
    "StoredMessage",
    "open_bridge",
]
