"""Reading a JetStream stream in order through the NATS bridge: batches handed to trio.

nats-py's ordered consumer calls ``OrderedReader.on_message`` on the loop thread for every
message; the reader appends it to a buffer and wakes trio only when the buffer goes from empty
to non-empty, and trio takes everything at once (``receive``). When the buffer holds
``high_water`` messages the callback waits until trio has taken them: backpressure, not an
unbounded queue (JetStream's flow control holds the rest on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import msgspec
import trio
from nats.aio.msg import Msg

from gateway.io.nats_crossing import BridgeClosed


class Delivery(msgspec.Struct, frozen=True):
    """One message from an ordered consumer, as it crosses to trio."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    stream_seq: int  # JetStream's sequence in the stream
    pending: int  # messages after this one in the stream (the consumer's lag)


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
