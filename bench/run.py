"""The benchmark: ``python -m bench.run [--quick] [--out bench/results]``.

First, for each run, the operating point (``bench.operating``: paced input at live-feed
rates, capacity at SLO, the drain of a reconnect's burst). Then the saturation phases: for each
run (at least three; figures are medians, ratios are medians of per-run ratios) and each N,
every server under test (the gateway and the peers, see ``bench.servers``) gets, in turn and in
a fresh process:

1. its upstream (``bench.feeder``) and N subscribers spread over two processes
   (``bench.subscribers``), everything on 127.0.0.1 with ephemeral ports;
2. memory: RSS before and after the N subscribers connected and subscribed (idle);
3. latency: 1,000 upstream messages/s, each stamped with the feeder's wall clock at send time,
   compared with the subscriber's wall clock on receipt;
4. throughput: a fixed count of records sent as fast as the server takes them; delivered
   records per second and the server's CPU seconds per million deliveries.

Then, once per run and server, a late joiner's time to the first snapshot of a 10,000-level
book, and once, ingest alone (``bench.ingest``). Writes ``results.md``, ``results.json`` and
``results.png`` to ``--out``. Every loop is bounded in count and in time; every child process
is killed on the way out, Ctrl-C included.

The parts: ``bench.settings`` (what is measured, how long), ``bench.measure`` (one measurement),
``bench.operating`` (the operating point),
``bench.harness`` (driving the helper processes), ``bench.report`` (results.md and the plot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import operating, report
from bench.harness import BenchError
from bench.measure import Bench, Combo
from bench.procs import Reaper
from bench.servers import ALL
from bench.settings import FULL, QUICK, Settings


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_operating(
    bench: Bench, run: int, out: operating.OperatingResults, failures: list[str]
) -> None:
    """The operating-point phases of one run, every N and server (``bench.operating``)."""
    servers = bench.s.op_servers
    k = run % max(1, len(servers))
    for n in bench.s.op_ns:
        for name in servers[k:] + servers[:k]:
            t0 = time.monotonic()
            first = (len(out.paced), len(out.capacity), len(out.drain))
            try:
                operating.Operating(bench, ALL[name], n, run).measure(out)
            except (BenchError, OSError, psutil.Error) as exc:
                failures.append(f"run {run} N={n} {name} operating point: {exc}")
                log(f"FAILED: {failures[-1]}")
            parts = [
                f"{p.rate:,.0f}/s {report.fmt(p.cpu_per_million, '.2f')} CPU-s/M"
                f" p99 {report.fmt(p.lat_p99, '.2f')} ms"
                for p in out.paced[first[0] :]
            ]
            parts += [f"capacity {c.rate:,.0f}/s {c.limit}" for c in out.capacity[first[1] :]]
            parts += [f"drain {report.fmt(d.seconds, '.2f')} s" for d in out.drain[first[2] :]]
            log(
                f"run {run} N={n:<4} {name:<14} "
                + "; ".join(parts)
                + f"  (load {os.getloadavg()[0]:.1f}, {time.monotonic() - t0:.0f}s)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--runs", type=int, help="repetitions (default 3)")
    parser.add_argument("--n", type=str, help="subscriber counts, e.g. 1,10,100,500")
    parser.add_argument(
        "--servers", type=str, help="saturation phase, e.g. gateway,websockets ('' for none)"
    )
    parser.add_argument("--op-servers", type=str, help="operating point ('' for none)")
    parser.add_argument("--op-n", type=str, help="operating point subscriber counts, e.g. 100")
    parser.add_argument("--op-rates", type=str, help="paced rates, e.g. 1000,5000")
    parser.add_argument("--op-seconds", type=float, help="seconds per paced measurement")
    parser.add_argument("--no-ingest", action="store_true", help="skip the ingest figure")
    parser.add_argument(
        "--no-capacity", action="store_true", help="skip the capacity search and the drain"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.runs:
        overrides["runs"] = args.runs
    if args.n:
        overrides["ns"] = tuple(int(x) for x in args.n.split(","))
    for arg, key in ((args.servers, "servers"), (args.op_servers, "op_servers")):
        if arg is not None:
            overrides[key] = tuple(x for x in arg.split(",") if x)
            unknown = set(overrides[key]) - set(ALL)
            if unknown:
                parser.error(f"unknown servers: {sorted(unknown)}")
    if args.op_rates:
        overrides["op_rates"] = tuple(float(x) for x in args.op_rates.split(","))
    if args.op_seconds:
        overrides["op_seconds"] = args.op_seconds
    if args.no_capacity:
        overrides["capacity_ns"] = overrides["drain_ns"] = ()
    if args.op_n:
        ns = tuple(int(x) for x in args.op_n.split(","))
        overrides["op_ns"] = ns
        if not args.no_capacity:
            overrides["capacity_ns"] = tuple(n for n in settings.capacity_ns if n in ns) or ns[:1]
            overrides["drain_ns"] = tuple(n for n in settings.drain_ns if n in ns) or ns[:1]
    if overrides:
        settings = Settings(**{**asdict(settings), **overrides})
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    combos: list[Combo] = []
    snapshots: list[dict[str, Any]] = []
    failures: list[str] = []
    op = operating.OperatingResults()
    ingest: dict[str, Any] = {}
    loads: list[float] = [os.getloadavg()[0]]
    with Reaper().scope() as reaper:
        bench = Bench(settings, args.out, reaper)
        try:
            if not args.no_ingest:
                log("ingest ...")
                ingest = bench.ingest()
            bench.start()
            for run in range(settings.runs):
                # Each run starts with another server: whatever the first measurement of a run
                # pays for (a cold process, a busy machine), every server pays in turn.
                k = run % max(1, len(settings.servers))
                order = settings.servers[k:] + settings.servers[:k]
                run_operating(bench, run, op, failures)
                for n in settings.ns:
                    for name in order:
                        t0 = time.monotonic()
                        try:
                            combos.append(bench.combo(ALL[name], n, run))
                            c = combos[-1]
                            log(
                                f"run {run} N={n:<4} {name:<11} {c.deliveries_per_s:>10,.0f}/s"
                                f"  p99 {report.fmt(c.lat_p99, '7.2f')} ms"
                                f"  server CPU {report.fmt(c.server_cpu_util, '.0%')}"
                                f"  harness CPU {report.fmt(c.harness_cpu_util, '.0%')}"
                                f"  at 1k/s: {report.fmt(c.lat_server_cpu, '.0%')}"
                                f" / {report.fmt(c.lat_harness_cpu, '.0%')}"
                                f"  ({time.monotonic() - t0:.1f}s)"
                            )
                        except (BenchError, OSError, psutil.Error) as exc:
                            failures.append(f"run {run} N={n} {name}: {exc}")
                            log(f"FAILED: {failures[-1]}")
                for name in settings.servers:
                    if not ALL[name].snapshot:
                        continue
                    try:
                        snapshots.append(bench.snapshot(ALL[name], run))
                    except (BenchError, OSError, psutil.Error) as exc:
                        failures.append(f"run {run} snapshot {name}: {exc}")
                        log(f"FAILED: {failures[-1]}")
        except KeyboardInterrupt:
            log("interrupted; cleaning up")
            return 130
        finally:
            loads.append(os.getloadavg()[0])
            for conn in [f.conn for f in bench.feeders.values()] + bench.clients.conns:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(("stop",))
    elapsed = time.monotonic() - started
    meta = {
        "settings": asdict(settings),
        "elapsed_s": elapsed,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "failures": failures,
        # 1-minute load average before and after (the machine is shared; each phase has its own).
        "loadavg": loads,
    }
    results = {
        "meta": meta,
        "operating": asdict(op),
        "combos": [asdict(c) for c in combos],
        "snapshots": snapshots,
        "ingest": ingest,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    markdown = report.markdown(results)
    (args.out / "results.md").write_text(markdown)
    print(markdown)
    try:
        report.plot(results, args.out / "results.png")
    except Exception as exc:  # a missing matplotlib must not lose the numbers
        log(f"plot failed: {exc!r}")
    log(f"done in {elapsed:.0f}s; {args.out}/results.md, results.json, results.png")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
