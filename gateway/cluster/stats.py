"""Plain counters of the ingest and edge roles, read by ``io.cluster_metrics`` at scrape time
(the same split as ``ingest.stats`` and ``fanout.stats``: nothing Prometheus on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestStats:
    publish_stored: int = 0
    publish_duplicates: int = 0  # our own retries JetStream already held
    publish_failures: int = 0  # FAILED or SKIPPED outcomes, each re-sent
    publish_fenced: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0
    takeovers: dict[str, int] = field(default_factory=lambda: {"continued": 0, "new_epoch": 0})


@dataclass(slots=True)
class EdgeStats:
    records: int = 0  # applied and published to the hub
    undecodable: int = 0  # deliveries whose ids or body could not be read (dropped, logged)
    resyncs: int = 0  # book streams that lost records (GAP) and wait for a snapshot
    consumer_restarts: int = 0  # ordered consumers made again after a stall or an error
    pending: int = 0  # records after the last one applied (the consumer's lag)
    last_receive_ns: int = 0  # receive_time of the last applied record (lag = now - it)
    first_stream_seq: int = 0  # where this edge started reading
    last_stream_seq: int = 0
    catchup_target: int = 0  # the stream's last sequence when the edge started reading
    caught_up: bool = False
