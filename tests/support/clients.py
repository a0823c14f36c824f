"""Test clients of the subscriber server: the ``websockets`` sync client run in trio worker
threads, an asyncio loop in a thread (for one asyncio client beside the gateway), and a
hand-made raw-socket client for peers that misbehave below the WebSocket layer. (The many
checking subscribers of the end-to-end rig run in worker processes: ``client_workers``.)
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.sync.client import ClientConnection, connect

from bench.downstream_model import Model


def open_client(url: str, **kwargs: Any) -> ClientConnection:
    # max_queue=None: with flow control the websockets client stops reading when it holds
    # unread messages, and then waits in vain for the close handshake when leaving ``with``.
    kwargs.setdefault("open_timeout", 10)
    client: ClientConnection = connect(url, max_queue=None, close_timeout=5, **kwargs)
    return client


def recv_json(ws: ClientConnection, timeout: float = 10) -> Any:
    data = ws.recv(timeout=timeout)
    return json.loads(data)


def read_until(
    ws: ClientConnection, model: Model, done: Callable[[Model], bool], limit: int = 1_000_000
) -> Model:
    for _ in range(limit):
        if done(model):
            return model
        model.feed(recv_json(ws))
    raise AssertionError("message limit reached")


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


class AsyncioClients:
    """An asyncio event loop in a thread, driven from trio through futures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)

        def wait() -> Any:
            try:
                return future.result(timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise

        return await trio.to_thread.run_sync(wait)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class RawSubscriber:
    """A WebSocket client made by hand on a raw trio socket, for clients that misbehave below
    the WebSocket layer: one that never reads (nor answers pings) and one that vanishes
    without a closing handshake (FIN or RST)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    @classmethod
    async def connect(
        cls,
        base_url: str,
        path: str,
        *,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawSubscriber:
        parts = urlsplit(base_url)
        assert parts.hostname is not None and parts.port is not None
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((parts.hostname, parts.port))
        stream = trio.SocketStream(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:  # bounded by the caller's fail_after
            chunk = await stream.receive_some(1)  # byte by byte: leave frames in the socket
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head[:80]!r}")
        return cls(stream)

    async def send_text(self, text: str) -> None:
        """One masked text frame (clients must mask)."""
        await self.send_frame(0x1, text.encode())

    async def send_frame(
        self, opcode: int, payload: bytes, *, masked: bool = True, rsv: int = 0, fin: bool = True
    ) -> None:
        """One frame exactly as asked, broken ones included: any opcode, RSV bits (0-7),
        unmasked, any payload length."""
        first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0x0F
        mask_bit = 0x80 if masked else 0
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", first, mask_bit | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, n)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, n)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            header += mask
        await self.stream.send_all(header + payload)

    async def read_until(self, needle: bytes, limit: int = 16 * 1024 * 1024) -> bytes:
        """Raw bytes from the server until ``needle`` shows up in them (server frames are
        unmasked: a JSON message's text appears verbatim). Bounded by ``limit`` bytes."""
        data = b""
        while needle not in data:
            if len(data) > limit:
                raise AssertionError(f"{needle!r} not within {limit} bytes")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError(f"closed before {needle!r}")
            data += chunk
        return data

    async def read_close(self, limit: int = 64 * 1024 * 1024) -> tuple[int, str] | None:
        """Read server frames until a close frame: its (code, reason); None if the TCP
        connection ends first. Bounded by ``limit`` bytes (and the caller's fail_after)."""
        data = b""
        i = 0
        while len(data) < limit:
            while True:  # parse what is there
                if len(data) - i < 2:
                    break
                opcode, length, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
                if length == 126:
                    if len(data) - j < 2:
                        break
                    length, j = struct.unpack("!H", data[j : j + 2])[0], j + 2
                elif length == 127:
                    if len(data) - j < 8:
                        break
                    length, j = struct.unpack("!Q", data[j : j + 8])[0], j + 8
                if len(data) - j < length:
                    break
                if opcode == 0x8:
                    body = data[j : j + length]
                    code = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else 1005
                    return code, body[2:].decode("utf-8", "replace")
                i = j + length
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not chunk:
                return None
            data += chunk
        raise AssertionError("no close frame within the byte limit")

    async def vanish(self, *, reset: bool) -> None:
        """Close the socket without a WebSocket close: FIN, or RST if ``reset``."""
        if reset:
            self.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        await trio.aclose_forcefully(self.stream)


async def collect(
    url: str, sink: list[dict[str, Any]], *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """A trio-websocket subscriber that appends every JSON message to ``sink`` until the
    gateway closes the connection (its shutdown ends the test); start it in a nursery."""
    async with open_websocket_url(url) as ws:
        task_status.started()
        while True:
            try:
                sink.append(json.loads(await ws.get_message()))
            except ConnectionClosed:
                return
