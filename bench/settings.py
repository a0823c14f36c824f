"""What ``bench.run`` measures and for how long: the full benchmark and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FULL",
    "LATENCY_GRACE",
    "LATENCY_RATE",
    "QUICK",
    "SERVER_LIFETIME",
    "WARMUP_BLOCK",
    "WARMUP_MAX",
    "Settings",
]

LATENCY_RATE = 1000.0
WARMUP_BLOCK = 50
WARMUP_MAX = 2000
LATENCY_GRACE = 3.0
SERVER_LIFETIME = 600.0  # seconds; a server process exits by itself after this


@dataclass(frozen=True)
class Settings:
    ns: tuple[int, ...]
    runs: int
    servers: tuple[str, ...]
    latency_seconds: float
    burst_deliveries: int  # records x subscribers per throughput phase ...
    burst_max_records: int  # ... with at most this many records
    burst_seconds: float  # and at most this long
    snapshot_levels: int
    snapshot_probes: int
    ingest_updates: int
    client_procs: int = 2

    @property
    def latency_records(self) -> int:
        return int(LATENCY_RATE * self.latency_seconds)

    @property
    def pool_size(self) -> int:
        return WARMUP_MAX + self.latency_records + self.burst_max_records


FULL = Settings(
    ns=(1, 10, 100, 500),
    runs=3,
    servers=("gateway", "websockets", "trio-naive"),
    latency_seconds=2.0,
    burst_deliveries=600_000,
    burst_max_records=60_000,
    burst_seconds=6.0,
    snapshot_levels=10_000,
    snapshot_probes=15,
    ingest_updates=200_000,
)

QUICK = Settings(
    ns=(1, 10, 100, 500),
    runs=1,  # a smoke test; the full benchmark gives medians of three
    servers=("gateway", "websockets", "trio-naive"),
    latency_seconds=1.0,
    burst_deliveries=200_000,
    burst_max_records=20_000,
    burst_seconds=3.0,
    snapshot_levels=10_000,
    snapshot_probes=5,
    ingest_updates=50_000,
)
