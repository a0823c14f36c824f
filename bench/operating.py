"""The operating point: what a server costs and how late it delivers at live-feed rates.

The saturation phase (``bench.run``: 256 frames per feeder write, as fast as TCP takes them)
measures how much a server can move, which is not how a live feed arrives: Paxos sends each
message on its own, 10 to 5,000 a second. Here every upstream message is its own write
("paced"), and for each server and N in a fresh server process (``Operating.measure``):

1. **paced** at each of ``op_rates`` (1,000 and 5,000 msg/s) for ``op_seconds``: the server's
   CPU seconds per million deliveries, from the first send until every subscriber has every
   record (or ``GRACE`` s after the last send), and p50/p99/p99.9 of feeder-send to
   subscriber-receive over all expected deliveries (a missing one counts as infinitely late);
2. **capacity at SLO** (N in ``capacity_ns``): the highest paced rate at which p99 stays
   <= ``SLO_MS``: rates double from ``CAPACITY_START`` while they pass (up to ``CAPACITY_MAX``),
   then ``bisect_steps`` bisections between the last pass and the first failure; a probe
   also fails if the feeder could not hold 90% of its rate (then the harness is the limit, and
   the result says so);
3. **drain** (N in ``drain_ns``): the upstream connection is dropped; once the server has
   re-dialled, ``DRAIN_FEED_SECONDS`` x 1,000 msg/s of records arrive at once (a reconnect's
   backlog: 256 frames per write, as fast as TCP takes them): the time from the first send to
   the last delivery, bounded by ``drain_limit``.

A phase that leaves a backlog behind (the server could not keep up) gets a fresh server for the
next one. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil  # type: ignore[import-untyped]

from bench.harness import BenchError, cpu_seconds
from bench.measure import percentile
from bench.servers import ServerSpec
from bench.settings import CAPACITY_MAX, CAPACITY_START, DRAIN_FEED_SECONDS, DRAIN_LIVE_RATE

if TYPE_CHECKING:
    from bench.measure import Bench

SLO_MS = 2.0
GRACE = 3.0  # s after the last send; what has not arrived by then counts as infinitely late
FEEDER_HOLD = 0.9  # a probe whose feeder sent at less than this share of its rate is void
SETTLE = 10.0  # s to wait for a backlog to drain before starting another phase


@dataclass
class Paced:
    server: str
    n: int
    run: int
    rate: float
    achieved_rate: float = 0.0
    records: int = 0
    expected: int = 0
    deliveries: int = 0
    cpu_per_million: float | None = None
    lat_p50: float | None = None
    lat_p99: float | None = None
    lat_p999: float | None = None
    server_cpu_util: float = 0.0
    harness_cpu_util: float = 0.0
    loadavg: float = 0.0

    @property
    def complete(self) -> bool:
        return self.deliveries >= self.expected


@dataclass
class Capacity:
    server: str
    n: int
    run: int
    rate: float = 0.0  # the highest passing rate (0: even CAPACITY_START failed)
    probes: list[tuple[float, float, float | None]] = field(default_factory=list)
    # (target rate, achieved rate, p99 ms or None when infinite)
    limit: str = ""  # why the search stopped short of a failure, if it did


@dataclass
class Drain:
    server: str
    n: int
    run: int
    records: int = 0
    expected: int = 0
    deliveries: int = 0
    seconds: float | None = None  # None: not drained within the limit
    reconnect_s: float = 0.0
    cpu_per_million: float | None = None
    loadavg: float = 0.0


@dataclass
class OperatingResults:
    paced: list[Paced] = field(default_factory=list)
    capacity: list[Capacity] = field(default_factory=list)
    drain: list[Drain] = field(default_factory=list)


class Operating:
    """The operating-point phases for one server and N; ``bench`` owns processes and feeders."""

    def __init__(self, bench: Bench, spec: ServerSpec, n: int, run: int) -> None:
        self.bench = bench
        self.s = bench.s
        self.spec = spec
        self.n = n
        self.run = run
        self.ps: psutil.Process | None = None
        self.sessions = 0

    # -- a server with N subscribers -------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        bench, spec = self.bench, self.spec
        self.sessions += 1
        tag = f"op-n{self.n}-run{self.run}-{self.sessions}"
        proc, ps, port = bench.start_server(spec, spec.trades_path, tag)
        bench.cursor = 0
        self.ps = ps
        try:
            bench.warm_server(spec, port, spec.feed_kind)
            bench.subscribe(spec, port, self.n, [])
            bench.warm_subscribers(spec.feed_kind)
            yield
        finally:
            self.ps = None
            bench.clients.all(("close_all",))
            bench.reaper.stop(proc)

    def settled(self, target: int) -> bool:
        """Wait (bounded) until ``target`` records arrived in total: no backlog left."""
        total, _ = self.bench.clients.wait_total(
            target, stall=2.0, deadline=time.monotonic() + SETTLE
        )
        return total >= target

    # -- one paced probe -------------------------------------------------------------------------

    def paced(self, rate: float, seconds: float) -> tuple[Paced, int]:
        """``rate`` msg/s, one message per write, for ``seconds``; also the target total."""
        bench, n, ps = self.bench, self.n, self.ps
        assert ps is not None
        kind = self.spec.feed_kind
        result = Paced(self.spec.name, n, self.run, rate, loadavg=os.getloadavg()[0])
        count = max(200, int(rate * seconds))
        base = bench.clients.quiesce()
        bench.clients.all(("latency", True))
        limit = count / rate * 3 + 10
        cpu0, harness0, t0 = cpu_seconds(ps), bench.harness_cpu(), time.monotonic()
        reply = bench.feed(
            kind, ("rate", bench.next_records(count), count, rate, limit), limit + 10
        )
        sent, first_ns, last_ns = reply[1], reply[2], reply[3]
        target = base + sent * n
        total, _ = bench.clients.wait_total(target, stall=GRACE, deadline=time.monotonic() + GRACE)
        cpu1, harness1, wall = cpu_seconds(ps), bench.harness_cpu(), time.monotonic() - t0
        replies = bench.clients.all(("latency", False), 60.0)
        samples: list[int] = []
        for r in replies:
            samples.extend(memoryview(r[1]).cast("q").tolist())
        samples.sort()
        result.records = sent
        result.expected = sent * n
        result.deliveries = total - base
        result.achieved_rate = sent / max(1e-9, (last_ns - first_ns) / 1e9) if sent > 1 else 0.0
        if result.deliveries:
            result.cpu_per_million = (cpu1 - cpu0) / result.deliveries * 1e6
        result.server_cpu_util = (cpu1 - cpu0) / wall
        result.harness_cpu_util = (harness1 - harness0) / wall
        result.lat_p50 = percentile(samples, result.expected, 0.50)
        result.lat_p99 = percentile(samples, result.expected, 0.99)
        result.lat_p999 = percentile(samples, result.expected, 0.999)
        return result, target

    # -- the phases --------------------------------------------------------------------------------

    def measure(self, out: OperatingResults, log: object = None) -> None:
        """Every operating-point phase configured for this N, fresh servers as needed."""
        s = self.s
        pending = [("paced", rate) for rate in s.op_rates]
        if self.n in s.capacity_ns:
            pending.append(("capacity", 0.0))
        if self.n in s.drain_ns:
            pending.append(("drain", 0.0))
        while pending:
            with self.session():
                while pending:
                    phase, rate = pending.pop(0)
                    if phase == "paced":
                        point, target = self.paced(rate, s.op_seconds)
                        out.paced.append(point)
                        clean = self.settled(target)
                    elif phase == "capacity":
                        capacity, clean = self.capacity()
                        out.capacity.append(capacity)
                    else:
                        out.drain.append(self.drain())
                        clean = True
                    if not clean:
                        break  # a backlog is left: the next phase gets a fresh server

    def capacity(self) -> tuple[Capacity, bool]:
        s = self.s
        result = Capacity(self.spec.name, self.n, self.run)

        def probe(rate: float) -> tuple[bool, bool]:
            """(passed, settled)"""
            point, target = self.paced(rate, s.probe_seconds)
            p99 = point.lat_p99
            result.probes.append((rate, point.achieved_rate, p99))
            held = point.achieved_rate >= FEEDER_HOLD * rate
            if not held:
                result.limit = f"the feeder held only {point.achieved_rate:,.0f} of {rate:,.0f}/s"
            return held and p99 is not None and p99 <= SLO_MS, self.settled(target)

        lo, hi = 0.0, 0.0
        rate = CAPACITY_START
        while True:
            ok, clean = probe(rate)
            if not clean:
                return self._capacity_done(result, lo), False
            if not ok:
                hi = rate
                break
            lo = rate
            if rate >= CAPACITY_MAX:
                result.limit = result.limit or f"passed the search's maximum, {CAPACITY_MAX:,.0f}/s"
                return self._capacity_done(result, lo), True
            rate = min(CAPACITY_MAX, rate * 2)
        if result.limit:  # the feeder, not the server, failed
            return self._capacity_done(result, lo), True
        for _ in range(s.bisect_steps):
            if lo == 0.0:
                break  # below CAPACITY_START: not searched further
            rate = round((lo + hi) / 2 / 50) * 50
            if rate in (lo, hi):
                break
            ok, clean = probe(rate)
            if not clean:
                return self._capacity_done(result, lo), False
            if ok:
                lo = rate
            else:
                hi = rate
        return self._capacity_done(result, lo), True

    @staticmethod
    def _capacity_done(result: Capacity, lo: float) -> Capacity:
        result.rate = lo
        return result

    def drain(self) -> Drain:
        bench, n, ps = self.bench, self.n, self.ps
        assert ps is not None
        kind = self.spec.feed_kind
        feeder = bench.feeders[kind]
        result = Drain(self.spec.name, n, self.run)
        bench.clients.quiesce()
        t0 = time.monotonic()
        bench.call_feeder(kind, ("drop_client",), 10.0)
        reply = bench.call_feeder(kind, ("wait_client", 20.0), 30.0)
        if not reply[1]:
            raise BenchError(f"{self.spec.name}: did not reconnect to its upstream")
        result.reconnect_s = time.monotonic() - t0
        time.sleep(0.3)  # a gateway publishes its feed's status records on a reconnect
        base = bench.clients.quiesce()
        count = int(DRAIN_FEED_SECONDS * DRAIN_LIVE_RATE)
        result.records = count
        result.expected = count * n
        result.loadavg = os.getloadavg()[0]
        cpu0 = cpu_seconds(ps)
        limit = self.s.drain_limit
        feeder.conn.send(("burst", bench.next_records(count), count, limit))
        total, last_ns = bench.clients.wait_total(
            base + result.expected, stall=5.0, deadline=time.monotonic() + limit
        )
        cpu1 = cpu_seconds(ps)
        if not feeder.conn.poll(limit + 30):
            raise BenchError("feeder: the drain burst did not end")
        sent = feeder.conn.recv()
        if sent[0] != "sent" or sent[1] != count:
            raise BenchError(f"feeder: drain burst: {sent!r}")
        result.deliveries = total - base
        if result.deliveries >= result.expected:
            result.seconds = (last_ns - sent[2]) / 1e9
        if result.deliveries:
            result.cpu_per_million = (cpu1 - cpu0) / result.deliveries * 1e6
        return result
