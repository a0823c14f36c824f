"""Soak: simulator, a gateway process and a few hundred subscribers under random faults.

    .venv/bin/python -m bench.soak --duration 120 --subscribers 300 --seed 1

Bounded (``--duration`` seconds of faults, then a bounded check) and not part of the default
test run. Processes: this one runs the simulator (trio) and the fault schedule; the gateway runs
as ``python -m gateway run`` in its own process (its RSS is what is sampled, with psutil); the
subscribers are split over ``--workers`` processes, each an asyncio loop of checking clients
(``bench.checking_subscriber.CheckingSubscriber``) that also churn: close or vanish (TCP
reset) and reconnect, resuming from their last record, and reconnect whenever the gateway closes
them (slow policy).

Upstream faults, one every 1-4 s (seeded): abrupt and graceful drops, a stalled connection (no
data, no pong), a crossed book, a burst of malformed / truncated / wrongly typed frames, refused
upgrades (503) while the book feed reconnects, a burst of random drops. At the end the market is
paused, the gateway left to repair itself, and every subscriber must hold each stream's head and
books equal to the simulator's truth.

Subscriber churn besides: a share of the subscribers read slowly all along (``--slow-share``,
a pause after every message), and every few seconds some stop reading altogether for 2-15 s
(their buffers fill, the gateway conflates or closes them with 4008, they reconnect and resume).

Report: records delivered, gaps (sequence problems outside policy events: a resync snapshot, a
conflation, a resume_failed are policy; a skipped seq is not), book mismatches, duplicate
executions, reconnects survived (upstream and subscriber), and the gateway process over time,
sampled every ``--sample-interval`` s: RSS (psutil), open file descriptors (psutil) and trio
tasks (``paxos_gateway_tasks`` from /metrics). For each, after the warm-up: min, max, the
means of the first and last fifth, and the least-squares slope per hour; the RSS slope in
MiB/hour is the leak figure. Exit 1 if gaps, mismatches or duplicates > 0, or RSS grew more
than ``--rss-growth-mb`` between the first and last fifth, or its slope is over
``--rss-slope-mb-per-hour``, or fds or tasks grew by more than ``--fd-growth`` /
``--task-growth`` between the first and last fifth (a leak of connections shows in both).
``--json FILE`` writes the figures and the time series.

Issue 18's run (30 minutes)::

    nohup .venv/bin/python -m bench.soak --duration 1800 --subscribers 300 --seed 18 \
        --json /tmp/soak-1800.json > /tmp/soak-1800.log 2>&1 &
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import urllib.request
from decimal import Decimal
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import trio
from trio_websocket import open_websocket_url

from bench.procs import die_with_parent
from gateway.simulator import FaultConfig, Simulator, SimulatorConfig

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD", "LTCUSD"]
# Concrete streams only: a resume names the streams it continues.
SUBSCRIPTIONS = [
    ["book.BTCUSD", "trades.BTCUSD"],
    ["book.ETHUSD", "price.USDCUSD", "status.marketdata"],
    ["trades.BTCUSD", "trades.ETHUSD", "book.PAXGUSD"],
    ["book.LTCUSD", "trades.LTCUSD", "status.executiondata"],
    ["price.USDCUSD", "trades.PAXGUSD"],
]
FEEDS = ["/executiondata", "/marketdata", "/marketdata/stablecoin"]
FAULTS = ["drop", "drop_graceful", "stall", "crossed", "bad_frames", "refuse", "random_drops"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=120.0, help="seconds of faults (default 120)")
    p.add_argument("--subscribers", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=200.0, help="simulator events per second")
    p.add_argument("--workers", type=int, default=2, help="subscriber processes")
    p.add_argument(
        "--history", type=int, default=200,
        help="server.history: small, so the per-stream rings are full early in the run and "
        "RSS can reach its steady state within minutes",
    )  # fmt: skip
    p.add_argument("--rss-growth-mb", type=float, default=25.0)
    p.add_argument(
        "--rss-slope-mb-per-hour", type=float, default=20.0,
        help="least-squares RSS slope after the warm-up above which the run fails",
    )  # fmt: skip
    p.add_argument("--fd-growth", type=float, default=30.0, help="fds, last fifth - first")
    p.add_argument("--task-growth", type=float, default=90.0, help="tasks, last fifth - first")
    p.add_argument("--slow-share", type=float, default=0.05, help="subscribers reading slowly")
    p.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--warmup", type=float, default=0.25, help="share of samples ignored")
    args = p.parse_args(argv)
    if not 1 <= args.duration <= 3600 or args.subscribers < 1 or args.workers < 1:
        p.error("--duration must be 1..3600 s, --subscribers and --workers >= 1")
    return args


# -- subscriber workers (separate processes: JSON parsing must not starve the simulator) -------


def worker_main(
    index: int, count: int, base_url: str, seed: int, slow_share: float, pipe: Pipe
) -> None:
    die_with_parent()
    report = asyncio.run(_worker(index, count, base_url, seed, slow_share, pipe))
    pipe.send(report)


async def _worker(
    index: int, count: int, base: str, seed: int, slow_share: float, pipe: Pipe
) -> dict[str, Any]:
    # Imported here: the spawned child imports this module first, cheaply.
    from bench.checking_subscriber import CheckingSubscriber, as_levels, wait_all_reached

    rng = random.Random(f"soak-worker:{seed}:{index}")
    subs = [
        CheckingSubscriber(f"w{index}s{i}", SUBSCRIPTIONS[(i + index) % len(SUBSCRIPTIONS)])
        for i in range(count)
    ]
    for sub in rng.sample(subs, int(count * slow_share)):
        # Slow all along: ~2 ms per message is below the feed's pace in bursts (snapshots,
        # resyncs), so these fall behind and catch up, or get conflated, again and again.
        sub.read_delay = 0.002
    stopped: dict[str, float] = {}  # subscriber name -> loop time it reads again
    failed_opens: list[str] = []
    stops = 0
    for start in range(0, count, 50):  # a burst of handshakes, not hundreds at once
        await asyncio.gather(*(s.open(base) for s in subs[start : start + 50]))
    loop = asyncio.get_running_loop()
    finish = loop.run_in_executor(None, pipe.recv)
    closes: dict[str, int] = {}

    async def reopen_ended() -> None:
        ended = [s for s in subs if s.reader is not None and s.reader.done()]
        for s in ended:
            closes[str(s.closed_code)] = closes.get(str(s.closed_code), 0) + 1
            s.closed_code = None
        # A failed reconnect (a handshake cut off on an overloaded machine) is retried on the
        # next tick: its reader is still the finished one. It must not end the worker.
        results = await asyncio.gather(
            *(s.open(base, resume=s.resume_positions() or None) for s in ended),
            return_exceptions=True,
        )
        failed_opens.extend(repr(r) for r in results if isinstance(r, BaseException))

    def restart_stopped(everyone: bool = False) -> None:
        now = loop.time()
        for sub in subs:
            until = stopped.get(sub.name)
            if until is not None and (everyone or now >= until):
                sub.resume_reading()
                del stopped[sub.name]

    while not finish.done():
        await asyncio.wait([finish], timeout=rng.uniform(1.0, 3.0))
        if finish.done():
            break
        restart_stopped()
        await reopen_ended()
        # Stopped subscribers: they stop reading (and answering pings) for 2-15 s, less than
        # the ping timeout; the gateway's buffers for them fill meanwhile.
        for sub in rng.sample(subs, max(1, count // 50)):
            if sub.name not in stopped and sub.ws is not None:
                sub.pause_reading()
                stopped[sub.name] = loop.time() + rng.uniform(2.0, 15.0)
                stops += 1
        churn = [s for s in rng.sample(subs, max(1, count // 20)) if s.name not in stopped]
        half = len(churn) // 2
        await asyncio.gather(*(s.close() for s in churn[:half]), *(s.abort() for s in churn[half:]))
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        results = await asyncio.gather(
            *(s.open(base, resume=s.resume_positions() or None) for s in churn),
            return_exceptions=True,
        )
        failed_opens.extend(repr(r) for r in results if isinstance(r, BaseException))
    await finish
    restart_stopped(everyone=True)
    for sub in subs:
        sub.read_delay = 0.0  # the final check waits for everyone to reach the heads
    await reopen_ended()
    pipe.send("ready")
    heads, truth = await loop.run_in_executor(None, pipe.recv)

    def heads_of(sub: CheckingSubscriber) -> dict[str, int]:
        return {n: heads[n] for n in sub.streams if heads.get(n, 0) > 0}

    late: list[str] = []
    try:
        await wait_all_reached(subs, heads_of, timeout=90)
    except TimeoutError as exc:
        late.append(str(exc))
    mismatches, dups = [], []
    for sub in subs:
        for stream in sub.streams:
            if stream.startswith("book.") and stream in sub.model.bids:
                bids, asks = sub.model.book(stream)
                want = [[(Decimal(p), Decimal(a)) for p, a in side] for side in truth[stream[5:]]]
                got = [as_levels(bids, True), as_levels(asks, False)]
                if got != want:
                    mismatches.append(f"{sub.name} {stream}")
        seen: dict[str, tuple[str, int, int]] = {}
        for r in sub.model.records:
            if r["type"] == "trade":
                where = (r["stream"], r["epoch"], r["seq"])
                if seen.setdefault(r["match_number"], where) != where:
                    dups.append(f"{sub.name} {r['match_number']}")
    responses = [r["type"] for s in subs for r in s.model.responses]
    snapshots = [x["reason"] for s in subs for x in s.model.snapshots]
    report = {
        "records": sum(len(s.model.records) for s in subs),
        "gaps": sum(len(s.model.problems) for s in subs),
        "gap_samples": [p for s in subs for p in s.model.problems][:5],
        "late": late,
        "mismatches": mismatches,
        "duplicates": dups,
        "reconnects": sum(s.opens - 1 for s in subs),
        "gateway_closes": closes,
        "resumed": responses.count("resumed"),
        "resume_failed": responses.count("resume_failed"),
        "resync_snapshots": sum(1 for r in snapshots if r not in ("initial", "subscribe")),
        "conflations": snapshots.count("conflation"),
        "stops": stops,
        "failed_opens": len(failed_opens),
        "failed_open_samples": failed_opens[:3],
        "slow": sum(1 for s in subs if s.read_delay) or int(count * slow_share),
    }
    await asyncio.gather(*(s.close() for s in subs), return_exceptions=True)
    return report


# -- the driver --------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(f"soak:{args.seed}")
        self.sim = Simulator(
            SimulatorConfig(
                seed=args.seed, markets=MARKETS, levels=100, rate=args.rate,
                faults=FaultConfig(snapshot_split=30),
            )
        )  # fmt: skip
        self.rss: list[tuple[float, int]] = []
        self.fds: list[tuple[float, int]] = []
        self.tasks: list[tuple[float, int]] = []
        self.faults: dict[str, int] = {}
        self.gateway: subprocess.Popen[bytes] | None = None
        self.subscriber_url = ""
        self.metrics_url = ""

    async def run(self) -> int:
        args = self.args
        log_path = Path(tempfile.gettempdir()) / f"soak-gateway-{os.getpid()}.log"
        async with trio.open_nursery() as nursery:
            sim_url = await nursery.start(self.sim.serve)
            self.start_gateway(sim_url, log_path)
            await self.wait_started(log_path)
            ctx = multiprocessing.get_context("spawn")
            pipes, procs = [], []
            per = [args.subscribers // args.workers] * args.workers
            per[0] += args.subscribers - sum(per)
            for i, n in enumerate(per):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main,
                    args=(i, n, self.subscriber_url, args.seed, args.slow_share, child),
                    daemon=True,
                )  # fmt: skip
                proc.start()
                pipes.append(parent)
                procs.append(proc)
            nursery.start_soon(self.sample_rss)
            print(f"soak: {args.subscribers} subscribers, {args.duration:.0f} s of faults, "
                  f"gateway log {log_path}", flush=True)  # fmt: skip
            with trio.move_on_after(args.duration):
                await self.fault_loop()
            self.calm()
            heads, truth = await self.quiesce()
            for p in pipes:
                p.send("finish")
            for p in pipes:
                assert await trio.to_thread.run_sync(p.recv) == "ready"
            heads, truth = await self.quiesce()  # the workers' reconnects happened meanwhile
            for p in pipes:
                p.send((heads, truth))
            reports = [await trio.to_thread.run_sync(p.recv) for p in pipes]
            for proc in procs:
                await trio.to_thread.run_sync(proc.join, 10)
            upstream = await trio.to_thread.run_sync(self.upstream_reconnects)
            self.stop_gateway()
            nursery.cancel_scope.cancel()
        return self.report(reports, upstream)

    def start_gateway(self, sim_url: str, log_path: Path) -> None:
        sets = {
            "upstream.base_url": sim_url, "upstream.allow_fast_retry": "true",
            "upstream.backoff_initial": "0.1", "upstream.backoff_max": "1",
            "upstream.connect_interval": "0", "upstream.ping_interval": "0.5",
            "upstream.ping_timeout": "2", "upstream.dedup_capacity": "4096",
            # Backfill on, from the simulator's REST API: the trade tape is part of the soak.
            "backfill.rest_url": self.sim.rest_url,
            "server.port": "0", "server.history": str(self.args.history),
            "server.buffer_bytes": "262144",
            # Every subscriber connects from 127.0.0.1: the per-IP limit would refuse a storm.
            "server.connections_per_ip_per_second": "100000.0",
            "server.connection_burst_per_ip": "100000",
            "server.max_pending_per_ip": "100000",
            "metrics.host": '"127.0.0.1"', "metrics.port": "0",
        }  # fmt: skip
        cmd = [sys.executable, "-m", "gateway", "run", "--log-format", "json"]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        for feed in FEEDS:
            cmd += ["--feed", feed]
        with open(log_path, "wb") as log:
            self.gateway = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )

    async def wait_started(self, log_path: Path) -> None:
        with trio.fail_after(30):
            while not self.subscriber_url:
                await trio.sleep(0.1)
                assert self.gateway is not None and self.gateway.poll() is None, "gateway died"
                text = await trio.Path(log_path).read_text()
                for line in text.splitlines():
                    if '"event":"started"' in line.replace(" ", ""):
                        entry = json.loads(line)
                        self.subscriber_url = entry["subscriber_url"]
                        self.metrics_url = entry["metrics_url"]

    def stop_gateway(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(15)
            except subprocess.TimeoutExpired:
                self.gateway.kill()

    async def sample_rss(self) -> None:
        """RSS, fds and trio tasks of the gateway process, every ``--sample-interval`` s."""
        assert self.gateway is not None
        proc = psutil.Process(self.gateway.pid)
        start = trio.current_time()
        while True:
            t = trio.current_time() - start
            self.rss.append((t, proc.memory_info().rss))
            self.fds.append((t, proc.num_fds()))
            tasks = await trio.to_thread.run_sync(self.task_count)
            if tasks is not None:
                self.tasks.append((t, tasks))
            if len(self.rss) % max(1, round(60 / self.args.sample_interval)) == 1:
                # In the log as it goes: the figures survive a run that dies before its report.
                print(f"sample t={t:.0f}s rss={self.rss[-1][1] / 2**20:.1f}MiB "
                      f"fds={self.fds[-1][1]} tasks={tasks}", flush=True)  # fmt: skip
            await trio.sleep(self.args.sample_interval)

    def task_count(self) -> int | None:
        try:
            with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("paxos_gateway_tasks "):
                return int(float(line.split()[1]))
        return None

    async def fault_loop(self) -> None:
        sim, rng = self.sim, self.rng
        while True:
            await trio.sleep(rng.uniform(1.0, 4.0))
            fault = rng.choice(
                [
                    "drop",
                    "drop_graceful",
                    "stall",
                    "crossed",
                    "bad_frames",
                    "refuse",
                    "random_drops",
                ]
            )
            self.faults[fault] = self.faults.get(fault, 0) + 1
            if fault == "drop":
                sim.drop_all(rng.choice(FEEDS))
            elif fault == "drop_graceful":
                sim.drop_all(rng.choice(FEEDS), graceful=True)
            elif fault == "stall":
                sim.stall(rng.choice(FEEDS))
            elif fault == "crossed":
                sim.inject_crossed(rng.choice(MARKETS))
            elif fault == "bad_frames":
                sim.faults.bad_frame_kinds = ("malformed", "truncated", "wrong_types")
                sim.faults.bad_frame_probability = 0.02
                await trio.sleep(2.0)
                sim.faults.bad_frame_probability = 0.0
            elif fault == "refuse":
                sim.refuse_upgrades(503)
                sim.drop_all("/marketdata")
                await trio.sleep(1.5)
                sim.refuse_upgrades(None)
            else:
                sim.faults.drop_probability = 0.002
                await trio.sleep(2.0)
                sim.faults.drop_probability = 0.0

    def calm(self) -> None:
        f = self.sim.faults
        f.bad_frame_probability = f.drop_probability = f.stall_probability = 0.0
        self.sim.refuse_upgrades(None)

    async def quiesce(self) -> tuple[dict[str, int], dict[str, Any]]:
        """Pause the market; wait until the gateway is ready and its heads stop moving."""
        self.sim.pause()
        with trio.fail_after(60):
            await self.sim.wait_idle()
            previous: dict[str, int] | None = None
            while True:
                ready = await trio.to_thread.run_sync(self.ready)
                heads = await self.heads()
                if ready and heads == previous:
                    break
                previous = heads
                await trio.sleep(0.5)
        truth = {
            m: [[[str(p), str(a)] for p, a in side] for side in self.sim.truth(m)] for m in MARKETS
        }
        return heads, truth

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.metrics_url + "/readyz", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    async def heads(self) -> dict[str, int]:
        async with open_websocket_url(self.subscriber_url + "/v1/stream") as ws:
            await ws.send_message('{"op":"list","id":1}')
            while True:
                msg = json.loads(await ws.get_message())
                if msg.get("type") == "streams":
                    return {s["stream"]: s["seq"] for s in msg["streams"]}

    def upstream_reconnects(self) -> int:
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("paxos_gateway_upstream_reconnects_total{")
            )
        )

    def report(self, reports: list[dict[str, Any]], upstream: int) -> int:
        args = self.args
        total = {k: sum(r[k] for r in reports) for k in (
            "records", "gaps", "reconnects", "resumed", "resume_failed", "resync_snapshots",
            "conflations",
        )}  # fmt: skip
        mismatches = [m for r in reports for m in r["mismatches"]]
        dups = [d for r in reports for d in r["duplicates"]]
        late = [x for r in reports for x in r["late"]]
        closes: dict[str, int] = {}
        for r in reports:
            for code, n in r["gateway_closes"].items():
                closes[code] = closes.get(code, 0) + n
        rss = _trend([(t, b / 2**20) for t, b in self.rss], args.warmup)
        fds = _trend([(t, float(n)) for t, n in self.fds], args.warmup)
        tasks = _trend([(t, float(n)) for t, n in self.tasks], args.warmup)
        slope, growth = rss["slope_per_hour"], rss["growth"]
        print("\n== soak report ==")
        print(f"duration {args.duration:.0f} s, subscribers {args.subscribers}, "
              f"seed {args.seed}, rate {args.rate:.0f} events/s; "
              f"simulator events {self.sim.events_generated}")  # fmt: skip
        print(f"upstream faults injected: {dict(sorted(self.faults.items()))}")
        print(f"records delivered: {total['records']}")
        print(f"gaps outside policy events: {total['gaps']} {reports[0]['gap_samples'] or ''}")
        print(f"book mismatches at the end: {len(mismatches)} {mismatches[:3] or ''}")
        print(f"duplicate executions: {len(dups)} {dups[:3] or ''}")
        print(f"subscribers late at the end: {late or 0}")
        print(f"reconnects survived: upstream {upstream}, subscribers {total['reconnects']} "
              f"(gateway closes by code: {closes or 'none'})")  # fmt: skip
        print(f"policy events seen by subscribers: resync snapshots {total['resync_snapshots']}, "
              f"conflations {total['conflations']}, resumed {total['resumed']}, "
              f"resume_failed {total['resume_failed']}")  # fmt: skip
        stops = sum(r["stops"] for r in reports)
        slow = sum(r["slow"] for r in reports)
        failed_opens = sum(r["failed_opens"] for r in reports)
        print(f"subscriber churn: {slow} slow readers all along, {stops} stops (2-15 s each), "
              f"{failed_opens} reconnects failed and retried "
              f"{[x for r in reports for x in r['failed_open_samples']][:2] or ''}")  # fmt: skip
        every = max(1, round(60 / args.sample_interval))
        for name, unit, trend, series, scale in (
            ("RSS", "MiB", rss, self.rss, 2**20),
            ("fds", "", fds, self.fds, 1),
            ("tasks", "", tasks, self.tasks, 1),
        ):
            if trend["samples"]:
                print(f"gateway {name} after warm-up ({trend['samples']} samples, every "
                      f"{args.sample_interval:g} s): min {trend['min']:.1f}, max "
                      f"{trend['max']:.1f}, first fifth {trend['first']:.1f}, last fifth "
                      f"{trend['last']:.1f} {unit}, slope {trend['slope_per_hour']:+.2f} "
                      f"{unit or name}/hour")  # fmt: skip
                timeline = " ".join(f"{v / scale:.0f}" for _, v in series[::every])
                print(f"gateway {name} timeline (every ~60 s from the start): {timeline}")
        problems = []
        if growth > args.rss_growth_mb:
            problems.append(f"RSS grew {growth:+.1f} MiB")
        if slope > args.rss_slope_mb_per_hour:
            problems.append(f"RSS slope {slope:+.1f} MiB/hour")
        if fds["growth"] > args.fd_growth:
            problems.append(f"fds grew {fds['growth']:+.0f}")
        if tasks["growth"] > args.task_growth:
            problems.append(f"tasks grew {tasks['growth']:+.0f}")
        failed = bool(total["gaps"] or mismatches or dups or late or problems)
        if problems:
            print("leak checks failed:", "; ".join(problems))
        print("RESULT:", "FAIL" if failed else "PASS")
        if args.json is not None:
            args.json.write_text(json.dumps({
                "args": {k: str(v) for k, v in vars(args).items()},
                "totals": total, "mismatches": len(mismatches), "duplicates": len(dups),
                "late": late, "gateway_closes": closes, "upstream_reconnects": upstream,
                "faults": self.faults, "stops": stops, "slow": slow,
                "rss_mib": rss, "fds": fds, "tasks": tasks,
                "series": {"rss_bytes": self.rss, "fds": self.fds, "tasks": self.tasks},
                "result": "FAIL" if failed else "PASS",
            }, indent=1))  # fmt: skip
        return 1 if failed else 0


def _trend(points: list[tuple[float, float]], warmup: float) -> dict[str, float]:
    """After dropping the warm-up share: min, max, first and last fifth's means, their
    difference (growth) and the least-squares slope per hour."""
    kept = points[int(len(points) * warmup) :]
    if not kept:
        return {"samples": 0, "min": 0, "max": 0, "first": 0, "last": 0, "growth": 0.0,
                "slope_per_hour": 0.0}  # fmt: skip
    values = [v for _, v in kept]
    fifth = max(1, len(kept) // 5)
    first, last = sum(values[:fifth]) / fifth, sum(values[-fifth:]) / fifth
    return {
        "samples": len(kept), "min": min(values), "max": max(values), "first": first,
        "last": last, "growth": last - first,
        "slope_per_hour": _slope(kept) * 3600 if len(kept) >= 2 else 0.0,
    }  # fmt: skip


def _slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return trio.run(Soak(args).run)


if __name__ == "__main__":
    raise SystemExit(main())
