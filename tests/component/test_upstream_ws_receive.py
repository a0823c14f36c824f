"""``UpstreamWebSocket.receive`` on a plain TCP stream (one ``recv`` per wakeup) answers as
trio's ``SocketStream.receive_some`` does: the data, ``b""`` at EOF, ``BrokenResourceError``
on a reset, ``ClosedResourceError`` once closed, and it stays a cancellation point. With a
coalesce window, reads come at least that far apart, also on the path of other streams (TLS:
``receive_some``). Real loopback TCP connections; the window's time is trio's ``MockClock``."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from gateway.ingest.wsclient import ClientProtocol
from gateway.io.upstream_ws import BACKLOG_BYTES, RECEIVE_BUFFER_SIZE, UpstreamWebSocket


@asynccontextmanager
async def _connected(
    window: float = 0.0,
) -> AsyncIterator[tuple[UpstreamWebSocket, trio.SocketStream]]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        assert isinstance(server, trio.SocketStream)
        async with client, server:
            yield UpstreamWebSocket(client, ClientProtocol(1 << 20), coalesce_window=window), server


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


async def _interrupt_a_waiting_read(
    ws: UpstreamWebSocket,
    raises: type[BaseException],
    interrupt: Callable[[trio.Nursery], Awaitable[None]],
) -> None:
    """Start a read, let it wait, then ``interrupt``: the read must raise ``raises``."""
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            with pytest.raises(raises):
                await ws.receive()

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await interrupt(nursery)


async def _cancel(nursery: trio.Nursery) -> None:
    nursery.cancel_scope.cancel()


async def test_closed_under_the_reader_and_after() -> None:
    async with _connected() as (ws, _peer):
        # Closing the stream wakes the waiting reader.
        await _interrupt_a_waiting_read(ws, trio.ClosedResourceError, lambda _: ws.stream.aclose())
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


WINDOW = 0.002


async def _held_until(ws: UpstreamWebSocket, peer: trio.SocketStream, due: float) -> bytes:
    """Start a read, send two messages while it is held, and check it returns both, together,
    exactly when the clock reaches ``due``."""
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(await ws.receive())

        nursery.start_soon(read)
        await peer.send_all(b"b")
        await trio.testing.wait_all_tasks_blocked()
        await peer.send_all(b"c")
        clock.jump(due - trio.current_time() - 0.0001)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # still held, though both messages are there
        clock.jump(0.0001)
    assert trio.current_time() == due
    return got[0]


async def test_a_window_holds_a_read_that_follows_closely_and_reads_what_came_together(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with _connected(WINDOW) as (ws, peer):
        await peer.send_all(b"a")
        first = trio.current_time()
        assert await ws.receive() == b"a"
        assert trio.current_time() == first  # the first read is not held
        assert await _held_until(ws, peer, first + WINDOW) == b"bc"
        # Once more: the window counts from the last read.
        assert await _held_until(ws, peer, first + 2 * WINDOW) == b"bc"


async def test_a_window_holds_the_reads_of_any_stream(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The path of a TLS stream: not a plain socket, read through ``receive_some``.
    client, peer = trio.testing.memory_stream_pair()
    ws = UpstreamWebSocket(client, ClientProtocol(1 << 20), coalesce_window=WINDOW)
    assert ws._raw is None
    await peer.send_all(b"a")
    assert await ws.receive() == b"a"
    due = trio.current_time() + WINDOW
    mock_clock.autojump_threshold = 0  # the clock moves once every task waits
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.send_all, b"b")
        assert await ws.receive() == b"b"
    assert trio.current_time() == due


async def test_a_window_adds_nothing_to_messages_further_apart(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with _connected(WINDOW) as (ws, peer):
        await peer.send_all(b"a")
        assert await ws.receive() == b"a"
        mock_clock.jump(WINDOW)
        await peer.send_all(b"b")
        now = trio.current_time()
        assert await ws.receive() == b"b"
        assert trio.current_time() == now


async def test_a_window_does_not_hold_a_backlog(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0.5  # a held read would move the clock: a failure, no hang
    async with _connected(WINDOW) as (ws, peer):
        burst = b"x" * (RECEIVE_BUFFER_SIZE * 2 + 10)
        await peer.send_all(b"a")
        assert await ws.receive() == b"a"
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send_all, burst)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(WINDOW)  # the read after the message above is due
            got = b""
            while len(got) < len(burst):
                got += await ws.receive()  # full reads follow each other at once
        assert got == burst
        assert trio.current_time() == start + WINDOW


async def test_a_window_does_not_hold_the_read_after_a_large_one(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0.5  # a held read would move the clock: a failure, no hang
    async with _connected(WINDOW) as (ws, peer):
        start = trio.current_time()
        await peer.send_all(b"x" * BACKLOG_BYTES)
        assert len(await ws.receive()) == BACKLOG_BYTES
        await peer.send_all(b"a")
        assert await ws.receive() == b"a"
        assert trio.current_time() == start  # not held: the read before was a backlog
        await peer.send_all(b"b")
        assert await ws.receive() == b"b"
        assert trio.current_time() == start + WINDOW  # held: the read before was small


async def test_a_held_read_is_cancellable(mock_clock: trio.testing.MockClock) -> None:
    async with _connected(WINDOW) as (ws, peer):
        await peer.send_all(b"a")
        assert await ws.receive() == b"a"
        # Cancelled while it sleeps out the window.
        await _interrupt_a_waiting_read(ws, trio.Cancelled, _cancel)
        await peer.send_all(b"b")
        mock_clock.jump(WINDOW)
        assert await ws.receive() == b"b"  # nothing was lost to the cancelled read
