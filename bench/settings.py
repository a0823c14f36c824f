"""What ``bench.run`` measures and for how long: the full benchmark and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CAPACITY_MAX",
    "CAPACITY_START",
    "DRAIN_FEED_SECONDS",
    "DRAIN_LIVE_RATE",
    "FULL",
    "LATENCY_GRACE",
    "LATENCY_RATE",
    "OP_SERVERS",
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
# The operating point's capacity search and drain (``bench.operating``).
CAPACITY_START = 500.0
CAPACITY_MAX = 16_000.0
DRAIN_FEED_SECONDS = 10.0
DRAIN_LIVE_RATE = 1000.0
# trio-naive is in the saturation table only: it is far behind everything else already.
OP_SERVERS = ("gateway", "gateway-2ms", "websockets", "picows", "uvloop-batched", "floor")


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
    # The operating point (``bench.operating``).
    op_servers: tuple[str, ...]
    op_ns: tuple[int, ...]
    op_rates: tuple[float, ...]
    op_seconds: float  # per paced measurement
    capacity_ns: tuple[int, ...]
    probe_seconds: float  # per capacity probe
    bisect_steps: int
    drain_ns: tuple[int, ...]
    drain_limit: float  # s
    client_procs: int = 2

    @property
    def latency_records(self) -> int:
        return int(LATENCY_RATE * self.latency_seconds)

    @property
    def pool_size(self) -> int:
        """Records the feeder holds: enough for the busiest server process."""
        saturation = WARMUP_MAX + self.latency_records + self.burst_max_records
        doublings, rate = 0.0, CAPACITY_START
        while rate < CAPACITY_MAX:
            doublings += rate
            rate *= 2
        capacity = (doublings + CAPACITY_MAX * (1 + self.bisect_steps)) * (self.probe_seconds)
        paced = sum(max(200.0, r * self.op_seconds) for r in self.op_rates)
        drain = DRAIN_FEED_SECONDS * DRAIN_LIVE_RATE
        return int(max(saturation, WARMUP_MAX + paced + capacity + drain))


FULL = Settings(
    ns=(1, 10, 100, 500),
    runs=3,
    servers=("gateway", "websockets", "trio-naive", "picows", "uvloop-batched", "floor"),
    latency_seconds=2.0,
    burst_deliveries=600_000,
    burst_max_records=60_000,
    burst_seconds=6.0,
    snapshot_levels=10_000,
    snapshot_probes=15,
    ingest_updates=200_000,
    op_servers=OP_SERVERS,
    op_ns=(100, 500),
    op_rates=(1000.0, 5000.0),
    op_seconds=3.0,
    capacity_ns=(100, 500),
    probe_seconds=1.0,
    bisect_steps=3,
    drain_ns=(100, 500),
    drain_limit=30.0,
)

QUICK = Settings(
    ns=(100,),
    runs=1,  # a smoke test; the full benchmark gives medians of three
    servers=("gateway", "websockets", "uvloop-batched"),
    latency_seconds=1.0,
    burst_deliveries=200_000,
    burst_max_records=20_000,
    burst_seconds=3.0,
    snapshot_levels=10_000,
    snapshot_probes=5,
    ingest_updates=50_000,
    op_servers=OP_SERVERS,
    op_ns=(100, 500),
    op_rates=(1000.0, 5000.0),
    op_seconds=1.0,
    capacity_ns=(100,),
    probe_seconds=0.5,
    bisect_steps=2,
    drain_ns=(100,),
    drain_limit=15.0,
)
