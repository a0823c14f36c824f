"""The operating point's tables (``bench.operating``), first in ``results.md``, and its targets."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.servers import GATEWAYS

Row = dict[str, Any]

SUBJECT = GATEWAYS[0]  # the default configuration
SUBJECTS = GATEWAYS
TARGET_RATE = 1000.0
TARGET_N = 100


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "sat."
    return f"{value:{spec}}{suffix}"


def _lat(value: float | None) -> float:
    return math.inf if value is None else value


def _median(values: list[float]) -> float | None:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else None


def _servers(rows: list[Row], settings: Row) -> list[str]:
    order = list(settings.get("op_servers", ()))
    return [s for s in order if any(r["server"] == s for r in rows)]


Metric = Callable[[Row], float | None]
PACED: dict[str, Metric] = {
    "cpu": lambda r: r["cpu_per_million"],
    "p50": lambda r: _lat(r["lat_p50"]),
    "p99": lambda r: _lat(r["lat_p99"]),
    "p999": lambda r: _lat(r["lat_p999"]),
    "server_cpu": lambda r: r["server_cpu_util"],
    "harness_cpu": lambda r: r["harness_cpu_util"],
    "delivered": lambda r: 100 * r["deliveries"] / r["expected"] if r["expected"] else None,
    "achieved": lambda r: r["achieved_rate"],
    "load": lambda r: r["loadavg"],
}


def paced_median(rows: list[Row], server: str, n: int, rate: float, metric: str) -> float | None:
    f = PACED[metric]
    values = [f(r) for r in rows if (r["server"], r["n"], r["rate"]) == (server, n, rate)]
    return _median([v for v in values if v is not None])


def paced_ratio(
    rows: list[Row], peer: str, n: int, rate: float, metric: str, subject: str = SUBJECT
) -> float | None:
    """Median over runs of subject / peer, pairing the figures of the same run."""
    return _median(paced_ratios(rows, peer, n, rate, metric, subject))


def paced_ratios(
    rows: list[Row], peer: str, n: int, rate: float, metric: str, subject: str = SUBJECT
) -> list[float]:
    """subject / peer of each run that has both figures."""
    f = PACED[metric]
    by_run: dict[int, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        if r["n"] == n and r["rate"] == rate and r["server"] in (subject, peer):
            by_run[r["run"]][r["server"]] = f(r)
    pairs = []
    for figures in by_run.values():
        a, b = figures.get(subject), figures.get(peer)
        if a is None or b is None or b == 0 or (math.isinf(a) and math.isinf(b)):
            continue
        pairs.append(0.0 if math.isinf(b) else math.inf if math.isinf(a) else a / b)
    return pairs


def _by_run_ratios(
    rows: list[Row], peer: str, n: int, key: str, subject: str = SUBJECT
) -> list[float]:
    by_run: dict[int, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        if r["n"] == n and r["server"] in (subject, peer):
            by_run[r["run"]][r["server"]] = r[key]
    return [
        f[subject] / f[peer]  # type: ignore[operator]
        for f in by_run.values()
        if f.get(subject) is not None and f.get(peer)
    ]


def _spread(values: list[float], spec: str = ".2f", suffix: str = "x") -> str:
    """The per-run figures behind a median: the lowest and the highest, and how many."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return "n/a"
    low, high = _fmt(min(clean), spec, suffix), _fmt(max(clean), spec, suffix)
    runs = f"{len(clean)} run{'s' if len(clean) > 1 else ''}"
    return f"{low} ({runs})" if low == high else f"{low} to {high} ({runs})"


def markdown(results: Row) -> list[str]:
    op: Row | None = results.get("operating")
    if not op or not op["paced"]:
        return []
    settings = results["meta"]["settings"]
    paced: list[Row] = op["paced"]
    servers = _servers(paced, settings)
    subjects = [s for s in SUBJECTS if s in servers]
    peers = [s for s in servers if s not in SUBJECTS]
    rates = sorted({r["rate"] for r in paced})
    ns = sorted({r["n"] for r in paced})
    lines = [
        "## Operating point: paced input, one upstream message per write",
        "",
        f"Every upstream message is its own TCP write, at a fixed rate, for"
        f" {settings['op_seconds']:g} s per figure. CPU s / M: the server's CPU seconds per"
        " million deliveries, from the first send until every subscriber had every record."
        " Latency: feeder send to subscriber receive over every expected delivery (`sat.`: the"
        " quantile fell on a record still missing 3 s after the last send). CPU columns: share"
        " of one core (server; subscribers + feeder). Load: the 1-minute load average when the"
        " figure was taken (2 cores).",
        "",
        "| rate msg/s | N | server | CPU s / M deliveries | p50 ms | p99 ms | p99.9 ms "
        "| server CPU | harness CPU | delivered % | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        for n in ns:
            for server in servers:

                def m(metric: str, server: str = server, n: int = n, rate: float = rate) -> Any:
                    return paced_median(paced, server, n, rate, metric)

                if m("achieved") is None:
                    continue
                lines.append(
                    f"| {rate:,.0f} | {n} | {server} | {_fmt(m('cpu'))} | {_fmt(m('p50'))} "
                    f"| {_fmt(m('p99'))} | {_fmt(m('p999'))} | {_fmt(m('server_cpu'), '.0%')} "
                    f"| {_fmt(m('harness_cpu'), '.0%')} | {_fmt(m('delivered'), '.1f')} "
                    f"| {_fmt(m('load'), '.1f')} |"
                )
    if subjects and peers:
        lines += [
            "",
            "### Ratios at the operating point: gateway / peer (median of per-run ratios)",
            "",
            "Lower is better. `0.00x`: only the peer was saturated.",
            "",
            "| rate msg/s | N | gateway | peer | CPU / delivery | p50 | p99 | p99.9 |",
            "|---:|---:|---|---|---:|---:|---:|---:|",
        ]
        for rate in rates:
            for n in ns:
                for subject in subjects:
                    for peer in peers:
                        cells = [
                            _fmt(paced_ratio(paced, peer, n, rate, k, subject), ".2f", "x")
                            for k in ("cpu", "p50", "p99", "p999")
                        ]
                        lines.append(
                            f"| {rate:,.0f} | {n} | {subject} | {peer} | "
                            + " | ".join(cells)
                            + " |"
                        )
    lines += _capacity(op["capacity"], settings)
    lines += _drain(op["drain"], settings)
    for subject in subjects:
        lines += ["", *targets(results, subject)]
    return lines


def _capacity(rows: list[Row], settings: Row) -> list[str]:
    if not rows:
        return []
    servers = _servers(rows, settings)
    lines = [
        "",
        "### Capacity at SLO: the highest paced rate with p99 <= 2 ms",
        "",
        "Rates double from 500 msg/s while they pass, then a few bisections. The probes column"
        " lists rate: p99 ms (`sat.`: quantile on a missing record). A search can stop at the"
        " harness's limit (the feeder could not hold the rate): then the figure is a lower"
        " bound.",
        "",
        "| N | server | msg/s at SLO | deliveries/s at SLO | gateway / server | probes |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for n in sorted({r["n"] for r in rows}):
        for server in servers:
            mine = [r for r in rows if (r["server"], r["n"]) == (server, n)]
            if not mine:
                continue
            rate = _median([r["rate"] for r in mine])
            ratio = (
                _median(_by_run_ratios(rows, server, n, "rate")) if server not in SUBJECTS else None
            )
            last = mine[-1]
            probes = ", ".join(
                f"{p[0]:,.0f}: {_fmt(p[2])}" + ("" if p[1] >= 0.9 * p[0] else f" (fed {p[1]:,.0f})")
                for p in last["probes"]
            )
            note = f"; {last['limit']}" if last["limit"] else ""
            lines.append(
                f"| {n} | {server} | {_fmt(rate, ',.0f')} | {_fmt((rate or 0) * n, ',.0f')} "
                f"| {_fmt(ratio, '.2f', 'x')} | {probes}{note} |"
            )
    return lines


def _drain(rows: list[Row], settings: Row) -> list[str]:
    if not rows:
        return []
    servers = _servers(rows, settings)
    limit = settings.get("drain_limit", 0)
    lines = [
        "",
        "### Drain: 10 s of 1,000 msg/s arriving at once after an upstream reconnect",
        "",
        "The upstream connection is dropped; once the server has re-dialled, 10,000 records"
        " arrive as fast as TCP takes them. Seconds from the first send to the last delivery;"
        f" `> {limit:g}`: not all delivered within the limit (delivered % says how far it got).",
        "",
        "| N | server | drain s | gateway / server | delivered % | CPU s / M deliveries "
        "| reconnect s | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r["n"] for r in rows}):
        for server in servers:
            mine = [r for r in rows if (r["server"], r["n"]) == (server, n)]
            if not mine:
                continue
            secs = [math.inf if r["seconds"] is None else r["seconds"] for r in mine]
            drain = _median(secs)
            shown = f"> {limit:g}" if drain is not None and math.isinf(drain) else _fmt(drain)
            ratio = (
                _median(_by_run_ratios(rows, server, n, "seconds"))
                if server not in SUBJECTS
                else None
            )
            delivered = _median([100 * r["deliveries"] / r["expected"] for r in mine])
            cpu = _median([r["cpu_per_million"] for r in mine if r["cpu_per_million"]])
            lines.append(
                f"| {n} | {server} | {shown} | {_fmt(ratio, '.2f', 'x')} "
                f"| {_fmt(delivered, '.1f')} | {_fmt(cpu)} "
                f"| {_fmt(_median([r['reconnect_s'] for r in mine]))} "
                f"| {_fmt(_median([r['loadavg'] for r in mine]), '.1f')} |"
            )
    return lines


def targets(results: Row, subject: str = SUBJECT) -> list[str]:
    """Issue 16's targets at 1,000 msg/s paced, N = 100, for one configuration of the gateway."""
    op: Row = results["operating"]
    paced: list[Row] = op["paced"]
    rate, n = TARGET_RATE, TARGET_N
    rows: list[tuple[str, str, bool | None, str]] = []

    def check(
        label: str, runs: list[float], ok: bool | None, suffix: str = "x", spec: str = ".2f"
    ) -> None:
        rows.append((label, _fmt(_median(runs), spec, suffix), ok, _spread(runs, spec, suffix)))

    ws_runs = paced_ratios(paced, "websockets", n, rate, "cpu", subject)
    picows_runs = paced_ratios(paced, "picows", n, rate, "cpu", subject)
    floor_runs = paced_ratios(paced, "floor", n, rate, "cpu", subject)
    vs_ws, vs_picows, vs_floor = _median(ws_runs), _median(picows_runs), _median(floor_runs)
    floor_vs_ws = _pair_ratio(paced, "floor", "websockets", n, rate)
    check("CPU / delivery vs websockets <= 0.7x", ws_runs, None if vs_ws is None else vs_ws <= 0.7)
    check(
        "CPU / delivery vs picows <= 1.0x",
        picows_runs,
        None if vs_picows is None else vs_picows <= 1,
    )
    # The issue's escape clause: if the floor itself costs more than 0.7x broadcast(), the
    # kernel dominates, and the gateway must come within 1.2x of the floor instead.
    floor_bound = 1.2 if floor_vs_ws is not None and floor_vs_ws > 0.7 else 1.5
    check(
        f"CPU / delivery vs floor <= {floor_bound}x (floor / websockets = "
        f"{_fmt(floor_vs_ws, '.2f', 'x')})",
        floor_runs,
        None if vs_floor is None else vs_floor <= floor_bound,
    )
    p99_runs = [
        _lat(r["lat_p99"]) for r in paced if (r["server"], r["n"], r["rate"]) == (subject, n, rate)
    ]
    p99 = _median(p99_runs)
    check("p99 <= 2 ms", p99_runs, None if p99 is None else p99 <= 2.0, " ms")
    cap_runs = _by_run_ratios(op["capacity"], "websockets", n, "rate", subject)
    cap = _median(cap_runs)
    check("capacity at SLO vs websockets >= 3x", cap_runs, None if cap is None else cap >= 3.0)
    out = [
        f"### Targets at {rate:,.0f} msg/s paced, N = {n} (issue 16): {subject}",
        "",
        "The value is the median of the runs; the runs column shows how far they scattered.",
        "",
        "| target | value | met | runs |",
        "|---|---:|---|---|",
    ]
    for label, value, ok, spread in rows:
        verdict = "n/a" if ok is None else ("yes" if ok else "**no**")
        out.append(f"| {label} | {value} | {verdict} | {spread} |")
    return out


def _pair_ratio(rows: list[Row], a: str, b: str, n: int, rate: float) -> float | None:
    by_run: dict[int, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        if r["n"] == n and r["rate"] == rate and r["server"] in (a, b):
            by_run[r["run"]][r["server"]] = r["cpu_per_million"]
    pairs = [
        f[a] / f[b]  # type: ignore[operator]
        for f in by_run.values()
        if f.get(a) is not None and f.get(b)
    ]
    return _median(pairs)
