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
- **Only this module imports nats.** The sans-IO ``gateway.cluster`` package decides subjects,
  ids, fencing and order; this module only moves bytes and acks.
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
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.cluster import subjects
from gateway.cluster.fence import PublishOutcome, PublishStatus, SubjectFence, lanes
from gateway.cluster.subjects import RecordId, StreamLayout

T = TypeVar("T")

CLOSE_TIMEOUT: Final = 5.0  # s for the connection to close and the thread to end
DEFAULT_HIGH_WATER: Final = 10_000  # messages buffered for trio before the consumer waits


class NatsUnavailable(Exception):
    """NATS could not be reached (at start, or the connection is closed for good)."""


class BridgeClosed(Exception):
    """The bridge's loop has ended: no call can be made through it any more."""


class LeaseConflict(Exception):
    """A KV create found the key, or an update found another revision (JetStream 10071)."""


class PublishItem(msgspec.Struct, frozen=True):
    """One record to publish: its subject, payload and id (the headers are derived from it)."""

    subject: str
    payload: bytes
    record: RecordId

    @classmethod
    def of(cls, epoch: int | str, stream: str, seq: int, payload: bytes) -> PublishItem:
        return cls(
            subjects.record_subject(stream),
            payload,
            RecordId(subjects.epoch_text(epoch), stream, seq),
        )


class Delivery(msgspec.Struct, frozen=True):
    """One message from an ordered consumer, as it crosses to trio."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    stream_seq: int  # JetStream's sequence in the stream
    pending: int  # messages after this one in the stream (the consumer's lag)


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
            return await _wait_future(future, self._token)
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
                    subject, msg.seq or 0, msg.data or b"", _text_headers(msg.headers)
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
            return await self.call(lambda: self._publish_pipelined(items, ack_timeout))
        return await self.call(
            lambda: self._publish_fenced(items, fence, writer, stream, ack_timeout)
        )

    async def _publish_fenced(
        self,
        items: Sequence[PublishItem],
        fence: SubjectFence,
        writer: str,
        stream: str,
        ack_timeout: float,
    ) -> list[PublishOutcome]:
        outcomes: dict[int, PublishOutcome] = {}

        async def lane(indexed: list[tuple[int, PublishItem]]) -> None:
            stop: PublishOutcome | None = None
            for index, item in indexed:
                if stop is not None:
                    outcomes[index] = PublishOutcome(
                        item.record, PublishStatus.SKIPPED, error=stop.error
                    )
                    continue
                headers = _headers(item, fence.expected(item.subject), writer)
                try:
                    ack = await self._js.publish(
                        item.subject, item.payload, timeout=ack_timeout, headers=headers
                    )
                except Exception as exc:
                    outcome = _failure(item.record, exc)
                    if outcome.status is PublishStatus.FENCED:
                        outcome = await self._own_write(stream, item, headers, outcome)
                    outcomes[index] = outcome
                    if outcome.status is PublishStatus.DUPLICATE:
                        fence.stored(item.subject, outcome.stream_seq)
                    else:
                        stop = outcome
                    continue
                fence.stored(item.subject, ack.seq)
                outcomes[index] = _stored(item.record, ack)

        await asyncio.gather(*(lane(x) for x in lanes(enumerate(items), lambda x: x[1].subject)))
        return [outcomes[i] for i in range(len(items))]

    async def _own_write(
        self, stream: str, item: PublishItem, headers: dict[str, str], fenced: PublishOutcome
    ) -> PublishOutcome:
        try:
            last = await self._js.get_last_msg(stream, item.subject)
        except Exception:
            return fenced
        msg_id = headers[subjects.HEADER_MSG_ID]
        writer = headers.get(subjects.HEADER_WRITER)
        if writer and subjects.is_own_write(_text_headers(last.headers), msg_id, writer):
            return PublishOutcome(item.record, PublishStatus.DUPLICATE, last.seq or 0)
        return fenced

    async def _publish_pipelined(
        self, items: Sequence[PublishItem], ack_timeout: float
    ) -> list[PublishOutcome]:
        # Every item gets an outcome, whatever fails: a publish that cannot even be sent
        # (disconnected, too many in flight) and an ack that does not come in time are FAILED,
        # and the caller re-sends them with the same ids.
        sent: list[asyncio.Future[js_api.PubAck] | Exception] = []
        for item in items:
            try:
                sent.append(
                    await self._js.publish_async(
                        item.subject, item.payload, headers=_headers(item, None)
                    )
                )
            except Exception as exc:
                sent.append(exc)
        waiting = [f for f in sent if isinstance(f, asyncio.Future)]
        if waiting:
            await asyncio.wait(waiting, timeout=ack_timeout)
        outcomes = []
        for item, f in zip(items, sent, strict=True):
            if isinstance(f, Exception):
                outcomes.append(_failure(item.record, f))
            elif not f.done() or f.cancelled():
                f.cancel()
                no_ack = TimeoutError(f"no ack within {ack_timeout} s")
                outcomes.append(_failure(item.record, no_ack))
            elif (error := f.exception()) is not None:
                outcomes.append(_failure(item.record, error))
            else:
                outcomes.append(_stored(item.record, f.result()))
        return outcomes

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


class OrderedReader:
    """The trio side of one ordered consumer: ``await receive()`` -> the next batch."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, high_water: int
    ) -> None:
        self._loop = loop
        self._token = token
        self._high_water = high_water
        self._lock = threading.Lock()
        self._buffer: list[Delivery] = []
        self._arrived = trio.Event()
        self._room = asyncio.Event()  # set and waited on by the loop thread only
        self._room.set()
        self._closed = False
        self.batches = 0

    async def on_message(self, msg: Msg) -> None:
        """nats-py's callback, on the loop thread, one message at a time per subscription."""
        meta = msg.metadata
        delivery = Delivery(
            msg.subject,
            msg.data,
            msg.headers,  # already str -> str, and never reused by nats-py: no copy per message
            meta.sequence.stream,
            meta.num_pending,
        )
        with self._lock:
            was_empty = not self._buffer
            self._buffer.append(delivery)
            full = len(self._buffer) >= self._high_water
            if full:
                self._room.clear()
        if was_empty:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._wake)
        if full:
            await self._room.wait()

    def _wake(self) -> None:
        self._arrived.set()

    def close(self) -> None:
        self._closed = True
        # Release a callback waiting for room, so the unsubscribe is not stuck behind it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._room.set)

    async def receive(self) -> list[Delivery]:
        """Every message buffered so far, in order; waits for at least one."""
        while True:
            with self._lock:
                if self._buffer:
                    batch, self._buffer = self._buffer, []
                    released = not self._room.is_set()
                    break
                # Created under the lock: a callback that appends after this wakes this event.
                self._arrived = trio.Event()
                arrived = self._arrived
            if self._closed:
                raise BridgeClosed("the ordered reader is closed")
            await arrived.wait()
        if released:
            self._loop.call_soon_threadsafe(self._room.set)
        self.batches += 1
        return batch

    def __aiter__(self) -> OrderedReader:
        return self

    async def __anext__(self) -> list[Delivery]:
        return await self.receive()


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
            _loop_main(servers, name, connect_timeout, started, state), debug=False
        ),
        name="nats-bridge",
        # Daemon only as a last resort: the designed end below always joins it.
        daemon=True,
    )
    thread.start()
    try:
        with trio.fail_after(connect_timeout + CLOSE_TIMEOUT):
            loop, nc, stop = await _wait_future(started, token)
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


async def _loop_main(
    servers: str | list[str],
    name: str,
    connect_timeout: float,
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, Client, asyncio.Event]],
    state: Callable[[str], None],
) -> None:
    stop = asyncio.Event()

    async def disconnected() -> None:
        state("disconnected")

    async def reconnected() -> None:
        state("connected")

    async def closed() -> None:
        state("closed")

    errors: list[Exception] = []

    async def error(exc: Exception) -> None:
        # nats-py reports every failed (re)connect attempt here; the last one explains a
        # failed start, and the state says enough afterwards.
        del errors[:-1]
        errors.append(exc)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers,
                name=name,
                connect_timeout=connect_timeout,
                # Reconnect forever once running (nats-py keeps the subscriptions and the
                # ordered consumer resumes); at start this loops too, so the whole start is
                # bounded by wait_for and reported with the last attempt's error.
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                closed_cb=closed,
                error_cb=error,
            ),
            timeout=connect_timeout,
        )
    except (Exception, asyncio.CancelledError) as exc:
        cause = errors[-1] if errors else exc
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # trio gave up first
            started.set_exception(
                NatsUnavailable(
                    f"cannot connect to NATS at {servers} within {connect_timeout} s: {cause!r}"
                )
            )
        return
    try:
        started.set_result((asyncio.get_running_loop(), nc, stop))
    except concurrent.futures.InvalidStateError:
        # The trio side was cancelled while we connected: nobody will use this connection.
        await nc.close()
        return
    try:
        await stop.wait()
    finally:
        if not nc.is_closed:
            await nc.close()


async def _wait_future(future: concurrent.futures.Future[T], token: trio.lowlevel.TrioToken) -> T:
    """Wait in trio for a future completed by the loop thread: one wake-up, no worker thread."""
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()


# -- helpers -----------------------------------------------------------------------------------


def _headers(item: PublishItem, expected: int | None, writer: str = "") -> dict[str, str]:
    record = item.record
    return subjects.publish_headers(
        record.epoch, record.stream, record.seq, expected, writer or None
    )


def _stored(record: RecordId, ack: js_api.PubAck) -> PublishOutcome:
    status = PublishStatus.DUPLICATE if ack.duplicate else PublishStatus.STORED
    return PublishOutcome(record, status, ack.seq)


def _failure(record: RecordId, exc: BaseException) -> PublishOutcome:
    if (
        isinstance(exc, nats.js.errors.APIError)
        and exc.err_code == subjects.ERR_WRONG_LAST_SEQUENCE
    ):
        return PublishOutcome(record, PublishStatus.FENCED, error=str(exc))
    return PublishOutcome(record, PublishStatus.FAILED, error=repr(exc))


def _text_headers(headers: dict[str, Any] | None) -> dict[str, str] | None:
    return None if headers is None else {str(k): str(v) for k, v in headers.items()}


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
