"""The cluster roles in-process: a real nats-server, the real simulator, real WebSockets.

An ingest gateway and edge gateways (``gateway.app.Gateway`` with ``cluster.role``) in one trio
run; what an edge's subscriber receives is compared byte for byte across edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from bench.nats_server import NatsServer, start_server
from bench.procs import free_port
from gateway.app import Gateway
from gateway.cluster_wiring import layout_of
from gateway.io.nats_bridge import PublishItem, open_bridge
from gateway.io.resume_wait import ResumeWait
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.cluster_rig import cluster_config, frames_until, subscribe, wait_for

MARKETS = ["BTCUSD", "ETHUSD"]
BOOK = "book.BTCUSD"


async def start_sim(nursery: trio.Nursery, rate: float = 100.0) -> Simulator:
    sim = Simulator(SimulatorConfig(seed=5, markets=MARKETS, levels=20, rate=rate))
    await nursery.start(sim.serve)
    return sim


async def start_gateway(nursery: trio.Nursery, sim: Simulator, url: str, role: str,
                        **sets: str) -> Gateway:  # fmt: skip
    gateway = Gateway(cluster_config(sim.url, [url], role, **sets), handle_signals=False)
    await nursery.start(gateway.serve)
    return gateway


async def stop_gateways(*gateways: Gateway, timeout: float) -> None:
    """The same shutdown as SIGTERM for each, then wait (bounded) until every one has stopped."""
    for gateway in gateways:
        gateway.request_shutdown()
    with trio.fail_after(timeout):
        for gateway in gateways:
            await gateway.stopped.wait()


def is_record_of(stream: str, seq: int) -> Any:
    return lambda o: o.get("stream") == stream and o.get("seq", 0) >= seq and "type" in o


async def test_role_all_serves_what_it_publishes(nursery: trio.Nursery,
                                                 nats_server: NatsServer) -> None:  # fmt: skip
    sim = await start_sim(nursery)
    gateway = await start_gateway(nursery, sim, nats_server.url, "all")
    body = await wait_for(gateway)
    assert body["feeds"]["nats"]["state"] == "connected"
    assert body["feeds"]["ingest"]["state"].startswith("leader")
    cluster = gateway.cluster
    assert cluster is not None and cluster.ingest is not None and cluster.edge is not None
    epoch = cluster.ingest.epoch
    async with open_websocket_url(gateway.subscriber_url + "/v1/stream") as ws:
        hello = (await frames_until(ws, lambda o: o["type"] == "hello"))[-1][1]
        assert hello["epoch"] == epoch
        await subscribe(ws, [BOOK])
        frames = await frames_until(ws, lambda o: o["type"] == "book_update")
    kinds = [o["type"] for _, o in frames]
    assert kinds[0] == "subscribed" and "book_snapshot" in kinds
    update = frames[-1][1]
    assert update["epoch"] == epoch
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            generate_latest(gateway.metrics.registry).decode()
        )
        for s in family.samples
    }
    p = "paxos_gateway_cluster"
    assert samples[(f"{p}_publishes_total", (("outcome", "stored"),))] > 0
    assert samples[(f"{p}_publishes_total", (("outcome", "fenced"),))] == 0
    assert samples[(f"{p}_publish_ack_seconds_count", ())] > 0
    assert samples[(f"{p}_leader", ())] == 1
    assert samples[(f"{p}_lease_acquisitions_total", ())] == 1
    assert samples[(f"{p}_nats_connected", ())] == 1
    assert samples[(f"{p}_edge_caught_up", ())] == 1
    assert samples[(f"{p}_edge_records_total", ())] > 0
    assert (f"{p}_edge_lag_seconds", ()) in samples
    assert samples[(f"{p}_takeovers_total", (("kind", "new_epoch"),))] == 1
    await stop_gateways(gateway, timeout=20)


async def test_every_edge_sends_the_same_bytes_and_a_resume_moves_between_edges(
    nursery: trio.Nursery, nats_server: NatsServer
) -> None:
    sim = await start_sim(nursery)
    ingest = await start_gateway(nursery, sim, nats_server.url, "ingest")
    await wait_for(ingest)
    edges = [await start_gateway(nursery, sim, nats_server.url, "edge", **{
        "cluster.holder": f'"edge-{i}"'}) for i in range(2)]  # fmt: skip
    for edge in edges:
        await wait_for(edge)
    async with (
        open_websocket_url(edges[0].subscriber_url + "/v1/stream") as a,
        open_websocket_url(edges[1].subscriber_url + "/v1/stream") as b,
    ):
        await subscribe(a, [BOOK])
        await subscribe(b, [BOOK])
        first_a = await frames_until(a, lambda o: o["type"] == "book_update")
        start = first_a[-1][1]["seq"] + 1
        # From a seq both have passed on, every record is compared as sent, byte for byte.
        rest_a = await frames_until(a, is_record_of(BOOK, start + 50))
        await frames_until(b, is_record_of(BOOK, start - 1))
        rest_b = await frames_until(b, is_record_of(BOOK, start + 50))
        by_seq_a = {o["seq"]: t for t, o in rest_a if o.get("stream") == BOOK and "seq" in o}
        by_seq_b = {o["seq"]: t for t, o in rest_b if o.get("stream") == BOOK and "seq" in o}
        common = sorted(set(by_seq_a) & set(by_seq_b))
        assert len(common) >= 40
        assert all(by_seq_a[s] == by_seq_b[s] for s in common)
        last = rest_a[-1][1]
    # The subscriber of edge 0 moves to edge 1 and resumes where it was: no resume_failed.
    point = {BOOK: {"epoch": last["epoch"], "seq": last["seq"]}}
    async with open_websocket_url(edges[1].subscriber_url + "/v1/stream") as c:
        await subscribe(c, [BOOK], resume=point)
        frames = await frames_until(c, lambda o: o["type"] in ("resumed", "resume_failed"))
        assert frames[-1][1]["type"] == "resumed", frames[-1][1]
        after = await frames_until(c, is_record_of(BOOK, last["seq"] + 1))
    assert after[0][1]["seq"] == last["seq"] + 1
    await stop_gateways(*edges, ingest, timeout=30)


async def test_a_resume_ahead_of_a_lagging_edge_waits_for_the_seq(
    nursery: trio.Nursery, nats_server: NatsServer
) -> None:
    sim = await start_sim(nursery)
    ingest = await start_gateway(nursery, sim, nats_server.url, "ingest")
    edge = await start_gateway(nursery, sim, nats_server.url, "edge")
    await wait_for(ingest)
    await wait_for(edge)
    cluster = edge.cluster
    assert cluster is not None and cluster.edge is not None
    with trio.fail_after(60):
        while edge.hub.head(BOOK) == 0:  # the leader's first records reach the edge
            await trio.sleep(0.05)
    head = edge.hub.head(BOOK)
    epoch = edge.hub.stream(BOOK).epoch  # type: ignore[union-attr]
    # A seq the edge has not applied yet (the leader publishes it a second or two later).
    edge.server.resume_wait = ResumeWait(60.0, cluster.edge.next_batch)
    point = {BOOK: {"epoch": epoch, "seq": head + 100}}
    async with open_websocket_url(edge.subscriber_url + "/v1/stream") as ws:
        await subscribe(ws, [BOOK], resume=point)
        frames = await frames_until(ws, lambda o: o["type"] in ("resumed", "resume_failed"))
    assert frames[-1][1]["type"] == "resumed", frames[-1][1]
    assert edge.hub.stats.resume_waits == 1
    # The wait is bounded: a seq that does not come is refused after it, as before.
    edge.server.resume_wait = ResumeWait(0.3, cluster.edge.next_batch)
    point = {BOOK: {"epoch": epoch, "seq": head + 10**9}}
    async with open_websocket_url(edge.subscriber_url + "/v1/stream") as ws:
        await subscribe(ws, [BOOK], resume=point)
        frames = await frames_until(ws, lambda o: o["type"] in ("resumed", "resume_failed"))
    assert frames[-1][1]["type"] == "resume_failed"
    assert frames[-1][1]["reason"] == "ahead_of_head"
    assert edge.hub.stats.resume_waits == 2
    await stop_gateways(edge, ingest, timeout=30)


async def test_nats_unreachable_at_start_then_recovery(nursery: trio.Nursery,
                                                       tmp_path: Path) -> None:  # fmt: skip
    sim = await start_sim(nursery)
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    gateway = await start_gateway(
        nursery, sim, url, "all", **{"cluster.connect_timeout": "0.5", "metrics.ready_grace": "0"}
    )
    body = await wait_for(gateway, ready=False)
    cluster = gateway.cluster
    assert cluster is not None
    with trio.fail_after(30):
        while cluster.node.connect_failures < 1:
            await trio.sleep(0.05)
    body = gateway.readiness.check(trio.current_time()).body
    assert not body["ready"]
    assert body["feeds"]["nats"]["reason"].startswith("NATS unreachable: cannot connect")
    server = await trio.to_thread.run_sync(lambda: start_server(tmp_path / "n1", port=port))
    try:
        await wait_for(gateway)
        assert cluster.ingest is not None
        with trio.fail_after(60):
            while cluster.ingest.stats.publish_stored == 0:
                await trio.sleep(0.05)
        epoch = cluster.ingest.epoch
        # NATS goes away mid-run: not ready, with the reason; the leader steps down.
        await trio.to_thread.run_sync(server.stop)
        body = await wait_for(gateway, ready=False)
        assert "disconnected" in body["feeds"]["nats"]["reason"], body
        with trio.fail_after(30):
            while cluster.ingest.lease.role == "leader":
                await trio.sleep(0.05)
        # Back on the same store: ready again, leading again, the same epoch continued.
        server = await trio.to_thread.run_sync(lambda: start_server(tmp_path / "n1", port=port))
        await wait_for(gateway)
        with trio.fail_after(60):
            while cluster.ingest.stats.takeovers["continued"] < 1:
                await trio.sleep(0.05)
        assert cluster.ingest.epoch == epoch
        await stop_gateways(gateway, timeout=20)
    finally:
        await trio.to_thread.run_sync(server.stop)


def contiguous(frames: list[tuple[str, dict[str, Any]]], stream: str) -> list[dict[str, Any]]:
    """The stream's records in order; asserts one epoch and no gap or repeat in seq."""
    records = [o for _, o in frames if o.get("stream") == stream and "seq" in o and "epoch" in o
               and o["type"] not in ("subscribed", "resumed", "resume_failed")]  # fmt: skip
    # A late joiner gets the book's latest status (an older seq), then the snapshot valid at
    # the head, then live records: the check starts at that snapshot.
    first = next(i for i, r in enumerate(records) if r["type"] == "book_snapshot")
    records = records[first:]
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert len({r["epoch"] for r in records}) == 1
    return records


async def test_a_standby_ingest_continues_the_epoch_when_the_leader_stops(
    nursery: trio.Nursery, nats_server: NatsServer
) -> None:
    sim = await start_sim(nursery)
    first = await start_gateway(nursery, sim, nats_server.url, "ingest", **{
        "cluster.holder": '"ingest-a"'})  # fmt: skip
    await wait_for(first)
    a = first.cluster
    assert a is not None and a.ingest is not None
    with trio.fail_after(30):
        while not a.ingest.leading:
            await trio.sleep(0.05)
    second = await start_gateway(nursery, sim, nats_server.url, "ingest", **{
        "cluster.holder": '"ingest-b"'})  # fmt: skip
    edge = await start_gateway(nursery, sim, nats_server.url, "edge")
    await wait_for(second)
    await wait_for(edge)
    b = second.cluster
    assert b is not None and b.ingest is not None and not b.ingest.leading
    async with open_websocket_url(edge.subscriber_url + "/v1/stream") as ws:
        await subscribe(ws, [BOOK])
        before = await frames_until(ws, lambda o: o["type"] == "book_update")
        first.request_shutdown()  # the leader stops and gives its lease up
        with trio.fail_after(30):
            await first.stopped.wait()
        after = await frames_until(
            ws, lambda o: o["type"] == "book_snapshot" and o["reason"] == "takeover"
        )
        more = await frames_until(ws, lambda o: o["type"] == "book_update")
    records = contiguous(before + after + more, BOOK)
    # The stopping leader deleted its key: the standby did not wait for the TTL.
    assert a.ingest.lease.reason.startswith("released")
    assert b.ingest.leading and b.ingest.epoch == a.ingest.epoch
    assert b.ingest.stats.takeovers == {"continued": 1, "new_epoch": 0}
    takeover = [r for r in records if r.get("reason") == "takeover"]
    assert len(takeover) == 1 and takeover[0]["resync"] is True
    await stop_gateways(edge, second, timeout=30)


async def test_an_edge_started_later_begins_at_the_checkpoints_and_catches_up(
    nursery: trio.Nursery, nats_server: NatsServer
) -> None:
    sim = await start_sim(nursery)
    ingest = await start_gateway(nursery, sim, nats_server.url, "ingest")
    await wait_for(ingest)
    cluster = ingest.cluster
    assert cluster is not None and cluster.ingest is not None
    with trio.fail_after(60):
        while cluster.ingest.stats.checkpoints < 6:  # several rounds of both books
            await trio.sleep(0.05)
    edge = await start_gateway(nursery, sim, nats_server.url, "edge")
    await wait_for(edge)
    assert edge.cluster is not None and edge.cluster.edge is not None
    stats = edge.cluster.edge.stats
    assert stats.caught_up and stats.catchup_target > 0
    # It did not read the stream from its first message: the checkpoints cover the books.
    assert edge.cluster.edge.apply.counts["duplicate"] + stats.records < stats.last_stream_seq
    async with (
        open_websocket_url(edge.subscriber_url + "/v1/stream") as ws,
    ):
        await subscribe(ws, [BOOK])
        frames = await frames_until(ws, lambda o: o["type"] == "book_update")
    records = contiguous(frames, BOOK)
    assert records[0]["type"] == "book_snapshot"
    await stop_gateways(edge, ingest, timeout=30)


@pytest.mark.slow
async def test_losing_a_jetstream_node_under_the_roles_breaks_no_seq(
    nursery: trio.Nursery, nats_cluster: list[NatsServer]
) -> None:
    urls = [s.url for s in nats_cluster]
    sim = await start_sim(nursery)
    r3 = {"cluster.stream_replicas": "3", "cluster.lease_ttl": "3"}
    # The streams are made first, and used once each, before the roles start: what this test
    # is about is the loss of a node under running roles, not a fresh cluster's first
    # elections (on this busy 2-core box an R3 stream made in the middle of them can stay
    # without a leader for a minute).
    layout = layout_of(cluster_config(sim.url, urls, "ingest", **r3))
    async with open_bridge(urls, connect_timeout=5) as bridge:
        with trio.fail_after(120):
            while True:
                try:
                    await bridge.ensure_streams(layout)
                    await bridge.ensure_bucket(layout.lease_bucket, ttl=3, replicas=3)
                    if all([await bridge.stream_leader(s) for s in ("PGW", "PGW_SNAP")]):
                        break
                except Exception:
                    pass
                await trio.sleep(0.5)

    async def start(role: str) -> Gateway:
        gateway = Gateway(cluster_config(sim.url, urls, role, **r3), handle_signals=False)
        await nursery.start(gateway.serve)
        return gateway

    ingest = await start("ingest")
    edge = await start("edge")
    await wait_for(ingest, timeout=120)
    await wait_for(edge, timeout=120)
    assert ingest.cluster is not None and ingest.cluster.ingest is not None
    async with open_websocket_url(edge.subscriber_url + "/v1/stream") as ws:
        await subscribe(ws, [BOOK])
        frames = await frames_until(ws, lambda o: o["type"] == "book_update")
        bridge = ingest.cluster.node.bridge
        assert bridge is not None
        leader = await bridge.stream_leader("PGW")
        victim = next(s for s in nats_cluster if s.name == leader)
        head = edge.hub.head(BOOK)
        await trio.to_thread.run_sync(victim.kill)
        # Well past the loss: records stored after it reach the edge and its subscriber.
        with trio.fail_after(120):
            while edge.hub.head(BOOK) < head + 100:
                await trio.sleep(0.05)
        target = edge.hub.head(BOOK)
        frames += await frames_until(ws, is_record_of(BOOK, target), timeout=120)
    contiguous(frames, BOOK)
    assert ingest.cluster.ingest.stats.publish_fenced == 0
    await stop_gateways(edge, ingest, timeout=30)


async def test_a_leader_whose_subject_another_writer_took_is_fenced_and_stands_by(
    nursery: trio.Nursery, nats_server: NatsServer
) -> None:
    sim = await start_sim(nursery)
    gateway = await start_gateway(nursery, sim, nats_server.url, "ingest")
    await wait_for(gateway)
    cluster = gateway.cluster
    assert cluster is not None and cluster.ingest is not None
    ingest = cluster.ingest
    with trio.fail_after(60):
        while ingest.stats.publish_stored < 20:
            await trio.sleep(0.05)
    epoch = ingest.epoch
    assert epoch is not None
    # Another writer (a leader of a later term, say) stores a record on the leader's subject.
    async with open_bridge(nats_server.url) as other:
        [outcome] = await other.publish_batch(
            [PublishItem.of(epoch, BOOK, 10**6, b"{}")], fence=None
        )
        assert outcome.status == "stored"
    with trio.fail_after(60):
        # Its next write on that subject is fenced; it stops its upstream and stands down.
        while ingest.stats.publish_fenced == 0 or ingest.lease.losses == 0:
            await trio.sleep(0.05)
    # Nobody else contends: once its key expires it leads again, after the foreign record.
    with trio.fail_after(60):
        while ingest.stats.takeovers["continued"] == 0 or not ingest.leading:
            await trio.sleep(0.05)
    assert ingest.epoch == epoch
    await stop_gateways(gateway, timeout=30)


async def test_an_edge_without_checkpoints_reads_only_the_last_history_records(
    nursery: trio.Nursery, nats_server: NatsServer
) -> None:
    sim = await start_sim(nursery, rate=200.0)
    feeds = ["/executiondata/BTCUSD", "/executiondata/ETHUSD"]
    config = cluster_config(sim.url, [nats_server.url], "ingest", feeds=feeds)
    ingest = Gateway(config, handle_signals=False)
    await nursery.start(ingest.serve)
    await wait_for(ingest)
    assert ingest.cluster is not None and ingest.cluster.ingest is not None
    with trio.fail_after(60):
        while ingest.cluster.ingest.stats.publish_stored < 60:
            await trio.sleep(0.05)
    config = cluster_config(
        sim.url, [nats_server.url], "edge", feeds=feeds, **{"server.history": "20"}
    )
    edge = Gateway(config, handle_signals=False)
    await nursery.start(edge.serve)
    await wait_for(edge)
    assert edge.cluster is not None and edge.cluster.edge is not None
    stats = edge.cluster.edge.stats
    assert stats.first_stream_seq == stats.catchup_target - 20 + 1 > 1
    await stop_gateways(edge, ingest, timeout=30)
