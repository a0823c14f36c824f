"""One open upstream WebSocket (I/O around the sans-IO ``ingest.wsclient.ClientProtocol``):
the stream, one writer at a time, pings and their pongs, and the closing handshake from this
side. Reading is the read loop's alone (``io.upstream_conn``).
"""

from __future__ import annotations

import errno
import math
import os
import socket
from typing import Final

import trio

from gateway.fanout.wsframe import OP_PING
from gateway.ingest.wsclient import ClientProtocol, client_frame

__all__ = ["RECEIVE_BUFFER_SIZE", "UpstreamWebSocket"]

# One read: up to a few hundred Paxos messages, normalized and published as one batch.
RECEIVE_BUFFER_SIZE: Final = 65536
# A read at least this large (some 50 Paxos messages) is a backlog, as after a reconnect: the
# coalesce window does not hold the read after it (at a live rate a read is one message or a
# few, 150-500 bytes). Holding those partial reads slowed a reconnect's drain by a third.
BACKLOG_BYTES: Final = 8192


class UpstreamWebSocket:
    """One open upstream WebSocket (I/O around ``wsclient.ClientProtocol``): the stream, one
    writer at a time (the read loop's pongs and close replies, the keepalive's pings, the close
    handshake), and the pings waiting for their pongs. Reading is the read loop's alone."""

    def __init__(
        self, stream: trio.abc.Stream, protocol: ClientProtocol, *, coalesce_window: float = 0.0
    ) -> None:
        self.stream = stream
        # A plain TCP stream is read from the standard-library socket under trio's (see
        # ``receive``); TLS goes through the stream.
        if isinstance(stream, trio.SocketStream):
            raw = getattr(stream.socket, "_sock", None)
        else:
            raw = None
        self._raw: socket.socket | None = raw if isinstance(raw, socket.socket) else None
        # Bytes of the last read: a full buffer means more is probably waiting, and from
        # BACKLOG_BYTES on the coalesce window does not hold the next read.
        self._last_size = 0
        self.coalesce_window = coalesce_window  # reads at least this far apart (``receive``)
        self._last_read = -math.inf  # trio time of the last read, kept while pacing
        self.protocol = protocol
        self._send_lock = trio.Lock()
        self._pings: dict[bytes, trio.Event] = {}
        self.close_sent = False
        self.eof = False  # the peer's side of the TCP connection has ended

    async def receive(self) -> bytes:
        """One read of up to ``RECEIVE_BUFFER_SIZE`` bytes; ``b""`` at EOF. Raises what
        ``receive_some`` raises (``trio.BrokenResourceError``, ``trio.ClosedResourceError``).

        At a paced rate every message is its own read and the reader sleeps between them.
        ``SocketStream.receive_some`` tries ``recv`` before it waits, so each message cost two
        ``recv`` calls (the first one EAGAIN) and trio's socket wrapper around each. Here a
        plain TCP stream waits for readiness first and reads once: one ``recv`` per wakeup,
        and the same single checkpoint (the wait) per read, so cancellation and the other
        tasks' turns are as before. After a read that filled the buffer it reads before waiting
        (a burst: the data is there), behind a checkpoint all the same.

        With a ``coalesce_window`` (``upstream.coalesce_window``) a read comes no sooner than
        that long after the one before: what arrives in between waits in the socket and is
        read, normalized, published and written to each subscriber together. At a live rate
        every upstream message otherwise pays the whole fixed path (a wake-up on a cold cache,
        ~190,000 instructions, 250-440 µs of CPU here) and one write per subscriber (a loopback
        send, ~6.5 µs); two messages per read pay it once. At 1,000 msg/s, N = 100, a 2 ms
        window took the gateway from 8.5-8.7 to 6.2-6.9 CPU s per million deliveries (the
        floor server, one write per delivery: 7.7-8.3) and its p50 from 0.9-1.6 to 2.3-3.0 ms
        (three runs each, ``bench.run``'s ``gateway`` and ``gateway-2ms``; docs/upstream.md).
        Messages further apart than the window are read as they arrive: at low rates it adds
        nothing. trio sleeps in whole milliseconds (``epoll_wait``), so a wait is up to one
        tick longer than the window; a backlog (a read of ``BACKLOG_BYTES`` or more) is read
        on at once.
        """
        window = self.coalesce_window
        last_size = self._last_size
        paced = False
        if window and last_size < BACKLOG_BYTES:
            due = self._last_read + window
            if trio.current_time() < due:
                await trio.sleep_until(due)
                paced = True
        raw = self._raw
        if raw is None:
            # bytes for the parser (SSLStream may hand out a bytearray).
            data = bytes(await self.stream.receive_some(RECEIVE_BUFFER_SIZE))
        else:
            if raw.fileno() < 0:  # closed under us: what trio's own recv would say
                await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError("this socket was already closed")
            if paced:
                pass  # after the window's sleep the data is probably there: try first
            elif last_size == RECEIVE_BUFFER_SIZE:
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.wait_readable(raw)
            while True:
                try:
                    data = raw.recv(RECEIVE_BUFFER_SIZE)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(raw)
                except OSError as exc:
                    # As trio's SocketStream translates them.
                    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                        raise trio.ClosedResourceError("this socket was already closed") from None
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        self._last_size = len(data)
        if window:
            self._last_read = trio.current_time()
        return data

    async def send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(frame)

    async def send_pending(self) -> None:
        """Send what the protocol queued (pongs, the close reply)."""
        outgoing = self.protocol.outgoing
        if outgoing:
            frames = bytes(outgoing)
            outgoing.clear()
            if self.protocol.closing is not None:
                self.close_sent = True
            await self.send(frames)

    def pongs_received(self) -> None:
        for payload in self.protocol.pongs:
            event = self._pings.pop(payload, None)
            if event is not None:
                event.set()
        self.protocol.pongs.clear()

    async def ping(self) -> None:
        """Send a ping and wait for its pong (the caller bounds the wait)."""
        payload = os.urandom(8)
        event = self._pings[payload] = trio.Event()
        try:
            await self.send(client_frame(OP_PING, payload))
            await event.wait()
        finally:
            self._pings.pop(payload, None)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake from this side: send a close frame, then read (and drop)
        until the peer's close frame or EOF. The caller bounds it in time."""
        if not self.close_sent and self.protocol.closing is None:
            self.close_sent = True
            await self.send(self.protocol.send_close(code, reason))
        while self.protocol.closing is None and not self.eof:
            data = await self.receive()
            if not data:
                self.eof = True
                break
            self.protocol.receive(data)
