"""Subscriber processes: each hosts many lean WebSocket client connections on one uvloop loop.

They count only what they verified: every connection walks its byte stream frame by frame and
checks each record's ``seq`` against the last one of its stream (``bench.verify``: one header
decode and one regular expression search per frame, no copy). A violation is reported with the
stats and fails the benchmark. In latency mode the ``exchange_time`` stamp of each record is
compared with the wall clock at the moment the bytes were handed over by the kernel.

These processes share the 2 cores with the server under test, so whatever they take while a
server delivers shows up in every server's tail latency. Hence uvloop rather than the standard
loop (at N = 100 and 1,000 msg/s: ~78% of a core on the standard loop, ~56% on uvloop, when
they only counted), and, in latency mode, the check deferred: a read then only keeps its bytes
and its arrival time, and the frames are walked when the harness next asks for the counts
(``stats``: after the feeder's last send) or when ``DEFER_LIMIT`` bytes are waiting. Walking
every frame at once on arrival took the two processes from ~56% to ~100% of a core at
N = 100 and 1,000 msg/s, and the p99 of every server with it (docs/performance.md).

Driven over a ``multiprocessing`` pipe by ``bench.run``; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from array import array
from multiprocessing.connection import Connection
from typing import Any, cast

import uvloop

from bench import wsframes
from bench.procs import die_with_parent
from bench.verify import FrameChecker

RECEIVE_BUFFER = 256 * 1024
# In latency mode, the bytes a process keeps unchecked before it checks them on arrival again.
DEFER_LIMIT = 256 * 1024 * 1024


class Shared:
    """Per-process totals, kept by all connections of the process."""

    def __init__(self) -> None:
        self.count = 0
        self.last_recv_ns = 0
        self.latency_on = False
        self.samples = array("q")
        self.closed = 0
        self.violations: list[str] = []
        self.deferred_bytes = 0  # latency mode: received, not yet checked (all connections)
        # One receive buffer for all connections: a read is consumed before the next one.
        self.buffer = bytearray(RECEIVE_BUFFER)
        self.view = memoryview(self.buffer)


class Subscriber(asyncio.BufferedProtocol):
    """One connection. A ``BufferedProtocol`` reads into one preallocated buffer per process:
    a plain ``Protocol`` gets a fresh 256 KiB ``bytes`` per read, which glibc serves with an
    ``mmap``/``mremap``/``munmap`` per read until its dynamic threshold has risen. That cost
    (measured: as much system time as the whole user time of the process) depended on what
    the process had done before, so it loaded whichever server was measured first."""

    def __init__(self, shared: Shared, host: str, port: int, path: str, request: bytes | None):
        self.shared = shared
        self.handshake, self.expected_accept = wsframes.client_handshake(host, port, path)
        self.request = request
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.streaming = False
        self.checker = FrameChecker()
        self.deferred: list[tuple[int, bytes | bytearray]] = []  # latency mode: (arrival ns, chunk)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport.write(self.handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.shared.view

    def buffer_updated(self, nbytes: int) -> None:
        chunk = self.shared.buffer[:nbytes]
        if not self.streaming:
            self.head += chunk
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, chunk = self.head[:end], self.head[end + 4 :]
            self.head = b""
            if not head.startswith(b"HTTP/1.1 101") or self.expected_accept not in head:
                self.ready.set_exception(ConnectionError(head[:200].decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self.streaming = True
            if self.request is not None:
                assert self.transport is not None
                self.transport.write(wsframes.client_frame(self.request))
            self.ready.set_result(None)
            if not chunk:
                return
        shared = self.shared
        if shared.latency_on and shared.deferred_bytes < DEFER_LIMIT:
            self.deferred.append((time.time_ns(), chunk))
            shared.deferred_bytes += len(chunk)
            return
        self.check_deferred()
        if self.check(chunk, time.time_ns() if shared.latency_on else None):
            shared.last_recv_ns = time.monotonic_ns()

    def check(self, chunk: bytes | bytearray, arrived_ns: int | None = None) -> int:
        """Walk ``chunk``'s frames (``arrived_ns``: take each record's latency) and count
        them; returns how many records it held."""
        shared, checker = self.shared, self.checker
        bad = len(checker.violations)
        if arrived_ns is None:
            n = checker.feed(chunk)
        else:
            n = checker.feed(chunk, arrived_ns, shared.samples)
        shared.count += n
        if len(checker.violations) > bad and len(shared.violations) < 5:
            shared.violations.extend(checker.violations[bad:])
        return n

    def check_deferred(self) -> None:
        """Check what latency mode kept, in the order it arrived."""
        if self.deferred:
            deferred, self.deferred = self.deferred, []
            for arrived_ns, chunk in deferred:
                self.check(chunk, arrived_ns)
                self.shared.deferred_bytes -= len(chunk)

    @property
    def count(self) -> int:
        return self.checker.count


class SnapshotProbe(asyncio.Protocol):
    """One late joiner: when its handshake completed and when the last byte of its first book
    snapshot arrived (``perf_counter_ns``)."""

    def __init__(self, host: str, port: int, path: str, request: bytes | None) -> None:
        self.handshake, _ = wsframes.client_handshake(host, port, path)
        self.request = request
        self.buf = bytearray()
        self.streaming = False
        self.pos = 0
        self.handshake_done = 0
        self.done: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport.write(self.handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before the snapshot: {exc}"))

    def data_received(self, chunk: bytes) -> None:
        self.buf += chunk
        if not self.streaming:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.done.set_exception(ConnectionError(bytes(self.buf[:200]).decode()))
                return
            del self.buf[: end + 4]
            self.handshake_done = time.perf_counter_ns()
            self.streaming = True
            if self.request is not None:
                self.transport.write(wsframes.client_frame(self.request))
        while (parsed := wsframes.parse_frame(self.buf, self.pos)) is not None:
            _, payload, self.pos = parsed
            if b"book_snapshot" in payload and not self.done.done():
                self.done.set_result((time.perf_counter_ns(), len(payload)))
        del self.buf[: self.pos]
        self.pos = 0


class Host:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.shared = Shared()
        self.subs: list[Subscriber] = []
        self.stopping = asyncio.get_running_loop().create_future()

    async def connect(
        self, host: str, port: int, path: str, request: bytes | None, n: int, limit: float
    ) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(64)  # the listen backlog of the servers is not infinite
        errors: list[str] = []

        async def one() -> None:
            async with sem:
                sub = Subscriber(self.shared, host, port, path, request)
                try:
                    await loop.create_connection(lambda: sub, host, port)
                    await sub.ready
                    self.subs.append(sub)
                except (OSError, ConnectionError) as exc:
                    errors.append(repr(exc))

        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*(one() for _ in range(n)))
        except TimeoutError:
            errors.append(f"timeout after {limit}s")
        return ("connected", len(self.subs), errors[:3])

    def check_deferred(self) -> None:
        for sub in self.subs:
            sub.check_deferred()

    def stats(self) -> tuple[Any, ...]:
        self.check_deferred()
        counts = [s.count for s in self.subs]
        return (
            "stats",
            self.shared.count,
            self.shared.last_recv_ns,
            min(counts, default=0),
            len(self.subs) - self.shared.closed,
            self.shared.violations[:5],
        )

    async def probe(
        self, host: str, port: int, path: str, request: bytes | None, limit: float
    ) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        probe = SnapshotProbe(host, port, path, request)
        t0 = time.perf_counter_ns()
        transport = None
        try:
            async with asyncio.timeout(limit):
                transport, _ = await loop.create_connection(lambda: probe, host, port)
                t1, size = await probe.done
            return ("probe", t1 - t0, size, t1 - probe.handshake_done)
        except (OSError, ConnectionError, TimeoutError) as exc:
            return ("probe_failed", repr(exc))
        finally:
            if transport is not None:
                transport.close()

    def close_all(self) -> tuple[Any, ...]:
        for sub in self.subs:
            if sub.transport is not None:
                sub.transport.close()
        self.subs.clear()
        self.shared = Shared()
        return ("closed",)

    async def handle(self, command: tuple[Any, ...]) -> None:
        op = command[0]
        reply: tuple[Any, ...]
        if op == "connect":
            reply = await self.connect(*command[1:])
        elif op == "stats":
            reply = self.stats()
        elif op == "latency":
            if command[1]:
                self.shared.samples = array("q")
                self.shared.latency_on = True
                reply = ("latency_on",)
            else:
                self.check_deferred()
                self.shared.latency_on = False
                reply = ("samples", self.shared.samples.tobytes())
        elif op == "probe":
            reply = await self.probe(*command[1:])
        elif op == "close_all":
            reply = self.close_all()
            await asyncio.sleep(0.05)  # let the transports finish closing
        elif op == "stop":
            self.close_all()
            self.stopping.set_result(None)
            return
        else:
            reply = ("error", f"unknown command {op!r}")
        self.conn.send(reply)


async def _main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    host = Host(conn)
    tasks: set[asyncio.Task[None]] = set()

    def start(command: tuple[Any, ...] | None) -> None:
        if command is None:
            if not host.stopping.done():
                host.stopping.set_result(None)
            return
        task = loop.create_task(host.handle(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def read_commands() -> None:
        # A blocking reader thread rather than ``loop.add_reader``: uvloop would make the pipe
        # non-blocking, and the replies are written to it with plain blocking ``send``.
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                command = None
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(start, command)
            if command is None or command[0] == "stop":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    await host.stopping
    for task in tasks:
        task.cancel()


def subscriber_main(conn: Connection) -> None:
    die_with_parent()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_main(conn))
