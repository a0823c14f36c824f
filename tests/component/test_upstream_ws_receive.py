"""``UpstreamWebSocket.receive`` on a plain TCP stream (one ``recv`` per wakeup) answers as
trio's ``SocketStream.receive_some`` does: the data, ``b""`` at EOF, ``BrokenResourceError``
on a reset, ``ClosedResourceError`` once closed, and it stays a cancellation point. Real
loopback TCP connections, no mocks."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from gateway.ingest.wsclient import ClientProtocol
from gateway.io.upstream_ws import RECEIVE_BUFFER_SIZE, UpstreamWebSocket


@asynccontextmanager
async def _connected() -> AsyncIterator[tuple[UpstreamWebSocket, trio.SocketStream]]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        assert isinstance(server, trio.SocketStream)
        async with client, server:
            yield UpstreamWebSocket(client, ClientProtocol(1 << 20)), server


async def test_reads_what_arrives_then_eof() -> None:
    async with _connected() as (ws, peer):
        assert ws._raw is not None  # the one-recv path is the one under test
        await peer.send_all(b"first")
        assert await ws.receive() == b"first"
        burst = b"x" * (RECEIVE_BUFFER_SIZE * 2 + 10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send_all, burst)
            got = b""
            while len(got) < len(burst):
                got += await ws.receive()  # full reads, then the rest after a wait
        assert got == burst
        await peer.send_eof()
        assert await ws.receive() == b""


async def test_a_reset_is_a_broken_resource() -> None:
    async with _connected() as (ws, peer):
        # SO_LINGER 0: close() sends a RST, the reader's recv fails with ECONNRESET.
        peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.send_all(b"last")
        peer.socket.close()
        with pytest.raises(trio.BrokenResourceError, match="socket connection broken"):
            while await ws.receive():
                pass


async def test_closed_under_the_reader_and_after() -> None:
    async with _connected() as (ws, _peer):
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await ws.receive()

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await ws.stream.aclose()  # wakes the waiting reader
        with pytest.raises(trio.ClosedResourceError):
            await ws.receive()


async def test_a_waiting_receive_is_cancellable() -> None:
    async with _connected() as (ws, _peer):
        cancelled = False
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal cancelled
                try:
                    await ws.receive()
                except trio.Cancelled:
                    cancelled = True
                    raise

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert cancelled
