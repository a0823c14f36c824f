"""One measurement of ``bench.run``: a server under test with N subscribers (memory, latency,
throughput: ``Bench.combo``), a late joiner's snapshot (``Bench.snapshot``), ingest alone
(``Bench.ingest``), and the helper processes they use (``Bench.start``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import data
from bench.feeder import feeder_main
from bench.harness import BenchError, Clients, Feeder, call, cpu_seconds
from bench.procs import Reaper, read_line
from bench.servers import ALL, ServerSpec
from bench.settings import (
    LATENCY_GRACE,
    LATENCY_RATE,
    SERVER_LIFETIME,
    WARMUP_BLOCK,
    WARMUP_MAX,
    Settings,
)
from bench.subscribers import subscriber_main

__all__ = ["Bench", "Combo", "percentile"]


@dataclass
class Combo:
    server: str
    n: int
    run: int
    connected: int = 0
    rss_idle: float = 0.0
    rss_connected: float = 0.0
    rss_per_sub: float = 0.0
    lat_p50: float | None = None
    lat_p99: float | None = None
    lat_p999: float | None = None
    lat_samples: int = 0
    lat_loss: float = 0.0
    deliveries: int = 0
    expected: int = 0
    seconds: float = 0.0
    deliveries_per_s: float = 0.0
    cpu_per_million: float | None = None
    server_cpu_util: float | None = None  # server CPU seconds / wall seconds of the burst
    harness_cpu_util: float | None = None  # the same for subscribers + feeder together
    lat_server_cpu: float | None = None  # the same two over the latency phase
    lat_harness_cpu: float | None = None
    errors: list[str] = field(default_factory=list)


def percentile(sorted_ns: list[int], expected: int, q: float) -> float | None:
    """The q-quantile in ms over ``expected`` samples, the missing ones counted as infinite.

    None when the quantile falls on a missing sample (the server could not keep up)."""
    if expected <= 0:
        return None
    k = max(0, round(q * (expected - 1)))
    return sorted_ns[k] / 1e6 if k < len(sorted_ns) else None


class Bench:
    def __init__(self, settings: Settings, out: Path, reaper: Reaper) -> None:
        self.s = settings
        self.out = out
        self.reaper = reaper
        self.ctx = mp.get_context("spawn")
        self.feeders: dict[str, Feeder] = {}
        self.clients = Clients([])
        self.cursor = 0  # next frame of the feeder pool
        self.harness: list[psutil.Process] = []  # feeders and subscriber processes
        self.log_dir = out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        kinds = {ALL[name].feed_kind for name in self.s.servers + self.s.op_servers}
        for kind in sorted(kinds):
            parent, child = self.ctx.Pipe()
            process = self.ctx.Process(
                target=feeder_main, args=(child, kind, self.s.pool_size), daemon=True
            )
            self.reaper.adopt(process)
            process.start()
            assert process.pid is not None
            self.harness.append(psutil.Process(process.pid))
            if not parent.poll(120.0):
                raise BenchError("feeder did not start")
            reply = parent.recv()
            if reply[0] != "port":
                raise BenchError(f"feeder: {reply!r}")
            self.feeders[kind] = Feeder(parent, int(reply[1]))
        conns = []
        for _ in range(self.s.client_procs):
            parent, child = self.ctx.Pipe()
            process = self.ctx.Process(target=subscriber_main, args=(child,), daemon=True)
            self.reaper.adopt(process)
            process.start()
            assert process.pid is not None
            self.harness.append(psutil.Process(process.pid))
            conns.append(parent)
        self.clients = Clients(conns)

    def start_server(
        self, spec: ServerSpec, upstream_path: str, tag: str
    ) -> tuple[subprocess.Popen[bytes], psutil.Process, int]:
        feeder = self.feeders[spec.feed_kind]
        call(feeder.conn, ("drop_client",), 10.0)
        log = (self.log_dir / f"{spec.name}-{tag}.log").open("wb")
        proc = self.reaper.popen(
            spec.command(feeder.url(upstream_path), SERVER_LIFETIME),
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        try:
            line = read_line(proc, 60.0)
            if not line.startswith("LISTENING "):
                raise BenchError(f"{spec.name}: unexpected first line {line!r}")
            port = int(line.split()[1])
            reply = call(feeder.conn, ("wait_client", 20.0), 30.0)
            if not reply[1]:
                raise BenchError(f"{spec.name}: never connected to its upstream")
        except Exception:
            self.reaper.stop(proc)
            raise
        return proc, psutil.Process(proc.pid), port

    def harness_cpu(self) -> float:
        """CPU seconds of the feeders and subscriber processes so far."""
        return sum(cpu_seconds(p) for p in self.harness)

    def call_feeder(self, kind: str, command: tuple[Any, ...], timeout: float) -> tuple[Any, ...]:
        return call(self.feeders[kind].conn, command, timeout)

    def feed(self, kind: str, command: tuple[Any, ...], timeout: float) -> tuple[Any, ...]:
        reply = call(self.feeders[kind].conn, command, timeout)
        if reply[0] != "sent":
            raise BenchError(f"feeder: {reply!r}")
        return reply

    # -- one server, one N, one run ------------------------------------------------------------

    def combo(self, spec: ServerSpec, n: int, run: int) -> Combo:
        result = Combo(spec.name, n, run)
        kind = spec.feed_kind
        proc, ps, port = self.start_server(spec, spec.trades_path, f"n{n}-run{run}")
        self.cursor = 0
        try:
            self.warm_server(spec, port, kind)
            time.sleep(0.2)
            result.rss_idle = ps.memory_info().rss
            result.connected = self.subscribe(spec, port, n, result.errors)
            time.sleep(0.5)
            result.rss_connected = ps.memory_info().rss
            result.rss_per_sub = (result.rss_connected - result.rss_idle) / n
            self.warm_subscribers(kind)
            # Latency first, on idle buffers. Throughput is measured over a bounded window
            # and may leave a backlog, which dies with the server.
            self._latency(result, kind, n, ps)
            self._throughput(result, kind, n, ps)
        finally:
            self.clients.all(("close_all",))
            self.reaper.stop(proc)
        return result

    def subscribe(self, spec: ServerSpec, port: int, n: int, errors: list[str]) -> int:
        """Connect ``n`` subscribers, spread over the subscriber processes."""
        shares = [n // len(self.clients.conns)] * len(self.clients.conns)
        for i in range(n % len(shares)):
            shares[i] += 1
        replies = self.clients.broadcast(
            [
                ("connect", "127.0.0.1", port, spec.stream_path, spec.trades_request, k, 60.0)
                for k in shares
            ],
            90.0,
        )
        connected = sum(r[1] for r in replies)
        for r in replies:
            errors.extend(r[2])
        if connected < n:
            raise BenchError(f"{spec.name}: only {connected}/{n} subscribers connected")
        return connected

    def next_records(self, count: int) -> int:
        start = self.cursor
        self.cursor += count
        if self.cursor > self.s.pool_size:
            raise BenchError("feeder pool exhausted")
        return start

    def warm_server(self, spec: ServerSpec, port: int, kind: str) -> None:
        """One subscriber, a few records, gone: first-connection costs stay out of the figures."""
        conn = self.clients.conns[0]
        reply = call(
            conn, ("connect", "127.0.0.1", port, spec.stream_path, spec.trades_request, 1, 20.0), 30
        )
        if reply[0] != "connected" or reply[1] != 1:
            raise BenchError(f"{spec.name}: warm-up subscriber failed: {reply!r}")
        for _ in range(WARMUP_MAX // WARMUP_BLOCK // 4):
            self.feed(
                kind, ("rate", self.next_records(WARMUP_BLOCK), WARMUP_BLOCK, 2000.0, 5.0), 15
            )
            if self.clients.stats()[2] > 0:
                break
            time.sleep(0.1)
        else:
            raise BenchError(f"{spec.name}: the warm-up subscriber received nothing")
        call(conn, ("close_all",), 10)

    def warm_subscribers(self, kind: str) -> None:
        for _ in range(WARMUP_MAX // WARMUP_BLOCK // 2):
            self.feed(
                kind, ("rate", self.next_records(WARMUP_BLOCK), WARMUP_BLOCK, 2000.0, 5.0), 15
            )
            time.sleep(0.05)
            if self.clients.stats()[2] > 0:
                break
        else:
            raise BenchError("some subscribers received nothing during the warm-up")
        self.clients.quiesce()

    def _latency(self, result: Combo, kind: str, n: int, ps: psutil.Process) -> None:
        count = self.s.latency_records
        base = self.clients.quiesce()
        self.clients.all(("latency", True))
        limit = count / LATENCY_RATE * 3 + 10
        cpu0, harness0 = cpu_seconds(ps), self.harness_cpu()
        reply = self.feed(
            kind, ("rate", self.next_records(count), count, LATENCY_RATE, limit), limit + 10
        )
        # Over the sending window only: is the machine saturated while latency is measured?
        seconds = max(1e-9, (reply[3] - reply[2]) / 1e9)
        result.lat_server_cpu = (cpu_seconds(ps) - cpu0) / seconds
        result.lat_harness_cpu = (self.harness_cpu() - harness0) / seconds
        # A server that cannot keep up would take minutes to drain; what has not arrived
        # LATENCY_GRACE s after the last send counts as infinitely late.
        self.clients.wait_total(
            base + count * n, stall=LATENCY_GRACE, deadline=time.monotonic() + LATENCY_GRACE
        )
        replies = self.clients.all(("latency", False), 60.0)
        samples: list[int] = []
        for r in replies:
            chunk = memoryview(r[1]).cast("q")
            samples.extend(chunk.tolist())
        samples.sort()
        expected = count * n
        result.lat_samples = len(samples)
        result.lat_loss = max(0.0, 1 - len(samples) / expected)
        result.lat_p50 = percentile(samples, expected, 0.50)
        result.lat_p99 = percentile(samples, expected, 0.99)
        result.lat_p999 = percentile(samples, expected, 0.999)

    def _throughput(self, result: Combo, kind: str, n: int, ps: psutil.Process) -> None:
        count = max(200, min(self.s.burst_max_records, self.s.burst_deliveries // n))
        window = self.s.burst_seconds
        # A saturated latency phase leaves a backlog: give it a moment, then measure anyway
        # (the server is busy delivering either way, which is what is measured).
        base = self.clients.quiesce(limit=2.0)
        cpu0 = cpu_seconds(ps)
        harness0 = self.harness_cpu()
        feeder = self.feeders[kind].conn
        feeder.send(("burst", self.next_records(count), count, window))
        deadline = time.monotonic() + window
        total, last_ns = self.clients.wait_total(base + count * n, stall=3.0, deadline=deadline)
        cpu1 = cpu_seconds(ps)
        harness1 = self.harness_cpu()
        if not feeder.poll(window + 30):
            raise BenchError("feeder: the burst did not end")
        reply = feeder.recv()
        if reply[0] != "sent":
            raise BenchError(f"feeder: {reply!r}")
        first_ns = reply[2]
        result.expected = count * n
        result.deliveries = total - base
        result.seconds = max(1e-9, (last_ns - first_ns) / 1e9)
        result.deliveries_per_s = result.deliveries / result.seconds
        if result.deliveries:
            result.cpu_per_million = (cpu1 - cpu0) / result.deliveries * 1e6
        # CPU seconds over the time polled, not the delivery window; close enough for a share.
        result.server_cpu_util = (cpu1 - cpu0) / result.seconds
        result.harness_cpu_util = (harness1 - harness0) / result.seconds

    # -- late joiner -----------------------------------------------------------------------------

    def snapshot(self, spec: ServerSpec, run: int) -> dict[str, Any]:
        proc, _, port = self.start_server(spec, spec.book_path, f"snapshot-run{run}")
        conn = self.clients.conns[0]
        levels = self.s.snapshot_levels
        payload = (
            data.paxos_snapshot(levels)
            if spec.feed_kind == "paxos"
            else data.snapshot_record(levels)
        )
        try:
            self.feed(spec.feed_kind, ("payload", payload), 30)
            probe = ("probe", "127.0.0.1", port, spec.book_stream_path, spec.book_request, 10.0)
            for _ in range(50):  # until the server holds the whole book
                reply = call(conn, probe, 20)
                if reply[0] == "probe" and reply[2] > levels * 20:
                    break
                time.sleep(0.1)
            else:
                raise BenchError(f"{spec.name}: no {levels}-level snapshot for a late joiner")
            totals, afters = [], []
            size = 0
            for _ in range(self.s.snapshot_probes):
                reply = call(conn, probe, 20)
                if reply[0] != "probe":
                    raise BenchError(f"{spec.name}: late joiner: {reply!r}")
                totals.append(reply[1] / 1e6)
                afters.append(reply[3] / 1e6)
                size = reply[2]
            return {
                "server": spec.name,
                "run": run,
                "median_ms": statistics.median(afters),
                "max_ms": max(afters),
                "connect_median_ms": statistics.median(totals),
                "bytes": size,
            }
        finally:
            self.reaper.stop(proc)

    def ingest(self) -> dict[str, Any]:
        proc = self.reaper.popen(
            [sys.executable, "-m", "bench.ingest", "--updates", str(self.s.ingest_updates)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            result: dict[str, Any] = json.loads(read_line(proc, 300.0))
            return result
        finally:
            self.reaper.stop(proc)
