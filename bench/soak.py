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
``--task-growth`` between the first and last fifth at an equal number of connected
subscribers (a leak of connections shows in both; the subscribers come and go with the churn,
so ``soak_report`` fits value = a + b * connections + c * t and judges c).
``--json FILE`` writes the figures and the time series.

Issue 18's run (30 minutes)::

    nohup .venv/bin/python -m bench.soak --duration 1800 --subscribers 300 --seed 18 \
        --json /tmp/soak-1800.json > /tmp/soak-1800.log 2>&1 &

The parts: this module (arguments, the simulator, the gateway process, the fault schedule, the
sampling), ``bench.soak_worker`` (the subscriber processes and their final checks),
``bench.soak_report`` (the figures and the verdict).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import urllib.request
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import trio
from trio_websocket import open_websocket_url

from bench.procs import die_with_parent
from bench.soak_report import GatewaySamples, report
from bench.soak_worker import worker_main
from gateway.simulator import FaultConfig, Simulator, SimulatorConfig

# s for a worker's answer at the end (its subscribers catch up to the heads within 90 s).
WORKER_ANSWER_TIMEOUT = 300.0

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD", "LTCUSD"]
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
        self.samples = GatewaySamples()
        self.workers: list[psutil.Process] = []
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
                self.workers.append(psutil.Process(proc.pid))
            nursery.start_soon(self.sample_rss)
            print(f"soak: {args.subscribers} subscribers, {args.duration:.0f} s of faults, "
                  f"gateway log {log_path}", flush=True)  # fmt: skip
            with trio.move_on_after(args.duration):
                await self.fault_loop()
            self.calm()
            heads, truth = await self.quiesce()
            for p in pipes:
                p.send("finish")
            for p, proc in zip(pipes, procs, strict=True):
                assert await _from_worker(p, proc) == "ready"
            heads, truth = await self.quiesce()  # the workers' reconnects happened meanwhile
            for p in pipes:
                p.send((heads, truth))
            reports = [await _from_worker(p, proc) for p, proc in zip(pipes, procs, strict=True)]
            for proc in procs:
                await trio.to_thread.run_sync(proc.join, 10)
            upstream = await trio.to_thread.run_sync(self.upstream_reconnects)
            self.stop_gateway()
            nursery.cancel_scope.cancel()
        return report(args, reports, upstream, self.samples, self.faults, self.sim.events_generated)

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
            self.samples.rss.append((t, proc.memory_info().rss))
            self.samples.fds.append((t, proc.num_fds()))
            tasks, connections = await trio.to_thread.run_sync(self.scrape_counts)
            if tasks is not None and connections is not None:
                self.samples.tasks.append((t, tasks))
                self.samples.connections.append((t, connections))
            if len(self.samples.rss) % max(1, round(60 / self.args.sample_interval)) == 1:
                # In the log as it goes: the figures survive a run that dies before its report.
                # The workers' RSS too: a harness that grows must not pass for a quiet gateway.
                print(f"sample t={t:.0f}s rss={self.samples.rss[-1][1] / 2**20:.1f}MiB "
                      f"fds={self.samples.fds[-1][1]} tasks={tasks} subscribers={connections} "
                      f"workers_rss={self.workers_rss() / 2**20:.0f}MiB", flush=True)  # fmt: skip
            await trio.sleep(self.args.sample_interval)

    def workers_rss(self) -> int:
        total = 0
        for worker in self.workers:
            with contextlib.suppress(psutil.Error):
                total += worker.memory_info().rss
        return total

    def scrape_counts(self) -> tuple[int | None, int | None]:
        """(trio tasks, connected subscribers) from the gateway's /metrics."""
        try:
            with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None, None
        found: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("paxos_gateway_tasks", "paxos_gateway_subscribers"):
                found[name] = int(float(value))
        return found.get("paxos_gateway_tasks"), found.get("paxos_gateway_subscribers")

    async def fault_loop(self) -> None:
        sim, rng = self.sim, self.rng
        while True:
            await trio.sleep(rng.uniform(1.0, 4.0))
            fault = rng.choice(FAULTS)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return trio.run(Soak(args).run)


async def _from_worker(pipe: Pipe, proc: multiprocessing.process.BaseProcess) -> Any:
    """A worker's next message. A worker that died (a crash, the OOM killer) is an error, not a
    hang: the driver would otherwise wait for it forever."""
    with trio.fail_after(WORKER_ANSWER_TIMEOUT):
        while not await trio.to_thread.run_sync(pipe.poll, 1.0):
            if not proc.is_alive():
                raise RuntimeError(f"soak worker {proc.name} died, exit code {proc.exitcode}")
    return pipe.recv()


if __name__ == "__main__":
    raise SystemExit(main())
