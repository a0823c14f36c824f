"""The epoch a cluster-mode gateway shows (the info metric, the "started" log line) before the
cluster's is known, and what an ingest term leaves in the metrics when it ends: the real
simulator, real upstream WebSockets, the cluster wiring's own term start
(``ClusterWiring._start_upstream``, which ``IngestRole`` calls when it takes the lease) run and
ended by cancelling its nursery, as a lost lease or a fence ends a term. No NATS: neither needs
one (the URL given is never reached). With a cluster epoch: tests/deploy/test_alerts_cluster.py.
"""

from __future__ import annotations

import logging

import pytest
import trio
from prometheus_client import generate_latest

from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.cluster_rig import cluster_config
from tests.support.config import gateway_config
from tests.support.metrics_traffic import Scrape

FEEDS = ("/marketdata/BTCUSD", "/executiondata/BTCUSD")


def scrape(gateway: Gateway) -> Scrape:
    return Scrape.parse(generate_latest(gateway.metrics.registry).decode())


async def test_a_standby_that_led_exports_no_upstream_connection_at_zero(
    nursery: trio.Nursery,
) -> None:
    sim = Simulator(SimulatorConfig(seed=3, markets=["BTCUSD"], levels=10, rate=50.0))
    await nursery.start(sim.serve)
    # Never served: only the wiring's term start is driven here (the URL is never dialled).
    gateway = Gateway(
        cluster_config(sim.url, ["nats://127.0.0.1:9"], "ingest", feeds=FEEDS),
        handle_signals=False,
    )
    cluster = gateway.cluster
    assert cluster is not None
    assert scrape(gateway).find("upstream_connected") == []  # before any term
    for term in range(2):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as term_nursery:
                await cluster._start_upstream(term_nursery, "1", {}, gateway.hub)
                with trio.fail_after(30):
                    while True:
                        connected = scrape(gateway).find("upstream_connected")
                        if len(connected) == len(FEEDS) and all(s.value == 1 for s in connected):
                            break
                        await trio.sleep(0.05)
                scope.cancel()  # the term ends (lease lost, fenced)
        # Standing by: no series, so PaxosGatewayUpstreamDown (== 0 for 2m) cannot fire here;
        # the next term makes them again (checked by the second round).
        assert scrape(gateway).find("upstream_connected") == [], f"after term {term}"
        assert cluster.served_epoch() == ""  # IngestRole sets its epoch; not run here


async def test_before_the_cluster_epoch_is_known_none_is_shown(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # An edge that cannot reach NATS yet serves no record: the "started" line and the info
    # metric show no epoch rather than the process's own, which no subscriber ever sees.
    sim = Simulator(SimulatorConfig(seed=3, markets=["BTCUSD"], levels=10, rate=50.0))
    await nursery.start(sim.serve)
    gateway = Gateway(
        cluster_config(sim.url, ["nats://127.0.0.1:9"], "edge", feeds=FEEDS),
        handle_signals=False,
    )
    with caplog.at_level(logging.INFO, logger="gateway.app"):
        await nursery.start(gateway.serve)
    (started,) = [r for r in caplog.records if getattr(r, "event", None) == "started"]
    assert (started.__dict__["epoch"], started.__dict__["role"]) == (None, "edge")
    (info,) = scrape(gateway).find("info")
    assert info.labels["epoch"] == ""
    gateway.request_shutdown()
    await gateway.stopped.wait()


async def test_a_single_process_shows_its_own_epoch(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator(SimulatorConfig(seed=3, markets=["BTCUSD"], levels=10, rate=50.0))
    await nursery.start(sim.serve)
    gateway = Gateway(gateway_config(sim.url, feeds=FEEDS), handle_signals=False)
    with caplog.at_level(logging.INFO, logger="gateway.app"):
        await nursery.start(gateway.serve)
    (started,) = [r for r in caplog.records if getattr(r, "event", None) == "started"]
    assert (started.__dict__["epoch"], started.__dict__["role"]) == (gateway.epoch, None)
    (info,) = scrape(gateway).find("info")
    assert info.labels["epoch"] == gateway.epoch
    gateway.request_shutdown()
    await gateway.stopped.wait()
