"""Prometheus metrics of the cluster roles (docs/cluster.md), in the style of ``io.metrics``.

The roles keep plain counters (``cluster.stats``, the ``Lease``'s, the ``ClusterNode``'s);
``ClusterCollector`` reads them at scrape time. Every series of a configured role exists from
the start (at 0), so rate() and "absent" alerts work from the first scrape. The one thing
observed as it happens is the publish ack latency (a histogram: one observation per batch
round trip to JetStream, not per record).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.cluster.lease import LeaseRole
from gateway.io.cluster_node import ClusterNode
from gateway.io.edge_role import EdgeRole
from gateway.io.ingest_role import IngestRole
from gateway.io.metrics import PREFIX, Metrics

__all__ = ["ACK_BUCKETS", "ClusterCollector", "ack_latency_histogram"]

# A fenced batch is serial per subject: a few ms per record on a busy 2-core box, up to the
# ack timeout (5 s) when a stream leader moves.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def ack_latency_histogram(metrics: Metrics) -> Histogram:
    return Histogram(
        f"{PREFIX}_cluster_publish_ack_seconds",
        "From handing a batch of records to JetStream to its last ack (fenced, per batch).",
        buckets=ACK_BUCKETS, registry=metrics.registry,
    )  # fmt: skip


class ClusterCollector(Collector):
    def __init__(self, node: ClusterNode, ingest: IngestRole | None, edge: EdgeRole | None) -> None:
        self._node, self._ingest, self._edge = node, ingest, edge

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = f"{PREFIX}_cluster"
        node = self._node
        yield _gauge(f"{p}_nats_connected", "1 while the NATS connection is up.", node.connected)
        yield _counter(
            f"{p}_nats_connect_failures",
            "NATS connections that could not be made or were lost for good (then retried).",
            node.connect_failures,
        )
        if self._ingest is not None:
            yield from self._ingest_families(p, self._ingest)
        if self._edge is not None:
            yield from self._edge_families(p, self._edge)

    def _ingest_families(
        self, p: str, ingest: IngestRole
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats, lease = ingest.stats, ingest.lease
        publishes = CounterMetricFamily(
            f"{p}_publishes",
            "Record publishes to JetStream by outcome (failed: re-sent with the same id; "
            "fenced: another writer holds the subject, this process stood down).",
            labels=["outcome"],
        )
        publishes.add_metric(["stored"], stats.publish_stored)
        publishes.add_metric(["duplicate"], stats.publish_duplicates)
        publishes.add_metric(["failed"], stats.publish_failures)
        publishes.add_metric(["fenced"], stats.publish_fenced)
        yield publishes
        checkpoints = CounterMetricFamily(
            f"{p}_checkpoints", "Book checkpoints written, by outcome.", labels=["outcome"]
        )
        checkpoints.add_metric(["stored"], stats.checkpoints)
        checkpoints.add_metric(["failed"], stats.checkpoint_failures)
        yield checkpoints
        takeovers = CounterMetricFamily(
            f"{p}_takeovers",
            "Leadership terms started: continuing the stream's epoch, or a new epoch (PGW "
            "empty or lost: subscribers get resume_failed).",
            labels=["kind"],
        )
        for kind, n in stats.takeovers.items():
            takeovers.add_metric([kind], n)
        yield takeovers
        yield _gauge(
            f"{p}_leader", "1 while this process holds the ingest lease.",
            lease.role is LeaseRole.LEADER,
        )  # fmt: skip
        yield _counter(f"{p}_lease_acquisitions", "Ingest leases acquired.", lease.acquisitions)
        yield _counter(
            f"{p}_lease_losses", "Ingest leases lost (conflict or TTL bound).", lease.losses
        )
        yield _gauge(
            f"{p}_publish_queue_records",
            "Records handed over by the upstream tasks and not yet taken by the publisher.",
            ingest.queued(),
        )

    def _edge_families(
        self, p: str, edge: EdgeRole
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = edge.stats
        yield _counter(
            f"{p}_edge_records", "Records applied and published by this edge.", stats.records
        )
        yield _counter(
            f"{p}_edge_undecodable",
            "Messages this edge could not read (bad ids or body): dropped and logged.",
            stats.undecodable,
        )
        yield _counter(
            f"{p}_edge_resyncs",
            "Book streams whose records aged out before this edge read them: the book waits "
            "for the next snapshot.",
            stats.resyncs,
        )
        yield _counter(
            f"{p}_edge_consumer_restarts",
            "Ordered consumers this edge made again (stalled after a node loss, or failed).",
            stats.consumer_restarts,
        )
        yield _gauge(
            f"{p}_edge_lag_records", "Records in JetStream after the last one applied.",
            stats.pending,
        )  # fmt: skip
        yield _gauge(
            f"{p}_edge_lag_seconds",
            "Seconds behind: now minus the receive time of the last applied record, 0 when "
            "nothing is pending.",
            edge.lag_seconds(),
        )
        yield _gauge(
            f"{p}_edge_stream_seq", "JetStream sequence of the last message applied.",
            stats.last_stream_seq,
        )  # fmt: skip
        yield _gauge(
            f"{p}_edge_catchup_target",
            "The stream's last sequence when this edge started reading: caught up past it.",
            stats.catchup_target,
        )
        yield _gauge(f"{p}_edge_caught_up", "1 once the edge has caught up.", stats.caught_up)
        yield _counter(
            f"{p}_edge_resume_waits",
            "Resumes held for a seq this edge had not applied yet (cluster.resume_wait), "
            "before they were served or refused.",
            edge.hub.stats.resume_waits,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))
