"""The soak's report (``bench.soak``): what the workers saw, the gateway's RSS, fds and tasks over
time with their trends after the warm-up, the pass/fail verdict, and ``--json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GatewaySamples", "report"]


@dataclass
class GatewaySamples:
    """(seconds since the start, value) of the gateway process, every ``--sample-interval``."""

    rss: list[tuple[float, int]] = field(default_factory=list)  # bytes
    fds: list[tuple[float, int]] = field(default_factory=list)
    tasks: list[tuple[float, int]] = field(default_factory=list)  # trio tasks, from /metrics
    # Connected subscribers (paxos_gateway_subscribers), sampled with the tasks: fds and tasks
    # follow them, so a leak is what grows with time at an equal number of connections.
    connections: list[tuple[float, int]] = field(default_factory=list)


def report(
    args: argparse.Namespace,
    reports: list[dict[str, Any]],
    upstream: int,
    samples: GatewaySamples,
    faults: dict[str, int],
    events_generated: int,
) -> int:
    """Print the report (and write ``--json``); the exit status: 1 if the run failed."""
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
    rss = _trend([(t, b / 2**20) for t, b in samples.rss], args.warmup)
    fds = _trend([(t, float(n)) for t, n in samples.fds], args.warmup, samples.connections)
    tasks = _trend([(t, float(n)) for t, n in samples.tasks], args.warmup, samples.connections)
    slope, growth = rss["slope_per_hour"], rss["growth"]
    print("\n== soak report ==")
    print(f"duration {args.duration:.0f} s, subscribers {args.subscribers}, "
          f"seed {args.seed}, rate {args.rate:.0f} events/s; "
          f"simulator events {events_generated}")  # fmt: skip
    print(f"upstream faults injected: {dict(sorted(faults.items()))}")
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
        ("RSS", "MiB", rss, samples.rss, 2**20),
        ("fds", "", fds, samples.fds, 1),
        ("tasks", "", tasks, samples.tasks, 1),
    ):
        if trend["samples"]:
            print(f"gateway {name} after warm-up ({trend['samples']} samples, every "
                  f"{args.sample_interval:g} s): min {trend['min']:.1f}, max "
                  f"{trend['max']:.1f}, first fifth {trend['first']:.1f}, last fifth "
                  f"{trend['last']:.1f} {unit}, slope {trend['slope_per_hour']:+.2f} "
                  f"{unit or name}/hour")  # fmt: skip
            if "per_connection" in trend:
                print(f"  at an equal number of connections ({trend['per_connection']:.2f} per "
                      f"connected subscriber): growth {trend['leak_growth']:+.1f}, slope "
                      f"{trend['leak_slope_per_hour']:+.2f} {name}/hour")  # fmt: skip
            timeline = " ".join(f"{v / scale:.0f}" for _, v in series[::every])
            print(f"gateway {name} timeline (every ~60 s from the start): {timeline}")
    if samples.connections:
        timeline = " ".join(f"{v:.0f}" for _, v in samples.connections[::every])
        print(f"connected subscribers timeline (every ~60 s from the start): {timeline}")
    problems = []
    if growth > args.rss_growth_mb:
        problems.append(f"RSS grew {growth:+.1f} MiB")
    if slope > args.rss_slope_mb_per_hour:
        problems.append(f"RSS slope {slope:+.1f} MiB/hour")
    # fds and tasks: at an equal number of connections where the fit is possible.
    if fds.get("leak_growth", fds["growth"]) > args.fd_growth:
        problems.append(f"fds grew {fds.get('leak_growth', fds['growth']):+.0f}")
    if tasks.get("leak_growth", tasks["growth"]) > args.task_growth:
        problems.append(f"tasks grew {tasks.get('leak_growth', tasks['growth']):+.0f}")
    failed = bool(total["gaps"] or mismatches or dups or late or problems)
    if problems:
        print("leak checks failed:", "; ".join(problems))
    print("RESULT:", "FAIL" if failed else "PASS")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "totals": total, "mismatches": len(mismatches), "duplicates": len(dups),
            "late": late, "gateway_closes": closes, "upstream_reconnects": upstream,
            "faults": faults, "stops": stops, "slow": slow,
            "rss_mib": rss, "fds": fds, "tasks": tasks,
            "series": {"rss_bytes": samples.rss, "fds": samples.fds, "tasks": samples.tasks,
                       "connections": samples.connections},
            "result": "FAIL" if failed else "PASS",
        }, indent=1))  # fmt: skip
    return 1 if failed else 0


def _trend(
    points: list[tuple[float, float]],
    warmup: float,
    connections: list[tuple[float, int]] | None = None,
) -> dict[str, float]:
    """After dropping the warm-up share: min, max, first and last fifth's means, their
    difference (growth) and the least-squares slope per hour.

    With ``connections`` (sampled at the same times), also ``leak_growth`` and
    ``leak_slope_per_hour``: those of time at an equal number of connected subscribers, from the
    fit ``value = a + b * connections + c * t`` (``per_connection`` is ``b``).
    Churn moves fds and tasks with the connections (a 4009 wave once took 150 subscribers
    away for minutes); only ``c``, what grows with time alone, is a leak.
    """
    kept = points[int(len(points) * warmup) :]
    if not kept:
        return {"samples": 0, "min": 0, "max": 0, "first": 0, "last": 0, "growth": 0.0,
                "slope_per_hour": 0.0}  # fmt: skip
    values = [v for _, v in kept]
    fifth = max(1, len(kept) // 5)
    first, last = sum(values[:fifth]) / fifth, sum(values[-fifth:]) / fifth
    trend = {
        "samples": len(kept), "min": min(values), "max": max(values), "first": first,
        "last": last, "growth": last - first,
        "slope_per_hour": _slope(kept) * 3600 if len(kept) >= 2 else 0.0,
    }  # fmt: skip
    by_time = dict(connections or [])
    paired = [(t, float(by_time[t]), v) for t, v in kept if t in by_time]
    if len(paired) >= 3:
        fit = _fit_time_and_connections(paired)
        if fit is not None:
            per_connection, per_second = fit
            span = sum(t for t, _, _ in paired[-fifth:]) / len(paired[-fifth:]) - sum(
                t for t, _, _ in paired[:fifth]
            ) / len(paired[:fifth])
            trend.update(
                per_connection=per_connection,
                leak_growth=per_second * span,
                leak_slope_per_hour=per_second * 3600,
            )
    return trend


def _fit_time_and_connections(
    points: list[tuple[float, float, float]],
) -> tuple[float, float] | None:
    """Least squares ``v = a + b * c + k * t`` over (t, c, v): (b, k), or None if singular
    (e.g. the connections never changed: then the plain slope says the same)."""
    rows = [(1.0, c, t) for t, c, _ in points]
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    atv = [sum(r[i] * v for r, (_, _, v) in zip(rows, points, strict=True)) for i in range(3)]
    m = [ata[i] + [atv[i]] for i in range(3)]
    for col in range(3):  # Gauss-Jordan with partial pivoting: 3 unknowns, no numpy needed
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-9 * max(1.0, abs(m[0][0])):
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return m[1][3] / m[1][1], m[2][3] / m[2][2]


def _slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0
