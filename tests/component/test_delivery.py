"""The fast send path: frames byte for byte as wsproto builds them, the shared write lock, the
partial-write hand-over, the adoption of trio-websocket connections, and over real sockets:
exact frames in order across backlogs and coalescing, pings and pongs interleaved with data at
frame boundaries, close codes."""

from __future__ import annotations

import base64
import inspect
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket
from websockets.exceptions import ConnectionClosed

import gateway.io.socket_writer as socket_writer
from bench.downstream_model import Model
from gateway.config import ServerConfig
from gateway.contract.protocol import CLOSE_GOING_AWAY, CLOSE_SLOW, Encoding, Error, Pong
from gateway.fanout.hub import Hub
from gateway.fanout.outbox import OutFrame
from gateway.fanout.wsframe import OP_BINARY, OP_TEXT
from gateway.io.delivery import Delivery, Flusher
from gateway.io.server import Server
from gateway.io.socket_writer import FAST_PATH_AVAILABLE, SocketWriter, WriterLock, adopt
from tests.support.clients import in_thread, open_client, read_until, recv_json
from tests.support.fake_feed import EPOCH, FakeFeed

TIMEOUT = 30


# -- trio-websocket's private parts ----------------------------------------------------------


def test_installed_trio_websocket_is_one_the_fast_path_was_tested_with() -> None:
    assert FAST_PATH_AVAILABLE, trio_websocket.__version__
    # What adopt relies on: every write of trio-websocket goes through _send, which writes to
    # _stream under _stream_lock. If an upgrade changes that, this fails before production does.
    source = inspect.getsource(trio_websocket.WebSocketConnection._send)
    assert "async with self._stream_lock" in source
    assert "self._stream.send_all" in source
    impl = inspect.getsource(trio_websocket.WebSocketConnection)
    assert impl.count("self._stream.send_all") == 1
    assert impl.count("async with self._stream_lock") == 1
    # The writers read _close_reason for ``closed`` (no call per delivery).
    closed = trio_websocket.WebSocketConnection.closed
    assert isinstance(closed, property) and closed.fget is not None
    assert inspect.getsource(closed.fget).strip().endswith("return self._close_reason")


class _FakeWs:
    def __init__(self, stream: trio.abc.Stream, lock: Any) -> None:
        self._stream = stream
        self._stream_lock = lock
        self._close_reason: object = None

    @property
    def closed(self) -> object:
        return self._close_reason


async def test_adopt_waits_for_writes_under_way_on_the_old_lock() -> None:
    a, b = trio.socket.socketpair()
    old = trio.StrictFIFOLock()
    ws = _FakeWs(trio.SocketStream(a), old)
    order: list[str] = []

    async def old_writer(task_status: trio.TaskStatus[None]) -> None:
        async with old:
            task_status.started()
            await trio.sleep(0.01)
            order.append("old write done")

    async with trio.open_nursery() as nursery:
        await nursery.start(old_writer)
        wire = await adopt(ws)
        order.append("adopted")
    assert order == ["old write done", "adopted"]
    assert wire is not None and isinstance(ws._stream_lock, WriterLock)
    assert ws._stream_lock is wire.lock and not wire.lock.held
    a.close()
    b.close()


async def test_adopt_refuses_streams_it_cannot_write_to_directly() -> None:
    left, _ = trio.testing.memory_stream_pair()
    assert await adopt(_FakeWs(left, trio.StrictFIFOLock())) is None


# -- the lock ----------------------------------------------------------------------------------


async def test_wire_lock_hands_over_in_fifo_order_and_survives_cancelled_waiters() -> None:
    lock = WriterLock()
    assert lock.try_acquire() and not lock.try_acquire()
    got: list[int] = []

    async def waiter(i: int) -> None:
        async with lock:
            got.append(i)
            await trio.lowlevel.checkpoint()

    scopes: list[trio.CancelScope] = []

    async def cancelled_waiter() -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            async with lock:
                got.append(99)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(waiter, i)
            await trio.testing.wait_all_tasks_blocked()
            if i == 0:
                nursery.start_soon(cancelled_waiter)
                await trio.testing.wait_all_tasks_blocked()
        assert lock.waiting == 4
        scopes[0].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert lock.waiting == 3
        with trio.move_on_after(0):  # a cancelled acquire does not take the lock
            await lock.acquire()
        # The synchronous data path cannot barge in while the lock is handed over.
        lock.release()
        assert lock.held and not lock.try_acquire()
    assert got == [0, 1, 2]
    assert not lock.held


# -- the wire over a socket pair ----------------------------------------------------------------


async def _wire_pair(sndbuf: int | None = None) -> tuple[SocketWriter, socket.socket]:
    a, b = socket.socketpair()
    if sndbuf is not None:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    ts = trio.socket.from_stdlib_socket(a)
    ws = _FakeWs(trio.SocketStream(ts), trio.StrictFIFOLock())
    wire = await adopt(ws)
    assert wire is not None
    return wire, b


def _read_all(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(10)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk
        out += chunk
    return out


async def test_partial_write_leaves_the_tail_to_the_writer_holding_the_lock() -> None:
    wire, peer = await _wire_pair(sndbuf=4096)
    data = os.urandom(1_000_000)
    assert wire.writable_now()
    assert wire.write_now(data) is False  # the socket cannot take a megabyte at once
    assert wire.mid_frame and wire.lock.held and not wire.writable_now()
    written = len(data) - len(wire.tail or b"")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wire.send)
        received = await trio.to_thread.run_sync(_read_all, peer, len(data))
    assert received == data and written > 0
    assert not wire.mid_frame
    wire.lock.release()
    assert wire.writable_now()
    assert wire.write_now(b"small") and _read_all(peer, 5) == b"small"
    peer.close()


async def test_write_to_a_closed_peer_is_reported_to_the_writer() -> None:
    wire, peer = await _wire_pair()
    peer.close()
    for _ in range(100):
        if not wire.write_now(b"x" * 65536):
            break
    assert wire.error is not None
    with pytest.raises(trio.BrokenResourceError):
        wire.take_error()


async def test_abort_closes_the_socket_and_passes_the_lock_on() -> None:
    wire, peer = await _wire_pair(sndbuf=4096)
    assert wire.write_now(os.urandom(500_000)) is False
    got_lock = trio.Event()

    async def control_frame() -> None:  # what trio-websocket's _send does
        async with wire.lock:
            got_lock.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(control_frame)
        await trio.testing.wait_all_tasks_blocked()
        assert not got_lock.is_set()
        wire.abort()
    assert got_lock.is_set() and wire.sock.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await wire.send(b"more")
    peer.close()


async def test_a_publish_is_written_before_it_returns() -> None:
    """``Hub.after_publish`` is the flusher's round: an upstream read's records are on the
    subscribers' sockets when ``publish`` returns, no task switch between; an answer to a
    request (a cold path) waits for the flusher task's round."""
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    flusher = Flusher()
    flusher.attach(hub)
    rounds: list[int] = []
    flusher.after = lambda: rounds.append(flusher.sent_bytes)
    sub = hub.connect(Encoding.JSON)
    hub.subscribe(sub, [feed.stream("trades")])
    wire, peer = await _wire_pair(sndbuf=65536)
    delivery = Delivery(
        sub, writer=wire, ws=None, flusher=flusher, close_timeout=5.0, on_sent=lambda n: None
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        nursery.start_soon(delivery.run, lambda *why: None)
        await trio.testing.wait_all_tasks_blocked()
        assert not sub.queue  # hello and subscribed, written by the flusher task's round
        before = len(rounds)
        feed.publish(feed.trade())
        assert not sub.queue and len(rounds) == before + 1  # written inside ``publish``
        hub.reply(sub, Pong(id=3))
        assert len(sub.queue) == 1  # queued; the flusher task writes it
        await trio.testing.wait_all_tasks_blocked()
        assert not sub.queue and len(rounds) == before + 2
        nursery.cancel_scope.cancel()
    frames = [json.loads(await trio.to_thread.run_sync(_read_frame, peer)) for _ in range(4)]
    assert [f["type"] for f in frames] == ["hello", "subscribed", "trade", "pong"]
    peer.close()


async def test_flusher_inline_write_hands_a_partial_frame_to_the_writer_task() -> None:
    """The flusher's inline case (one frame queued) over a socket that takes only part of it:
    the rest goes to the writer task, a second entry of the same connection in ``pending`` is
    harmless, and the peer receives every frame whole and in order."""
    hub = Hub(EPOCH)
    flusher = Flusher()
    flusher.attach(hub)
    sub = hub.connect(Encoding.JSON)
    wire, peer = await _wire_pair(sndbuf=4096)
    delivery = Delivery(
        sub, writer=wire, ws=None, flusher=flusher, close_timeout=5.0, on_sent=lambda n: None
    )
    ended: list[tuple[str, int, str]] = []
    big = Error(code="bad_request", message="x" * 300_000)
    small = Pong(id=7)
    expected = [OutFrame(m, None, 0).framed(Encoding.JSON) for m in (big, small)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        nursery.start_soon(delivery.run, lambda *why: ended.append(why))
        await trio.testing.wait_all_tasks_blocked()
        assert not sub.queue  # the hello, queued by connect, was written
        head = await trio.to_thread.run_sync(_read_frame, peer)
        assert json.loads(head)["type"] == "hello"
        hub.reply(sub, big)
        flusher.pending.append(delivery)  # twice in one round
        await trio.testing.wait_all_tasks_blocked()
        assert wire.mid_frame  # the socket took part of it; the writer task holds the rest
        hub.reply(sub, small)
        got = await trio.to_thread.run_sync(_read_all, peer, sum(map(len, expected)))
        assert got == b"".join(expected)
        assert sub.queued_bytes == 0 and not wire.mid_frame
        hub.close(sub, CLOSE_GOING_AWAY, "bye")
        await trio.testing.wait_all_tasks_blocked()
        assert ended == [("shutdown", CLOSE_GOING_AWAY, "bye")]
        nursery.cancel_scope.cancel()
    peer.close()


async def test_the_records_of_one_publish_are_joined_into_one_write_even_when_cut_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several frames queued (one read of several messages): the round joins them into one
    write itself; a socket that takes only part of it leaves the rest to the writer task, and a
    backlog over one batch (``DEFAULT_BATCH_BYTES``) goes through ``Delivery.flush`` in
    batches. The peer gets every frame whole and in order."""
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    flusher = Flusher()
    flusher.attach(hub)
    sub = hub.connect(Encoding.JSON)
    hub.subscribe(sub, [feed.stream("trades")])
    wire, peer = await _wire_pair(sndbuf=4096)
    delivery = Delivery(
        sub, writer=wire, ws=None, flusher=flusher, close_timeout=5.0, on_sent=lambda n: None
    )
    writes: list[int] = []
    flushes: list[int] = []
    real_write, real_flush = os.write, Delivery.flush

    def counting_write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    def counting_flush(self: Delivery) -> None:
        flushes.append(len(self.sub.queue))
        real_flush(self)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        nursery.start_soon(delivery.run, lambda *why: None)
        await trio.testing.wait_all_tasks_blocked()
        head = [await trio.to_thread.run_sync(_read_frame, peer) for _ in range(2)]
        assert [json.loads(f)["type"] for f in head] == ["hello", "subscribed"]
        monkeypatch.setattr(os, "write", counting_write)
        monkeypatch.setattr(Delivery, "flush", counting_flush)
        feed.publish(*(feed.trade() for _ in range(300)))  # ~60 KB, a 4 KB socket buffer
        assert len(writes) == 1 and not flushes  # joined in the round, one write
        assert wire.mid_frame and not sub.queue  # cut short: the rest is the writer task's
        monkeypatch.setattr(os, "write", real_write)
        frames = [json.loads(await trio.to_thread.run_sync(_read_frame, peer)) for _ in range(300)]
        await trio.testing.wait_all_tasks_blocked()
        assert sub.queued_bytes == 0 and not wire.mid_frame  # the writer task finished it
        backlog = 1500  # ~310 KB in one publish, to a connection with nothing in flight
        feed.publish(*(feed.trade() for _ in range(backlog)))
        assert flushes == [backlog]  # over one batch: ``Delivery.flush``
        for _ in range(backlog):
            frames.append(json.loads(await trio.to_thread.run_sync(_read_frame, peer)))
        assert [f["seq"] for f in frames] == list(range(1, 301 + backlog))
        await trio.testing.wait_all_tasks_blocked()
        assert sub.queued_bytes == 0 and not wire.mid_frame
        nursery.cancel_scope.cancel()
    peer.close()


def _read_frame(sock: socket.socket) -> bytes:
    head = _read_all(sock, 2)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(_read_all(sock, 2), "big")
    elif n == 127:
        n = int.from_bytes(_read_all(sock, 8), "big")
    return _read_all(sock, n)


# -- over real sockets ------------------------------------------------------------------------


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[Server, Hub, str]]:
    fast = settings.pop("fast_path", True)
    close_timeout = settings.pop("close_timeout", 5.0)
    config = ServerConfig(host="127.0.0.1", port=0, **settings)
    hub = Hub.from_config(config, EPOCH)
    server = Server(hub, config, close_timeout=close_timeout, fast_path=fast)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server, hub, f"ws://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


class RawClient:
    """Just enough RFC 6455 to see the server's frames exactly as they come off the wire."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def connect(cls, port: int, path: str, rcvbuf: int | None = None) -> RawClient:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        key = base64.b64encode(os.urandom(16)).decode()
        await client.stream.send_all(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in client.buf:
            chunk = await client.stream.receive_some(65536)
            assert chunk
            client.buf += chunk
        head, _, rest = bytes(client.buf).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        client.buf = bytearray(rest)
        return client

    async def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        await self.stream.send_all(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        assert buf[0] & 0x80 and not buf[1] & 0x80  # final, unmasked: never fragmented
        n, i = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, i = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, i = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < i + n:
            return None
        frame = (buf[0] & 0x0F, bytes(buf[i : i + n]))
        del buf[: i + n]
        return frame

    async def frame(self, read_size: int = 65536, pause: float = 0.0) -> tuple[int, bytes]:
        while (frame := self._parse()) is None:
            if pause:
                await trio.sleep(pause)
            chunk = await self.stream.receive_some(read_size)
            assert chunk, "connection closed"
            self.buf += chunk
        return frame


async def test_exact_frames_in_order_across_backlog_coalescing_and_pings() -> None:
    """A client with a tiny receive window reads slowly while a large backlog is written: the
    bytes on the wire are exactly the hub's frames, in order, and the pings the server sends
    and the pong answering the client's ping come between frames, never inside one."""
    with trio.fail_after(TIMEOUT):
        async with serving(buffer_bytes=64 * 2**20, ping_interval=0.05, ping_timeout=30.0) as (
            server,
            hub,
            _,
        ):
            assert server.port is not None
            feed = FakeFeed(hub)
            feed.publish(feed.snapshot(levels=10))
            client = await RawClient.connect(server.port, "/v1/book/BTCUSD", rcvbuf=4096)
            first = [json.loads((await client.frame())[1]) for _ in range(3)]
            assert [m["type"] for m in first] == ["hello", "subscribed", "book_snapshot"]
            sub = max(hub.subscribers, key=lambda s: s.id)
            expected: list[bytes] = []
            # Many records per tick (coalesced into one write) and big ones (backlog).
            for _ in range(40):
                records = [feed.snapshot(levels=300, reason="reconnect")]
                records += [feed.update() for _ in range(50)]
                feed.publish(*records)
                await trio.lowlevel.checkpoint()
            expected = [f.payload(sub.encoding) for f in list(hub._streams["book.BTCUSD"].history)]
            expected = [p.encode() if isinstance(p, str) else p for p in expected[1:]]
            got: list[bytes] = []
            pings = pongs = 0
            pinged = False
            while len(got) < len(expected):
                opcode, payload = await client.frame(read_size=4096, pause=0.001)
                if opcode == 0x9:  # the server's ping: answer it
                    pings += 1
                    await client.send(0xA, payload)
                elif opcode == 0xA:
                    assert payload == b"are you there"
                    pongs += 1
                else:
                    assert opcode == OP_TEXT
                    got.append(payload)
                if len(got) == 10 and not pinged:
                    pinged = True
                    await client.send(0x9, b"are you there")
            assert got == expected
            assert pongs == 1 and pings >= 1
            seqs = [json.loads(p)["seq"] for p in got]
            assert seqs == list(range(2, 2 + len(seqs)))
            await client.stream.aclose()


async def test_one_write_per_subscriber_for_the_records_of_one_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    with trio.fail_after(TIMEOUT):
        async with serving() as (_, hub, url):
            feed = FakeFeed(hub)
            feed.publish(feed.trade())

            def client() -> list[Any]:
                with open_client(url + "/v1/trades/BTCUSD") as ws:
                    msgs = [recv_json(ws) for _ in range(3)]
                    trio.from_thread.run_sync(publish_burst)
                    return msgs + [recv_json(ws) for _ in range(20)]

            def publish_burst() -> None:
                monkeypatch.setattr(socket_writer.os, "write", counting_write)
                # One upstream read's records: one publish (``ingest.batch``).
                feed.publish(*(feed.trade() for _ in range(20)))

            msgs = await in_thread(client)
            assert [m["seq"] for m in msgs[2:]] == list(range(1, 22))
            assert len(writes) == 1  # twenty records, one write


async def test_fallback_path_still_serves_gap_free() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(fast_path=False) as (_, hub, url):
            feed = FakeFeed(hub)
            feed.publish(feed.snapshot())
            done = trio.Event()

            def client() -> Model:
                with open_client(url + "/v1/book/BTCUSD") as ws:
                    model = read_until(ws, Model(), lambda m: "book.BTCUSD" in m.expected)
                    trio.from_thread.run_sync(done.set)
                    return read_until(ws, model, lambda m: m.expected["book.BTCUSD"] == 202)

            result: list[Model] = []

            async def run() -> None:
                result.append(await in_thread(client))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await done.wait()
                for _ in range(200):
                    feed.publish(feed.update())
                    await trio.lowlevel.checkpoint()
            assert result[0].problems == []
            assert result[0].book("book.BTCUSD") == feed.book_levels()


async def test_overflow_before_anything_was_written_closes_cleanly_with_4008() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(buffer_bytes=8192, slow_policy="disconnect") as (_, hub, url):
            feed = FakeFeed(hub)
            feed.publish(feed.trade())
            ready = trio.Event()

            def client() -> tuple[list[Any], int, str]:
                msgs: list[Any] = []
                with open_client(url + "/v1/trades/BTCUSD") as ws:
                    msgs = [recv_json(ws) for _ in range(3)]
                    trio.from_thread.run_sync(ready.set)
                    with pytest.raises(ConnectionClosed) as info:
                        while True:
                            msgs.append(recv_json(ws))
                    assert info.value.rcvd is not None
                    return msgs, info.value.rcvd.code, info.value.rcvd.reason

            result: list[Any] = []

            async def run() -> None:
                result.append(await in_thread(client))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await ready.wait()
                feed.publish(*[feed.trade() for _ in range(100)])  # one tick, far over 8 KiB
            msgs, code, reason = result[0]
            assert (code, reason) == (CLOSE_SLOW, "slow subscriber: buffer overflow")
            assert [m["type"] for m in msgs] == ["hello", "subscribed", "trade"]


async def test_msgpack_frames_are_binary_and_identical_to_the_hub_payloads() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (server, hub, _):
            assert server.port is not None
            feed = FakeFeed(hub, "USDCUSD")
            client = await RawClient.connect(server.port, "/v1/price/USDCUSD?encoding=msgpack")
            opcode, hello = await client.frame()
            assert opcode == OP_BINARY and msgspec.msgpack.decode(hello)["type"] == "hello"
            feed.publish(*[feed.price(f"1.000{i}") for i in range(5)])
            frames = [await client.frame() for _ in range(6)]
            assert all(op == OP_BINARY for op, _ in frames)
            decoded = [msgspec.msgpack.decode(p) for _, p in frames]
            assert decoded[0]["type"] == "subscribed"
            assert [m["seq"] for m in decoded[1:]] == [1, 2, 3, 4, 5]
            await client.stream.aclose()
