"""Three JetStream nodes on 127.0.0.1: an R3 stream survives the loss of its leader node with no
loss, no duplicate and no seq break, because the leader retries with the same ids and fence."""

from __future__ import annotations

import pytest
import trio

from bench.nats_server import NatsServer
from gateway.cluster import subjects
from gateway.cluster.fence import PublishStatus, SubjectFence
from gateway.cluster.ordered import OrderedApply, Verdict
from gateway.cluster.subjects import StreamLayout
from gateway.io.nats_bridge import NatsBridge, PublishItem, open_bridge
from tests.support.cluster_records import EPOCH, items

LAYOUT = StreamLayout(replicas=3, max_age_seconds=600)
STREAMS = ("trades.BTCUSD", "trades.ETHUSD")


async def publish_until_stored(
    bridge: NatsBridge, batch: list[PublishItem], fence: SubjectFence
) -> int:
    """Publish ``batch``, re-sending what was not stored (same ids, same fence); the retries."""
    retries = 0
    remaining = batch
    while remaining:
        outcomes = await bridge.publish_batch(
            remaining, fence=fence, writer="ingest-0:1", ack_timeout=2.0
        )
        assert not any(o.status is PublishStatus.FENCED for o in outcomes), outcomes
        done = {
            o.record
            for o in outcomes
            if o.status in (PublishStatus.STORED, PublishStatus.DUPLICATE)
        }
        remaining = [i for i in remaining if i.record not in done]
        if remaining:
            retries += 1
            await trio.sleep(0.2)
    return retries


async def ensure_streams(bridge: NatsBridge) -> None:
    # The meta leader of a fresh cluster is elected after the servers are up: retry, bounded.
    while True:
        try:
            await bridge.ensure_streams(LAYOUT)
            return
        except Exception:
            await trio.sleep(0.2)


async def read_all(bridge: NatsBridge, count: int) -> OrderedApply:
    """Read ``count`` records through an ordered consumer; creating it right after a failover
    can time out while the stream's new leader settles: retried, bounded by the caller."""
    apply = OrderedApply()
    while True:
        reading = False
        try:
            async with bridge.ordered_reader(subjects.RECORDS_PREFIX + ">") as reader:
                reading = True
                got = 0
                while got < count:
                    batch = await reader.receive()
                    got += len(batch)
                    apply.admit_batch(
                        batch, lambda d: subjects.record_id_of_headers(d.subject, d.headers)
                    )
                return apply
        except Exception:
            if reading:
                raise
            await trio.sleep(0.2)


@pytest.mark.slow
async def test_losing_the_stream_leader_node_loses_nothing(nats_cluster: list[NatsServer]) -> None:
    urls = [s.url for s in nats_cluster]
    first = [i for n in range(1, 151) for st in STREAMS for i in items(st, range(n, n + 1))]
    second = [i for n in range(151, 301) for st in STREAMS for i in items(st, range(n, n + 1))]
    with trio.fail_after(120):
        async with open_bridge(urls, connect_timeout=5.0) as bridge:
            await ensure_streams(bridge)
            fence = SubjectFence()
            await publish_until_stored(bridge, first, fence)
            leader = await bridge.stream_leader(LAYOUT.records)
            victim = next(s for s in nats_cluster if s.name == leader)
            victim.kill()
            await publish_until_stored(bridge, second, fence)
            count = await bridge.message_count(LAYOUT.records)
            assert await bridge.stream_leader(LAYOUT.records) != leader

            apply = await read_all(bridge, 600)

    assert count == 600
    assert apply.counts[Verdict.NEXT] == 598 and apply.counts[Verdict.FIRST] == 2
    assert apply.counts[Verdict.GAP] == apply.counts[Verdict.DUPLICATE] == 0
    assert {p.seq for p in apply.positions().values()} == {300}
    assert {p.epoch for p in apply.positions().values()} == {str(EPOCH)}
