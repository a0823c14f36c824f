"""Delivery in one place: the hub's outbox in, bytes on subscriber sockets out.

The way of a record: ``Hub.publish`` appends its ``OutFrame`` to each subscriber's queue
(``fanout.outbox``) → the queue's ``on_ready`` puts the connection in the ``Flusher``'s
``pending`` list → at the end of the publish (``Hub.after_publish``) the flusher writes each
pending connection's queue, already framed and joined (a backlog over one batch by
``Delivery.flush``, in batches), with one non-blocking write
(``socket_writer.SocketWriter``; why trio-websocket's send path is bypassed: see there) → only
what the socket does not take at once is left to the connection's writer task
(``Delivery.run``), which waits for the socket to become writable.

The writer task is one loop for both paths; a ``_Sender`` is what differs: pre-framed chunks
through the adopted socket (``_FrameSender``), or, when ``socket_writer.adopt`` cannot take a
connection over (an untested trio-websocket version), every message through trio-websocket's
``send_message`` (``_MessageSender``: correct, slower).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol, cast

import trio
from trio_websocket import ConnectionClosed

from gateway.contract.protocol import CLOSE_NORMAL, CLOSE_SLOW
from gateway.fanout.outbox import DEFAULT_BATCH_BYTES, FRAMED, Subscriber
from gateway.io.socket_writer import SocketWriter

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub

__all__ = ["Delivery", "DisconnectReason", "Flusher", "MessageSocket"]

# Why a subscriber connection ended (a label value of subscriber_disconnects).
DisconnectReason = Literal["slow", "ping_timeout", "client_close", "error", "shutdown"]


class Flusher:
    """Writes every connection that became ready, in rounds: a round for all of them together,
    never a task switch per subscriber.

    Two kinds of round. A ``publish`` (one upstream read's records) is written at once, in the
    publishing task (``Hub.after_publish`` is ``write_round``): no scheduler pass between an
    upstream read and its writes. That pass was a second trip through trio's run loop per
    upstream message (``epoll_wait``, this task's wake-up and its ``Event``): 259,700 against
    218,400 user-space instructions per message with one subscriber, a sixth of the message's
    cost (callgrind, ``bench.message_cost --subscribers 1``; docs/performance.md). The cold
    paths (answers to requests, catch-up, closes) queue frame by frame, so they only wake the
    flusher task (``Hub.after_ready`` is ``wake``), and its round, one tick later, writes each
    connection's frames in one write. Several feeds' reads in one tick are therefore written
    one read at a time, no longer merged into one write per subscriber.

    At live rates every message makes every subscriber ready and is written on its own, so the
    work per delivery is what this module can make cheap. A fast-path connection's ``on_ready``
    is therefore a bare append to ``pending`` (a C call: no Python frame per delivery), the hub
    calls the round once per publish, and the round writes a connection's queued frames
    itself, joined: for one read of two messages 10,800 user-space instructions per
    subscriber, against 13,700 through ``Delivery.flush`` (callgrind, ``bench.delivery_cost
    --only gateway --per-publish 2``). Anything unusual (a write in flight, a lock held, a
    close, more than one batch) goes through ``Delivery.flush``. A connection may be in
    ``pending`` twice (its queue emptied and refilled before the round): the second flush finds
    nothing to do.
    """

    __slots__ = ("_wakeup", "after", "pending", "sent_bytes")

    def __init__(self) -> None:
        # What the next round flushes. The list object stays the same (``on_ready`` is bound
        # to its ``append``).
        self.pending: list[Delivery] = []
        self._wakeup = trio.Event()
        # Called after each round (e.g. to update metrics in one go rather than per write).
        self.after: Callable[[], None] | None = None
        self.sent_bytes = 0  # written in the rounds, for ``after`` to count and reset

    def attach(self, hub: Hub) -> None:
        """Write ``hub``'s publications at once, and be woken after its other operations."""
        hub.after_publish = self.write_round
        hub.after_ready = self.wake

    def wake(self) -> None:
        """Run a round soon (in the flusher task) if anything is pending."""
        if self.pending:
            self._wakeup.set()

    async def run(self) -> None:
        """The flusher task: a round whenever ``wake`` asked for one."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self.write_round()

    def write_round(self) -> None:
        """Write what every pending connection has queued, now. Never raises and never waits:
        whatever a socket does not take goes to the connection's writer task."""
        pending = self.pending
        if not pending:
            return
        ready = pending[:]
        pending.clear()
        framed = FRAMED
        write = os.write
        batch_bytes = DEFAULT_BATCH_BYTES
        sent = 0
        for d in ready:
            # ``Delivery.flush``, inlined for what fits in one write: the per-delivery path.
            writer, sub = d.writer, d.sub
            queue = sub.queue
            frames = len(queue)
            if (
                d.done
                or writer is None
                or not frames
                or sub.inflight_bytes
                or writer.lock.held
                or writer.error is not None
                or writer.broken
                or writer.ws._close_reason is not None  # ``closed``, without a call
                or sub.close_code is not None
            ):
                d.flush()  # never raises: errors go to the connection's writer task
                continue
            if frames == 1:
                chunk = framed[sub.encoding](queue[0])
            elif sub.queued_bytes <= batch_bytes:  # a read of several messages: one write
                # Queued frames are built (``OutFrame``): the cast only says so to mypy.
                chunk = b"".join(cast("Iterable[bytes]", map(framed[sub.encoding], queue)))
            else:  # a backlog: in batches
                d.flush()
                continue
            assert chunk
            fd = writer.fileno()
            try:
                n = write(fd, chunk) if fd >= 0 else -1
            except OSError:
                n = -1  # nothing written: ``flush`` tries again and deals with it
            if n < 0:
                d.flush()
                continue
            queue.clear()
            if n == len(chunk):
                sub.queued_bytes -= n
                sent += n
            else:  # the rest is the writer task's
                sub.inflight_bytes = len(chunk)
                writer.keep_tail(chunk, n)
                d.wakeup.set()
        self.sent_bytes += sent
        if self.after is not None:
            self.after()


# -- one connection's delivery -----------------------------------------------------------------


class Delivery:
    """The write side of one subscriber connection: the hub's ``Subscriber`` buffer in, bytes
    on the socket out.

    ``ready`` is the subscriber's ``on_ready`` on the fallback path (it wakes the writer task);
    on the fast path ``on_ready`` puts the connection in the ``Flusher``'s next round, which
    writes the backlog if the socket takes it (``flush``). ``run`` is the writer task, which
    finishes what the flusher could not write (or, on the fallback path, sends every message
    through trio-websocket's ``send_message``) and ends the connection when the hub closed the
    subscriber. The two paths share that loop and differ only in their ``_Sender``.
    """

    __slots__ = (
        "close_timeout", "done", "flusher", "on_ready", "on_sent", "send_scope", "sender",
        "sending", "sub", "wakeup", "writer",
    )  # fmt: skip

    def __init__(
        self,
        sub: Subscriber,
        *,
        writer: SocketWriter | None,
        ws: MessageSocket | None,
        flusher: Flusher,
        close_timeout: float,
        on_sent: Callable[[int], None],
    ) -> None:
        """``writer``: the adopted connection (fast path), or None and ``ws`` for the
        ``send_message`` fallback. ``on_sent(n)``: ``n`` bytes were written by the writer task
        (the flusher's writes are added to ``flusher.sent_bytes``, counted once per round).
        On the fast path the hub must wake ``flusher`` (``Flusher.attach``)."""
        self.sub = sub
        self.writer = writer
        self.flusher = flusher if writer is not None else None
        self.close_timeout = close_timeout
        self.on_sent = on_sent
        self.sender: _Sender
        # What the hub calls when the buffer becomes non-empty or the subscriber is closed.
        self.on_ready: Callable[[], None]
        if writer is not None:
            self.sender = _FrameSender(self, writer)
            self.on_ready = partial(flusher.pending.append, self)
        else:
            assert ws is not None
            self.sender = _MessageSender(self, ws)
            self.on_ready = self.ready
        self.send_scope: trio.CancelScope | None = None
        # Fallback path: True while a write is under way: if it is interrupted, the WebSocket
        # framing is in an unknown state and the connection can only be dropped, not closed
        # cleanly. (The fast path knows it exactly: ``writer.mid_frame``.)
        self.sending = False
        self.wakeup = trio.Event()  # the writer task's
        self.done = False  # the connection's tasks are over: nothing more may be written

    @property
    def mid_frame(self) -> bool:
        return self.writer.mid_frame if self.writer is not None else self.sending

    def ready(self) -> None:
        """The fallback path's ``on_ready``: wake the writer task (and see ``closing``)."""
        self.wakeup.set()
        if self.sub.close_code is not None:
            self.closing()

    def closing(self) -> None:
        """The hub closed the subscriber: the writer task ends the connection."""
        self.wakeup.set()
        if self.sub.close_code == CLOSE_SLOW and self.send_scope is not None:
            # A subscriber too slow to keep its buffer gets a bounded time to take the
            # frame being written (and the close frame), not forever.
            self.send_scope.deadline = min(
                self.send_scope.deadline, trio.current_time() + self.close_timeout
            )

    def flush(self) -> None:
        """Run by the flusher (whatever its inline case does not take): write the whole
        backlog now if the socket takes it; anything else (the socket is busy or full, an
        error, a close) is the writer task's."""
        writer, flusher = self.writer, self.flusher
        if self.done or writer is None or flusher is None:
            return
        sub = self.sub
        if sub.close_code is not None:
            self.closing()
        if not writer.writable_now():
            self.wakeup.set()
            return
        while sub.queue:
            chunk = sub.take_framed()
            assert chunk is not None
            if not writer.write_now(chunk):
                self.wakeup.set()
                return
            flusher.sent_bytes += sub.inflight_bytes
            sub.sent()

    async def run(self, end: Callable[[DisconnectReason, int, str], None]) -> None:
        """The writer task: sends what the flusher left (or everything, on the fallback path)
        and closes when the hub says so, calling ``end(reason, code, text)``. Woken by
        ``wakeup``; the state it looks at (tail, error, queue, close) is the truth, the event
        only a nudge."""
        sub, sender = self.sub, self.sender
        sub.on_ready = self.on_ready
        if sub.queue:  # hello and initial state, queued before the writer existed
            self.on_ready()
            if self.flusher is not None:
                self.flusher.wake()
        try:
            while True:
                sender.check()
                if sender.pending():
                    with trio.CancelScope() as scope:
                        self.send_scope = scope
                        if sub.close_code == CLOSE_SLOW:
                            scope.deadline = trio.current_time() + self.close_timeout
                        await sender.send()
                    self.send_scope = None
                    if scope.cancelled_caught:
                        end("slow", CLOSE_SLOW, sub.close_reason)
                        return
                    continue
                if sub.close_code is not None:
                    why: DisconnectReason = "slow" if sub.close_code == CLOSE_SLOW else "shutdown"
                    end(why, sub.close_code, sub.close_reason)
                    return
                self.wakeup = trio.Event()
                await self.wakeup.wait()
        except sender.closed_errors:
            self.sending = False
            end("client_close", CLOSE_NORMAL, "")
        finally:
            sub.on_ready = None
            self.send_scope = None


class MessageSocket(Protocol):
    """What the fallback needs of trio-websocket's ``WebSocketConnection``."""

    async def send_message(self, message: str | bytes) -> None: ...


class _Sender(Protocol):
    closed_errors: tuple[type[Exception], ...]  # the peer is gone: the connection ends

    def check(self) -> None: ...
    def pending(self) -> bool: ...
    async def send(self) -> None: ...


class _FrameSender:
    """The fast path's writer: pre-framed chunks through the ``SocketWriter``."""

    __slots__ = ("delivery", "writer")

    closed_errors: tuple[type[Exception], ...] = (
        ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError,
    )  # fmt: skip

    def __init__(self, delivery: Delivery, writer: SocketWriter) -> None:
        self.delivery = delivery
        self.writer = writer

    def check(self) -> None:
        self.writer.take_error()

    def pending(self) -> bool:
        return self.writer.tail is not None or bool(self.delivery.sub.queue)

    async def send(self) -> None:
        """Write the pending tail and the whole backlog, holding the writer's lock (a tail left
        by the flusher already holds it). A cut-off chunk keeps the lock: see ``io.server``."""
        writer, sub, on_sent = self.writer, self.delivery.sub, self.delivery.on_sent
        owned = writer.tail is not None
        try:
            if not owned:
                await writer.lock.acquire()
                owned = True
            if writer.tail is not None:
                await writer.send()
                on_sent(sub.inflight_bytes)
                sub.sent()
            while (chunk := sub.take_framed()) is not None:
                await writer.send(chunk)
                on_sent(sub.inflight_bytes)
                sub.sent()
                if writer.lock.waiting:
                    # A ping, pong or close frame is waiting: let it in between two chunks.
                    owned = False
                    writer.lock.release()
                    await writer.lock.acquire()
                    owned = True
        finally:
            if owned and writer.tail is None:
                writer.lock.release()


class _MessageSender:
    """The fallback: every message through trio-websocket's ``send_message``."""

    __slots__ = ("delivery", "ws")

    closed_errors: tuple[type[Exception], ...] = (ConnectionClosed,)

    def __init__(self, delivery: Delivery, ws: MessageSocket) -> None:
        self.delivery = delivery
        self.ws = ws

    def check(self) -> None:
        pass

    def pending(self) -> bool:
        return bool(self.delivery.sub.queue)

    async def send(self) -> None:
        delivery = self.delivery
        sub = delivery.sub
        delivery.sending = True
        for payload in sub.take():
            await self.ws.send_message(payload)
        delivery.sending = False
        delivery.on_sent(sub.inflight_bytes)
        sub.sent()
