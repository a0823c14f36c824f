"""Scrapes of real cluster-mode gateways (no tests), for the checks that alert rules and the
dashboard query only series the cluster roles really export: a gateway of role ``all`` (the
ingest leader and an edge in one process) and a gateway of role ``edge``, in one trio run on a
real nats-server (``bench.nats_server``) with the real simulator, each scraped over
its ``/metrics`` socket once both serve the leader's epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from bench.nats_server import single_node
from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.cluster_rig import cluster_config, wait_for
from tests.support.metrics_traffic import Scrape, scrape

__all__ = ["ClusterScrapes", "scrape_cluster"]


@dataclass(frozen=True)
class ClusterScrapes:
    all_role: Scrape
    edge: Scrape
    cluster_epoch: str  # the leader's term epoch: what every edge serves
    own_epochs: tuple[str, str]  # each process's start-time epoch (never served in cluster mode)


def scrape_cluster(root: Path) -> ClusterScrapes:
    with single_node(root / "nats") as server:
        return trio.run(_scrape, server.url)


async def _scrape(nats_url: str) -> ClusterScrapes:
    async with trio.open_nursery() as nursery:
        sim = Simulator(SimulatorConfig(seed=7, markets=["BTCUSD", "ETHUSD"], levels=20, rate=100))
        await nursery.start(sim.serve)
        gateways = []
        for role in ("all", "edge"):
            gateway = Gateway(cluster_config(sim.url, [nats_url], role), handle_signals=False)
            await nursery.start(gateway.serve)
            gateways.append(gateway)
        for gateway in gateways:
            await wait_for(gateway)
        leader, edge = gateways
        assert leader.cluster is not None and leader.cluster.ingest is not None
        epoch = leader.cluster.ingest.epoch
        assert epoch is not None
        with trio.fail_after(60):
            # Ready means caught up with the stream, not yet that a record has been applied.
            while any(g.served_epoch() != epoch for g in gateways):
                await trio.sleep(0.05)
        scrapes = ClusterScrapes(
            all_role=await scrape(leader),
            edge=await scrape(edge),
            cluster_epoch=epoch,
            own_epochs=(leader.epoch, edge.epoch),
        )
        for gateway in gateways:
            gateway.request_shutdown()
        for gateway in gateways:
            await gateway.stopped.wait()
        nursery.cancel_scope.cancel()
    return scrapes
