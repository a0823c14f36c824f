"""One simulator client connection: its queue of pre-formatted messages, the sender that copies
the queue to the socket, and the faults that act per message (drop, stall, bad frames, extra
fields, all drawn from the connection's own seeded random source).

The generator never waits for a connection: ``push`` appends, and a connection whose queue
outgrows ``send_buffer`` is dropped (``drop_reason == "overflow"``), like Paxos drops a client
that does not read.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from typing import Final, Literal

import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from gateway.simulator import faults as faults_mod
from gateway.simulator.config import SimulatorConfig
from gateway.simulator.events import Feed
from gateway.simulator.framing import text_frame
from gateway.simulator.registry import Registry
from gateway.simulator.stream import StallableStream

__all__ = ["CLOSE_TIMEOUT", "CONNECTION_ERRORS", "Connection"]

log = logging.getLogger("gateway.simulator")

CONNECTION_ERRORS: Final = (
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    # trio-websocket's reader task raises this when a client's ping crosses our close frame;
    # one confused connection must never take the whole simulator down.
    LocalProtocolError,
)
CLOSE_TIMEOUT: Final = 1.0
_SNAPSHOT_PREFIX: Final = '{"type":"SNAPSHOT"'
_WRITE_BYTES: Final = 65536  # frames gathered into one socket write


class Connection:
    """One client connection, as tests see it. Counters are updated live."""

    def __init__(
        self, registry: Registry, config: SimulatorConfig, ident: int, path: str, feed: Feed,
        market: str | None, stream: StallableStream, rng: random.Random,
    ) -> None:  # fmt: skip
        self.id = ident
        self.path = path
        self.feed: Feed = feed
        self.market = market
        self.messages_sent = 0
        """Real messages handed to the socket (snapshots, events, replays, injected UPDATEs)."""
        self.bad_frames_sent = 0
        self.streaming = False
        """False while the connection waits out the connect-rate delay."""
        self.drop_reason: str | None = None
        self.books: set[str] = set()  # markets whose SNAPSHOT a book connection has had
        self.scope = trio.CancelScope()  # the connection's life; ``drop`` ends it
        self.graceful = False  # dropped with a close frame
        self.dead = False  # dropped or gone: nothing more is queued
        self.sending = False  # a socket write is under way
        self._registry = registry
        self._config = config
        self._stream = stream
        self._rng = rng
        self._queue: deque[str] = deque()
        self._wake = trio.Event()

    def __repr__(self) -> str:
        return (
            f"<Connection {self.id} {self.path} sent={self.messages_sent} "
            f"queued={len(self._queue)} stalled={self.stalled}>"
        )

    @property
    def stalled(self) -> bool:
        return self._stream.stalled

    @property
    def queued(self) -> int:
        return len(self._queue)

    def drop(self, *, graceful: bool = False, reason: str = "command") -> None:
        """Close now: abruptly (TCP only, the client sees 1006) or with a 1001 close frame."""
        if self.drop_reason is None:
            self.drop_reason = reason
        self.dead = True
        if graceful and self.streaming:
            # A write cut short would put half a frame before the close frame: let the one
            # under way finish (the sender stops before the next), unless it is stuck.
            self.graceful = True
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + CLOSE_TIMEOUT)
            self._wake.set()
        else:
            self.graceful = False
            self.scope.cancel()

    def stall(self) -> None:
        self._stream.stall()
        self._registry.release_space()

    def unstall(self) -> None:
        self._stream.unstall()

    def push(self, text: str) -> None:
        if self.dead:
            return
        if len(self._queue) >= self._config.send_buffer:
            log.info("simulator: connection %d %s fell behind, dropping it", self.id, self.path)
            self.drop(reason="overflow")
            self._registry.release_space()
            return
        self._queue.append(text)
        self._wake.set()

    def push_initial(self, text: str) -> None:
        # a snapshot may be split into more fragments than the buffer holds: never a reason
        # to drop a connection that has not even started
        self._queue.append(text)
        self._wake.set()

    async def stream_to(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Send the queue until the connection is dropped or the peer goes."""
        async with trio.open_nursery() as nursery:

            async def watch_peer() -> None:
                # Clients send nothing; reading just notices the peer closing.
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_peer)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._send_loop(ws)
            nursery.cancel_scope.cancel()

    async def _send_loop(self, ws: trio_websocket.WebSocketConnection) -> None:
        queue, rng, f, stream = self._queue, self._rng, self._config.faults, self._stream
        registry = self._registry
        low_water = registry.high_water // 2
        while not self.dead:
            if not queue:
                self._wake = trio.Event()
                registry.notify()  # wait_idle may be waiting for this
                await self._wake.wait()
                continue
            if ws.closed is not None:
                return
            frames: list[bytes] = []
            size = count = 0
            fault: Literal["drop", "stall"] | None = None
            while queue and size < _WRITE_BYTES:
                text = queue[0]
                # faults are drawn per message, and act at that message: what came before
                # it in this write still goes out
                if f.drop_probability and rng.random() < f.drop_probability:
                    fault = "drop"
                    break
                if (
                    f.stall_probability
                    and not stream.stalled
                    and rng.random() < f.stall_probability
                ):
                    fault = "stall"
                    break
                if (
                    f.bad_frame_probability
                    and rng.random() < f.bad_frame_probability
                    and not text.startswith(_SNAPSHOT_PREFIX)
                ):
                    kind = rng.choice(f.bad_frame_kinds)
                    frames.append(
                        text_frame(faults_mod.bad_frame(kind, text, rng, f.oversized_bytes))
                    )
                    self.bad_frames_sent += 1
                if f.extra_field_probability and rng.random() < f.extra_field_probability:
                    text = faults_mod.with_extra_field(text, rng)
                queue.popleft()
                frame = text_frame(text)
                frames.append(frame)
                size += len(frame)
                count += 1
            if frames and ws.closed is None:  # no data after a close frame
                self.sending = True
                await stream.send_all(b"".join(frames))
                self.sending = False
                self.messages_sent += count
            if fault == "drop":
                self.drop(graceful=f.drop_graceful, reason="random")
            if fault == "stall":
                self.stall()  # the message whose turn it was now waits with the rest
            if registry.space_needed and len(queue) <= low_water:
                registry.release_space()
