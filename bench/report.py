"""Tables (Markdown) and the plot of a benchmark run's ``results.json``."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report_operating
from bench.servers import PEERS

Row = dict[str, Any]

TARGETS = {
    "deliveries_ratio": 1.5,  # at N=100 (and 500): gateway / websockets >=
    "cpu_ratio": 0.7,  # gateway / websockets <=
    "p99_ms": 2.0,  # N=100, 1,000 msg/s
    "ingest": 100_000.0,
    "rss_per_sub_kib": 64.0,
    "snapshot_ms": 10.0,
}


def _median(values: list[float | None] | list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "", missing: str = "n/a") -> str:
    if value is None:
        return missing
    if math.isinf(value):
        return "sat."
    return f"{value:{spec}}{suffix}"


def _subject(combos: list[Row]) -> str:
    """Whose ratios are reported: the gateway, or (gateway absent) the trio peer."""
    names = {c["server"] for c in combos}
    return "gateway" if "gateway" in names else "trio-naive"


def _inf(latency: float | None) -> float:
    """A latency quantile that fell on a record still missing (saturated server) is infinite."""
    return math.inf if latency is None else latency


def _metrics() -> dict[str, Callable[[Row], float | None]]:
    return {
        "deliveries_per_s": lambda c: c["deliveries_per_s"],
        "cpu_per_million": lambda c: c["cpu_per_million"],
        "lat_p50": lambda c: _inf(c["lat_p50"]),
        "lat_p99": lambda c: _inf(c["lat_p99"]),
        "lat_p999": lambda c: _inf(c["lat_p999"]),
        "server_cpu_util": lambda c: c["server_cpu_util"],
        "harness_cpu_util": lambda c: c["harness_cpu_util"],
        "rss_idle_mib": lambda c: c["rss_idle"] / 2**20,
        # Below 10 subscribers the difference is page noise.
        "rss_per_sub_kib": lambda c: c["rss_per_sub"] / 1024 if c["n"] >= 10 else None,
        "delivered_pct": lambda c: 100 * c["deliveries"] / c["expected"] if c["expected"] else None,
    }


def aggregate(combos: list[Row]) -> dict[tuple[str, int], dict[str, float | None]]:
    grouped: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for c in combos:
        grouped[(c["server"], c["n"])].append(c)
    out = {}
    for key, rows in grouped.items():
        out[key] = {name: _median([f(r) for r in rows]) for name, f in _metrics().items()}
        out[key]["runs"] = len(rows)
    return out


def ratios(combos: list[Row], subject: str, peer: str, n: int, metric: str) -> float | None:
    """Median over runs of subject/peer, pairing the two figures of the same run."""
    f = _metrics()[metric]
    by_run: dict[int, dict[str, float | None]] = defaultdict(dict)
    for c in combos:
        if c["n"] == n and c["server"] in (subject, peer):
            by_run[c["run"]][c["server"]] = f(c)
    pairs = []
    for figures in by_run.values():
        a, b = figures.get(subject), figures.get(peer)
        if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
            continue
        if math.isinf(a) and math.isinf(b):
            continue
        pairs.append(0.0 if math.isinf(b) else math.inf if math.isinf(a) else a / b)
    return _median(pairs)


def _ratio_cell(
    combos: list[Row],
    agg: dict[tuple[str, int], dict[str, float | None]],
    subject: str,
    peer: str,
    n: int,
    metric: str,
) -> str:
    value = ratios(combos, subject, peer, n, metric)
    if value is None and metric.startswith("lat_"):
        a = agg.get((subject, n), {}).get(metric)
        b = agg.get((peer, n), {}).get(metric)
        if a is not None and b is not None and math.isinf(a) and math.isinf(b):
            return "both sat."
    return fmt(value, ".2f", "x")


def _snapshot_ratio(snapshots: list[Row], subject: str, peer: str) -> float | None:
    by_run: dict[int, dict[str, float]] = defaultdict(dict)
    for s in snapshots:
        by_run[s["run"]][s["server"]] = s["median_ms"]
    return _median([f[subject] / f[peer] for f in by_run.values() if subject in f and f.get(peer)])


def markdown(results: Row) -> str:
    combos: list[Row] = results["combos"]
    snapshots: list[Row] = results["snapshots"]
    ingest: Row = results["ingest"]
    meta: Row = results["meta"]
    settings = meta["settings"]
    agg = aggregate(combos)
    subject = _subject(combos)
    servers = [s for s in settings["servers"] if any(c["server"] == s for c in combos)]
    loads = meta.get("loadavg") or []
    lines = [
        "# paxos-gateway benchmark",
        "",
        f"{meta['machine']}; {settings['runs']} runs, medians; elapsed {meta['elapsed_s']:.0f} s"
        + (
            f"; 1-minute load average {loads[0]:.1f} before, {loads[-1]:.1f} after."
            if loads
            else "."
        )
        + " The machine is shared: absolute figures are noisy, ratios within a run are the point.",
        "",
        *report_operating.markdown(results),
        "",
        "## Saturation: as fast as TCP takes it (not the operating point)",
        "",
        f"Latency at {1000:,} upstream msg/s for {settings['latency_seconds']:g} s;"
        f" throughput: min({settings['burst_max_records']:,}, "
        f"{settings['burst_deliveries']:,}/N) records written by the feeder 256 frames per write"
        " as fast as the server reads them, measured until"
        f" all were delivered or for at most {settings.get('burst_seconds', 0):g} s."
        " A server that reads many messages per read and writes each subscriber once per read"
        " (the gateway, uvloop-batched) is measured at its most favourable here."
        " CPU columns: share of one core (server; subscribers + feeder).",
        "",
        "| N | server | deliveries/s | CPU s / M deliveries | server CPU | harness CPU "
        "| p50 ms | p99 ms | p99.9 ms | RSS idle MiB | RSS / subscriber KiB | delivered % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in settings["ns"]:
        for server in servers:
            a = agg.get((server, n))
            if a is None:
                continue
            lines.append(
                f"| {n} | {server} | {fmt(a['deliveries_per_s'])} "
                f"| {fmt(a['cpu_per_million'], '.2f')} | {fmt(a['server_cpu_util'], '.0%')} "
                f"| {fmt(a['harness_cpu_util'], '.0%')} | {fmt(a['lat_p50'], '.2f')} "
                f"| {fmt(a['lat_p99'], '.2f')} | {fmt(a['lat_p999'], '.2f')} "
                f"| {fmt(a['rss_idle_mib'], '.1f')} | {fmt(a['rss_per_sub_kib'], '.1f')} "
                f"| {fmt(a['delivered_pct'], '.1f')} |"
            )
    lines += [
        "",
        f"### Saturation ratios: {subject} / peer (median of per-run ratios)",
        "",
        "Deliveries/s: higher is better; CPU per delivery, latency and memory: lower is better."
        " `sat.`: the quantile fell on a record that had not arrived 3 s after the last send"
        " (the server cannot sustain 1,000 msg/s to N subscribers); a ratio of 0.00x means"
        " only the peer was saturated.",
        "",
        "| N | peer | deliveries/s | CPU / delivery | p50 | p99 | p99.9 | RSS idle "
        "| RSS / subscriber |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    peers = [p for p in PEERS if p != subject and p in servers]
    for n in settings["ns"]:
        for peer in peers:
            cells = [
                _ratio_cell(combos, agg, subject, peer, n, m)
                for m in (
                    "deliveries_per_s",
                    "cpu_per_million",
                    "lat_p50",
                    "lat_p99",
                    "lat_p999",
                    "rss_idle_mib",
                    "rss_per_sub_kib",
                )
            ]
            lines.append(f"| {n} | {peer} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Late joiner: first snapshot of a {settings['snapshot_levels']:,}-level book",
        "",
        "From the end of the WebSocket handshake to the last byte of the snapshot (the gateway's"
        " subscribe request included; the peers send it unasked); the last column adds the TCP"
        " connect and the handshake.",
        "",
        f"| server | median ms | worst ms | bytes | {subject} / server | from connect() ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for server in servers:
        rows = [s for s in snapshots if s["server"] == server]
        if not rows:
            continue
        lines.append(
            f"| {server} | {fmt(_median([r['median_ms'] for r in rows]), '.2f')} "
            f"| {fmt(max(r['max_ms'] for r in rows), '.2f')} | {rows[0]['bytes']:,} "
            f"| {fmt(_snapshot_ratio(snapshots, subject, server), '.2f', 'x')} "
            f"| {fmt(_median([r.get('connect_median_ms') for r in rows]), '.2f')} |"
        )
    if ingest:
        gw_ingest = ingest.get("gateway", {}).get("median")
        naive_ingest = ingest["naive"]["median"]
        lines += [
            "",
            f"## Ingest alone, one core ({ingest['messages']:,} book messages)",
            "",
            "| implementation | messages/s | ratio to naive |",
            "|---|---:|---:|",
            f"| gateway FeedNormalizer.receive | {fmt(gw_ingest)} "
            f"| {fmt(gw_ingest / naive_ingest if gw_ingest else None, '.2f', 'x')} |",
            f"| naive json + Decimal + dict | {fmt(naive_ingest)} | 1.00x |",
        ]
        if "gateway_error" in ingest:
            lines.append(f"\ngateway ingest failed: `{ingest['gateway_error']}`")
    if combos:
        lines += ["", *_targets(combos, snapshots, ingest, agg, subject)]
    if meta["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in meta["failures"]]
    return "\n".join(lines) + "\n"


def _targets(
    combos: list[Row],
    snapshots: list[Row],
    ingest: Row,
    agg: dict[tuple[str, int], dict[str, float | None]],
    subject: str,
) -> list[str]:
    t = TARGETS
    rows: list[tuple[str, float | None, bool | None, str]] = []

    def check(label: str, value: float | None, ok: Callable[[float], bool], spec: str) -> None:
        rows.append((label, value, None if value is None else ok(value), spec))

    for n in (100, 500):
        dr = ratios(combos, subject, "websockets", n, "deliveries_per_s")
        check(f"N={n}: deliveries/s vs websockets >= 1.5x", dr, lambda v: v >= 1.5, ".2f")
        cr = ratios(combos, subject, "websockets", n, "cpu_per_million")
        check(f"N={n}: CPU per delivery vs websockets <= 0.7x", cr, lambda v: v <= 0.7, ".2f")
    p99 = agg.get((subject, 100), {}).get("lat_p99")
    check("N=100, 1,000 msg/s: p99 latency <= 2 ms", p99, lambda v: v <= t["p99_ms"], ".2f")
    gw = ingest.get("gateway", {}).get("median")
    check("ingest >= 100,000 msg/s on one core", gw, lambda v: v >= t["ingest"], ",.0f")
    rss = agg.get((subject, 500), {}).get("rss_per_sub_kib")
    check("N=500: RSS per idle subscriber <= 64 KiB", rss, lambda v: v <= 64, ".1f")
    snap = _median([s["median_ms"] for s in snapshots if s["server"] == subject])
    check("late joiner, 10,000 levels: <= 10 ms", snap, lambda v: v <= t["snapshot_ms"], ".2f")
    out = [
        f"## Targets of the first benchmark issue ({subject}; saturation)",
        "",
        "| target | value | met |",
        "|---|---:|---|",
    ]
    for label, value, ok, spec in rows:
        verdict = "n/a" if ok is None else ("yes" if ok else "**no**")
        out.append(f"| {label} | {fmt(value, spec)} | {verdict} |")
    return out


def _finite(value: float | None) -> float:
    return math.nan if value is None or math.isinf(value) else value


def plot(results: Row, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos: list[Row] = results["combos"]
    agg = aggregate(combos)
    ns = results["meta"]["settings"]["ns"]
    servers = [
        s for s in results["meta"]["settings"]["servers"] if any(c["server"] == s for c in combos)
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in servers:
        xs = [n for n in ns if (server, n) in agg]
        left.plot(xs, [agg[(server, n)]["deliveries_per_s"] for n in xs], "o-", label=server)
        p99 = [_finite(agg[(server, n)]["lat_p99"]) for n in xs]
        right.plot(xs, p99, "o-", label=f"{server} p99")
        p50 = [_finite(agg[(server, n)]["lat_p50"]) for n in xs]
        right.plot(xs, p50, ":", color=right.lines[-1].get_color())
    left.set(xscale="log", xlabel="subscribers N", ylabel="records delivered / s (total)")
    left.set_title("Throughput (as fast as possible)")
    right.set(xscale="log", yscale="log", xlabel="subscribers N", ylabel="latency ms")
    right.set_title("Latency at 1,000 msg/s (p99 solid, p50 dotted; gap = saturated)", fontsize=9)
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Re-render ``results.md`` and ``results.png`` from a ``results.json``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", type=Path, help="results.json of a run")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    text = markdown(results)
    args.results.with_name("results.md").write_text(text)
    plot(results, args.results.with_name("results.png"))
    print(text)


if __name__ == "__main__":
    main()
