"""Where a delivery's CPU goes: ``python -m bench.delivery_cost [--n 100] [--rounds 3000]``.

The gateway's real delivery path (``Hub.publish`` → ``Flusher`` round → ``Delivery.flush`` →
``SocketWriter.write_now``), one record per round as at a paced live rate, run in this process
against four kinds of "subscriber", with the CPU time of this process per delivery. Records
are ``--interval`` apart (1 ms: 1,000 msg/s), so that the readers sleep between them as live
subscribers do (back to back, the kernel's share is smaller: the readers are awake already):

* ``gateway → /dev/null``: every write goes to ``/dev/null``, so what is left is the Python
  path (plus a trivial system call): **the Python share**;
* ``gateway → TCP``: N real loopback TCP connections, read by a child process: the Python share
  plus **the kernel's send** (on loopback the sender's system call also runs the receiving
  side's TCP processing and wakes the reader);
* ``floor → TCP``: the same connections, the same frame, one ``socket.send`` per connection in
  a plain loop and nothing else: the cheapest one-send-per-delivery Python can do;
* ``floor → /dev/null``: that loop against ``/dev/null``: the loop and the system call entry.

It runs the path without the upstream side: what one message costs the gateway before fan-out
(read, parse, normalize, encode, a scheduler round: per message, not per delivery) is in the
benchmark's N = 1 figures and in ``bench.ingest``. Bounded: ``rounds`` records per phase.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from multiprocessing import get_context
from multiprocessing.connection import Connection

import trio

from gateway.contract.protocol import Encoding
from gateway.contract.records import Trade
from gateway.fanout.hub import Hub
from gateway.io.delivery import Delivery, Flusher
from gateway.io.socket_writer import SocketWriter, WriterLock

STREAM = "trades.BTCUSD"


class _Ws:
    """What ``SocketWriter`` looks at of a trio-websocket connection: not closing."""

    _close_reason = None


class _DevNull:
    """A "socket" whose writes go to /dev/null."""

    def __init__(self) -> None:
        self.fd = os.open(os.devnull, os.O_WRONLY)

    def fileno(self) -> int:
        return self.fd


def _trade(seq: int) -> Trade:
    return Trade(
        stream=STREAM,
        seq=seq,
        epoch="1",
        receive_time="1700000000123456789",
        market="BTCUSD",
        price=Decimal("60000.25"),
        amount=Decimal("0.5"),
        match_number=f"B{seq:011d}",
        exchange_time="1700000000123456789",
    )


def _reader(conn: Connection, port: int, n: int) -> None:
    """Child process: connect ``n`` times, then read everything until told to stop."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    conn.send("connected")
    while not conn.poll(0):
        for key, _ in sel.select(0.05):
            with contextlib.suppress(BlockingIOError):
                key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
    for s in socks:
        s.close()


def _tcp(n: int) -> tuple[list[socket.socket], Callable[[], None]]:
    listener = socket.create_server(("127.0.0.1", 0))
    parent, child = get_context("spawn").Pipe()
    proc = get_context("spawn").Process(
        target=_reader, args=(child, listener.getsockname()[1], n), daemon=True
    )
    proc.start()
    socks = [listener.accept()[0] for _ in range(n)]
    assert parent.recv() == "connected"
    listener.close()
    for s in socks:
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def stop() -> None:
        parent.send("stop")
        proc.join(10)
        for s in socks:
            s.close()

    return socks, stop


def _ticker(sock: socket.socket, count: int, interval: float) -> None:
    """Child process: one byte every ``interval`` s, ``count`` times (the upstream's messages)."""
    start = time.monotonic()
    for k in range(count):
        delay = start + k * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.send(b"m")
    sock.close()


def _ticks(count: int, interval: float) -> tuple[socket.socket, Callable[[], None]]:
    """A socket that becomes readable ``count`` times, ``interval`` s apart, from another
    process: the server's wake-up per upstream message, as in the real path."""
    mine, theirs = socket.socketpair()
    proc = get_context("spawn").Process(target=_ticker, args=(theirs, count, interval), daemon=True)
    proc.start()
    theirs.close()

    def stop() -> None:
        proc.join(10)
        mine.close()

    return mine, stop


async def _gateway_path(
    sinks: list[object], rounds: int, interval: float, per_publish: int = 1
) -> float:
    """CPU seconds per delivery of the gateway's delivery path into ``sinks``, one record per
    wake-up of a trio socket read (as the upstream task publishes one read's records); back to
    back, ``per_publish`` records per publish (one read of several messages)."""
    hub = Hub("1")
    hub.declare_stream(STREAM)
    flusher = Flusher()
    flusher.attach(hub)
    for sink in sinks:
        sub = hub.connect(Encoding.JSON)
        hub.subscribe(sub, [STREAM])
        sock = trio.socket.from_stdlib_socket(sink) if isinstance(sink, socket.socket) else sink
        writer = SocketWriter(_Ws(), sock, WriterLock())  # type: ignore[arg-type]
        delivery = Delivery(
            sub, writer=writer, ws=None, flusher=flusher, close_timeout=1.0, on_sent=int
        )
        sub.on_ready = delivery.on_ready
        delivery.on_ready()  # hello and subscribed are queued already
        flusher.wake()
    k = per_publish
    records = [_trade(i + 1) for i in range((rounds + 20) * k)]
    warm = 20
    if not interval:  # back to back, no wake-ups: the per-delivery path alone
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher.run)
            for i in range(warm):
                hub.publish(records[i * k : (i + 1) * k])
                await trio.sleep(0.001)
            t0 = time.process_time()
            for i in range(warm, warm + rounds):
                # The flusher's round runs inside (``after_publish``).
                hub.publish(records[i * k : (i + 1) * k])
            t1 = time.process_time()
            nursery.cancel_scope.cancel()
    else:
        t0, t1 = await _ticked(hub, flusher, records, warm, interval)
    if flusher.sent_bytes < rounds * len(sinks) * 200:
        raise RuntimeError("writes found full sockets: fewer --rounds")
    return (t1 - t0) / (rounds * len(sinks))


async def _ticked(
    hub: Hub, flusher: Flusher, records: list[Trade], warm: int, interval: float
) -> tuple[float, float]:
    tick_sock, stop = _ticks(len(records), interval)
    tick = trio.socket.from_stdlib_socket(tick_sock)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher.run)
            t0 = 0.0
            done = 0
            while done < len(records):
                if done >= warm and not t0:
                    t0 = time.process_time()
                got = len(await tick.recv(64))
                if not got:
                    raise RuntimeError("the ticker stopped early")
                hub.publish(records[done : done + got])  # ticks that came together: one read
                done += got
            await trio.sleep(0.01)  # the last round
            t1 = time.process_time()
            nursery.cancel_scope.cancel()
    finally:
        stop()
    return t0, t1


def _floor(fds: list[int], rounds: int, interval: float) -> float:
    """The same wake-ups, then one ``os.write`` of a pre-built frame per connection."""
    frame = b"\x81\x7e\x00\xf0" + b"x" * 240
    write = os.write
    full = 0
    if not interval:
        t0 = time.process_time()
        for _ in range(rounds):
            for fd in fds:
                try:
                    write(fd, frame)
                except BlockingIOError:
                    full += 1
    else:
        warm = 20
        tick, stop = _ticks(rounds + warm, interval)
        recv = tick.recv
        t0 = 0.0
        done = 0
        try:
            while done < rounds + warm:
                if done >= warm and not t0:
                    t0 = time.process_time()
                got = len(recv(64))
                if not got:
                    raise RuntimeError("the ticker stopped early")
                done += got
                for _ in range(got):
                    for fd in fds:
                        try:
                            write(fd, frame)
                        except BlockingIOError:
                            full += 1
        finally:
            stop()
    cpu = time.process_time() - t0
    if full:
        raise RuntimeError(f"{full} writes found a full socket: fewer --rounds")
    return cpu / (rounds * len(fds))


def measure(n: int, rounds: int, interval: float) -> dict[str, float]:
    out: dict[str, float] = {}
    nulls = [_DevNull() for _ in range(n)]
    out["gateway → /dev/null"] = trio.run(_gateway_path, nulls, rounds, interval)
    out["floor → /dev/null"] = _floor([s.fd for s in nulls], rounds, interval)
    socks, stop = _tcp(n)
    try:
        out["gateway → TCP"] = trio.run(_gateway_path, socks, rounds, interval)
        time.sleep(0.2)
        out["floor → TCP"] = _floor([s.fileno() for s in socks], rounds, interval)
    finally:
        stop()
    return {k: v * 1e6 for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery_cost")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--interval", type=float, default=0.001, help="s between records (0: back to back)"
    )
    parser.add_argument(
        "--only",
        choices=("gateway", "floor"),
        help="run that path once into /dev/null and print nothing (for callgrind: the"
        " difference of two --n at the same --rounds is the instructions per delivery)",
    )
    parser.add_argument(
        "--per-publish",
        type=int,
        default=1,
        help="with --only gateway --interval 0: records per publish (a read of several"
        " messages, written to each subscriber in one write)",
    )
    args = parser.parse_args()
    if args.per_publish != 1 and (args.only != "gateway" or args.interval):
        parser.error("--per-publish goes with --only gateway --interval 0")
    if args.only:
        nulls = [_DevNull() for _ in range(args.n)]
        if args.only == "gateway":
            trio.run(_gateway_path, nulls, args.rounds, args.interval, args.per_publish)
        else:
            _floor([s.fd for s in nulls], args.rounds, args.interval)
        return
    runs = [measure(args.n, args.rounds, args.interval) for _ in range(args.repeat)]
    print(
        f"N={args.n}, {args.rounds} records {args.interval * 1e3:g} ms apart, median of"
        f" {args.repeat}; load {os.getloadavg()}"
    )
    print("| path | µs CPU per delivery (this process) |\n|---|---:|")
    for key in runs[0]:
        values = sorted(r[key] for r in runs)
        print(f"| {key} | {values[len(values) // 2]:.2f} |")


if __name__ == "__main__":
    main()
