"""The cluster roles composed for ``app.Gateway`` (docs/cluster.md), kept apart like
``backfill_wiring`` so the composition root stays readable.

With ``cluster.nats_urls`` set, the process does not run today's feeds into its hub. Instead:

- **ingest** (``io.ingest_role``): while holding the lease, each term makes fresh feed
  normalizers that continue the cluster's numbering (``start_upstream`` below) and runs the
  upstream tasks and backfills into the leader's outbound queue, which is published to
  JetStream;
- **edge** (``io.edge_role``): the hub is fed from JetStream, so it serves the leader's records
  and bytes;
- **all**: both. The local hub is fed through JetStream too, not straight from the local
  publisher: a process of role ``all`` that stands by must serve what the *other* leader
  writes, and one path for every record keeps the edges identical (the price: one NATS round
  trip of latency for the leader's own subscribers).

``health`` is what the cluster adds to ``/readyz``: the NATS connection, the lease role (and
the current term's feeds when leading), the edge's catch-up.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Iterator, Mapping

import trio

from gateway.backfill_wiring import start_backfills, tape_for
from gateway.cluster.lease import LeaseRole
from gateway.cluster.subjects import StreamLayout
from gateway.config import Config
from gateway.fanout.hub import Hub
from gateway.feed_readiness import Feed, feed_health
from gateway.ingest.batch import RecordSink
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.cluster_metrics import ClusterCollector, ack_latency_histogram
from gateway.io.cluster_node import ClusterNode, RoleTask
from gateway.io.connect_gate import ConnectGate
from gateway.io.edge_role import EdgeRole
from gateway.io.ingest_role import IngestRole
from gateway.io.metrics import Metrics
from gateway.io.readiness import FeedHealth
from gateway.io.upstream import run_feed
from gateway.io.upstream_health import FeedState

__all__ = ["ClusterWiring", "layout_of"]


def layout_of(config: Config) -> StreamLayout:
    c = config.cluster
    return StreamLayout(
        replicas=c.stream_replicas,
        max_age_seconds=c.max_age,
        duplicate_window_seconds=c.duplicate_window,
        lease_ttl_seconds=c.lease_ttl,
    )


class ClusterWiring:
    def __init__(self, config: Config, hub: Hub, metrics: Metrics) -> None:
        c = config.cluster
        self.config = config
        self.metrics = metrics
        self.holder = c.holder or socket.gethostname()
        layout = layout_of(config)
        # The current term's feeds (ingest leader), one list object for the collectors.
        self.feeds: list[Feed] = []
        # One gate per process across terms: Paxos's one new connection per second per IP.
        self._gate = ConnectGate(config.upstream.connect_interval)
        roles: list[RoleTask] = []
        self.ingest: IngestRole | None = None
        self.edge: EdgeRole | None = None
        if c.role in ("ingest", "all"):
            self.ingest = IngestRole(
                self._start_upstream, holder=self.holder, layout=layout,
                checkpoint_interval=c.checkpoint_interval,
                on_ack=ack_latency_histogram(metrics).observe,
            )  # fmt: skip
            roles.append(self.ingest.run)
        if c.role in ("edge", "all"):
            self.edge = EdgeRole(hub, layout=layout)
            roles.append(self.edge.run)
        self.node = ClusterNode(
            c.nats_urls, layout=layout, roles=roles, name=self.holder,
            connect_timeout=c.connect_timeout,
        )  # fmt: skip
        metrics.add_collector(ClusterCollector(self.node, self.ingest, self.edge))

    async def run(self) -> None:
        await self.node.run()

    def served_epoch(self) -> str:
        """The epoch of the records this process serves: an edge's, adopted from the stream
        (what Hello carries once it has one); an ingest-only process's, the current or last
        term's. "" before there is one: in cluster mode the process's own start-time epoch
        stamps no record (only a Hello sent before an edge's first record carries it), so it
        is not shown (the info metric, the "started" log line)."""
        if self.edge is not None:
            return self.edge.epoch or ""
        if self.ingest is not None and self.ingest.epoch is not None:
            return self.ingest.epoch
        return ""

    async def _start_upstream(
        self, nursery: trio.Nursery, epoch: str, heads: Mapping[str, int], sink: RecordSink
    ) -> None:
        config = self.config
        self.feeds[:] = [
            Feed(
                spec=spec,
                required=feed_config.required,
                session=FeedNormalizer(
                    spec, epoch, dedup_capacity=config.upstream.dedup_capacity,
                    tape=tape_for(spec, config), continue_from=heads,
                ),
                state=FeedState(spec.name),
            )
            for spec, feed_config in zip(config.feed_specs(), config.feeds, strict=True)
        ]  # fmt: skip
        await start_backfills(nursery, self.feeds, sink, config, self.metrics)
        nursery.start_soon(self._forget_connections_at_term_end, [f.spec.name for f in self.feeds])
        for feed in self.feeds:
            await nursery.start(
                functools.partial(
                    run_feed, feed.spec, feed.session, sink, config.upstream, self.metrics,
                    connect_gate=self._gate, state=feed.state,
                )
            )  # fmt: skip

    async def _forget_connections_at_term_end(self, names: list[str]) -> None:
        """A standby holds no upstream connection, rather than a closed one: at the end of a
        term the ``upstream_connected{feed}`` series go, so PaxosGatewayUpstreamDown (== 0 for
        2 min) does not fire on every standby that once led. The next term's feeds make them
        again (at 0 until connected)."""
        try:
            await trio.sleep_forever()
        finally:
            for name in names:
                with contextlib.suppress(KeyError):
                    self.metrics.upstream_connected.remove(name)

    def health(self) -> Iterator[FeedHealth]:
        node = self.node
        connection = node.describe()
        yield FeedHealth(
            name="nats",
            required=True,
            ready=node.connected,
            reason="" if node.connected else f"NATS {connection}",
            state=connection,
        )
        ingest = self.ingest
        if ingest is not None:
            role = ingest.lease.role
            state = f"{role} ({ingest.lease.reason})"
            if ingest.epoch is not None:
                state += f", epoch {ingest.epoch}"
            yield FeedHealth(
                name="ingest", required=True, ready=node.connected,
                reason="" if node.connected else "no NATS connection: cannot lead",
                state=state,
            )  # fmt: skip
            if role is LeaseRole.LEADER and ingest.leading:
                yield from feed_health(self.feeds)
        edge = self.edge
        if edge is not None:
            stats = edge.stats
            state = f"at stream seq {stats.last_stream_seq}, {stats.pending} pending"
            yield FeedHealth(
                name="edge", required=True, ready=edge.ready,
                reason="" if edge.ready else (
                    f"catching up: at stream seq {stats.last_stream_seq} of "
                    f"{stats.catchup_target}"
                ),
                state=state,
            )  # fmt: skip
