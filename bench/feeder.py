"""The upstream the servers under test connect to: a replaying, rate-controlled WebSocket server.

It plays the simulator's part with data fixed in advance (``bench.data``), so that every run
and every server sees the same events: Paxos execution messages for the gateway, the gateway's
encoding of the same trades for the peers. It runs in a process of its own and is driven over a
``multiprocessing`` pipe by ``bench.run``:

* ``rate``: send frames at a fixed rate, each stamped with its wall-clock send time (the
  ``executed_at`` of a Paxos execution, the ``exchange_time`` of a record) for latency;
* ``burst``: send frames as fast as the socket takes them (TCP back-pressure only);
* ``payload``: send one given message (a book snapshot).

Every command is bounded by its count and by a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from bench import data, wsframes
from bench.procs import die_with_parent


class _Upstream:
    """The latest accepted connection; a reader thread answers pings and closes."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.accepted = 0

    def adopt(self, sock: socket.socket) -> None:
        with self.lock:
            old, self.sock = self.sock, sock
            self.accepted += 1
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()
        self.connected.set()
        threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        buf = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            pos = 0
            while (parsed := wsframes.parse_frame(buf, pos)) is not None:
                opcode, payload, pos = parsed
                if opcode == wsframes.OP_PING:
                    self.send(wsframes.server_frame(payload, wsframes.OP_PONG), sock)
                elif opcode == wsframes.OP_CLOSE:
                    self.send(wsframes.server_frame(payload[:2], wsframes.OP_CLOSE), sock)
            del buf[:pos]
        with self.lock:
            if self.sock is sock:
                self.sock = None
                self.connected.clear()
        with contextlib.suppress(OSError):
            sock.close()

    def send(self, chunk: bytes | bytearray, sock: socket.socket | None = None) -> bool:
        with self.lock:
            target = sock if sock is not None else self.sock
            if target is None:
                return False
            try:
                target.sendall(chunk)
            except OSError:
                return False
        return True


def _accept_loop(listener: socket.socket, upstream: _Upstream) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        try:
            sock.settimeout(10.0)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed during handshake")
                request += chunk
            sock.sendall(wsframes.server_handshake_response(request))
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ValueError):
            sock.close()
            continue
        upstream.adopt(sock)


class Feeder:
    def __init__(self, kind: str, pool_size: int) -> None:
        self.kind = kind
        payloads = data.trades(kind, pool_size)
        self.frames: list[bytearray] = []
        self.slots: list[int] = []
        for payload in payloads:
            frame = bytearray(wsframes.server_frame(payload))
            offset, _ = data.time_slot(payload, kind)
            self.frames.append(frame)
            self.slots.append(len(frame) - len(payload) + offset)
        self.upstream = _Upstream()

    def _stamp(self, i: int) -> bytearray:
        frame = self.frames[i]
        now = time.time_ns()
        stamp = data.rfc3339_ns(now).encode() if self.kind == "paxos" else str(now).encode()
        slot = self.slots[i]
        frame[slot : slot + len(stamp)] = stamp
        return frame

    def rate(self, start: int, count: int, rate: float, max_seconds: float) -> tuple[Any, ...]:
        start = max(0, start)
        count = min(count, len(self.frames) - start)
        t0 = time.monotonic()
        deadline = t0 + max_seconds
        sent = 0
        first = time.monotonic_ns()
        for k in range(count):
            due = t0 + k / rate
            now = time.monotonic()
            if now > deadline:
                break
            if due > now:
                time.sleep(due - now)
            if not self.upstream.send(self._stamp(start + k)):
                break
            sent += 1
        return ("sent", sent, first, time.monotonic_ns())

    def burst(self, start: int, count: int, max_seconds: float) -> tuple[Any, ...]:
        count = min(count, len(self.frames) - start)
        deadline = time.monotonic() + max_seconds
        first = time.monotonic_ns()
        sent = 0
        step = 256
        for k in range(0, count, step):
            if time.monotonic() > deadline:
                break
            chunk = b"".join(self.frames[start + k : start + min(k + step, count)])
            if not self.upstream.send(chunk):
                break
            sent += min(step, count - k)
        return ("sent", sent, first, time.monotonic_ns())


def feeder_main(conn: Connection, kind: str, pool_size: int) -> None:
    """Process entry point: report the port, then obey commands until ``stop``."""
    die_with_parent()
    feeder = Feeder(kind, pool_size)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=_accept_loop, args=(listener, feeder.upstream), daemon=True).start()
    conn.send(("port", listener.getsockname()[1]))
    while True:
        command = conn.recv()
        op = command[0]
        if op == "stop":
            break
        if op == "wait_client":
            ok = feeder.upstream.connected.wait(command[1])
            conn.send(("connected", ok, feeder.upstream.accepted))
        elif op == "drop_client":
            with feeder.upstream.lock:
                sock, feeder.upstream.sock = feeder.upstream.sock, None
                feeder.upstream.connected.clear()
            if sock is not None:
                with contextlib.suppress(OSError):
                    # shutdown first: a bare close() from this thread neither wakes the reader
                    # thread's recv nor sends the FIN, so the server would never notice.
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            conn.send(("dropped",))
        elif op == "rate":
            conn.send(feeder.rate(*command[1:]))
        elif op == "burst":
            conn.send(feeder.burst(*command[1:]))
        elif op == "payload":
            first = time.monotonic_ns()
            ok = feeder.upstream.send(wsframes.server_frame(command[1]))
            conn.send(("sent", int(ok), first, time.monotonic_ns()))
        else:
            conn.send(("error", f"unknown command {op!r}"))
    listener.close()
