"""One open upstream WebSocket (I/O around the sans-IO ``ingest.wsclient.ClientProtocol``):
the stream, one writer at a time, pings and their pongs, and the closing handshake from this
side. Reading is the read loop's alone (``io.upstream_conn``).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Final

import trio

from gateway.fanout.wsframe import OP_PING
from gateway.ingest.wsclient import ClientProtocol, client_frame

__all__ = ["RECEIVE_BUFFER_SIZE", "UpstreamWebSocket"]

# One read: up to a few hundred Paxos messages, normalized and published as one batch.
RECEIVE_BUFFER_SIZE: Final = 65536


class UpstreamWebSocket:
    """One open upstream WebSocket (I/O around ``wsclient.ClientProtocol``): the stream, one
    writer at a time (the read loop's pongs and close replies, the keepalive's pings, the close
    handshake), and the pings waiting for their pongs. Reading is the read loop's alone."""

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
        self.stream = stream
        # A plain TCP stream is read from the standard-library socket under trio's (see
        # ``receive``); TLS goes through the stream.
        if isinstance(stream, trio.SocketStream):
            raw = getattr(stream.socket, "_sock", None)
        else:
            raw = None
        self._raw: socket.socket | None = raw if isinstance(raw, socket.socket) else None
        self._full = False  # the last read filled the buffer: more is probably waiting
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
        """
        raw = self._raw
        if raw is None:
            # bytes for the parser (SSLStream may hand out a bytearray).
            return bytes(await self.stream.receive_some(RECEIVE_BUFFER_SIZE))
        if raw.fileno() < 0:  # closed under us: what trio's own recv would say
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this socket was already closed")
        if self._full:
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(raw)
        while True:
            try:
                data = raw.recv(RECEIVE_BUFFER_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(raw)
                continue
            except OSError as exc:
                # As trio's SocketStream translates them.
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    raise trio.ClosedResourceError("this socket was already closed") from None
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            self._full = len(data) == RECEIVE_BUFFER_SIZE
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
