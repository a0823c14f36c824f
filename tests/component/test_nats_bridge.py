"""The NATS bridge against a real nats-server (JetStream, single node, on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
import trio

from bench.nats_server import NatsServer, start_server
from bench.procs import free_port
from gateway.cluster import subjects
from gateway.cluster.codec import decode_record
from gateway.cluster.fence import PublishStatus, SubjectFence
from gateway.cluster.ordered import OrderedApply, Verdict
from gateway.cluster.subjects import StreamLayout
from gateway.io.nats_bridge import (
    Delivery,
    NatsBridge,
    NatsUnavailable,
    PublishItem,
    open_bridge,
)
from tests.support.cluster_records import EPOCH, NEXT_EPOCH, items, trade

# R1 for a single node; memory storage is not used: the file store is what production runs.
LAYOUT = StreamLayout(replicas=1, max_age_seconds=600)
STREAMS = ("trades.BTCUSD", "trades.ETHUSD", "book.BTCUSD")


def interleaved(n: int) -> list[PublishItem]:
    return [item for s in range(1, n + 1) for st in STREAMS for item in items(st, range(s, s + 1))]


async def read(bridge: NatsBridge, count: int, **kwargs: object) -> list[list[Delivery]]:
    batches: list[list[Delivery]] = []
    got = 0
    with trio.fail_after(20):
        async with bridge.ordered_reader(
            subjects.RECORDS_PREFIX + ">",
            **kwargs,  # type: ignore[arg-type]
        ) as reader:
            while got < count:
                batch = await reader.receive()
                batches.append(batch)
                got += len(batch)
    return batches


async def test_publish_then_ordered_read_delivers_the_same_bytes_in_order(
    nats_server: NatsServer,
) -> None:
    batch = interleaved(200)  # 600 records, 3 subjects
    async with open_bridge(nats_server.url) as bridge:
        await bridge.ensure_streams(LAYOUT)
        with trio.fail_after(20):
            outcomes = await bridge.publish_batch(batch, fence=SubjectFence())
        assert {o.status for o in outcomes} == {PublishStatus.STORED}
        assert [o.stream_seq for o in outcomes] == list(range(1, 601))
        deliveries = [d for b in await read(bridge, 600) for d in b]

    assert [d.stream_seq for d in deliveries] == list(range(1, 601))
    assert [d.data for d in deliveries] == [i.payload for i in batch]
    assert deliveries[-1].pending == 0
    apply = OrderedApply()
    accepted, problems = apply.admit_batch(
        deliveries, lambda d: subjects.record_id_of_headers(d.subject, d.headers)
    )
    assert len(accepted) == 600
    assert {p.verdict for p in problems} == {Verdict.FIRST}  # once per stream, then NEXT
    assert decode_record(deliveries[0].data) == trade("trades.BTCUSD", 1)


async def test_a_retry_with_the_same_ids_stores_nothing_twice(nats_server: NatsServer) -> None:
    batch = interleaved(50)
    async with open_bridge(nats_server.url) as bridge:
        await bridge.ensure_streams(LAYOUT)
        with trio.fail_after(20):
            first = await bridge.publish_batch(batch, fence=SubjectFence(), writer="w1:1")
            # The acks were lost, say: the retry sends the same ids with the same (stale) fence.
            # nats-server checks the fence before the id, so this is rejected as "wrong last
            # sequence"; the bridge finds its own write at the subject's end and goes on.
            lost = SubjectFence()
            again = await bridge.publish_batch(batch[:6], fence=lost, writer="w1:1")
            # Unfenced (pipelined) retries are deduplicated by id alone.
            third = await bridge.publish_batch(batch, fence=None)
            count = await bridge.message_count(LAYOUT.records)

    assert {o.status for o in first} == {PublishStatus.STORED}
    # The last write of each of the 3 subjects was from the first batch's end, not these: the
    # retry of an older record is rejected (it is not the subject's last message).
    assert {o.status for o in again} == {PublishStatus.FENCED, PublishStatus.SKIPPED}
    assert {o.status for o in third} == {PublishStatus.DUPLICATE}
    assert [o.stream_seq for o in third] == [o.stream_seq for o in first]
    assert count == 150


async def test_a_fenced_retry_after_a_lost_ack_is_our_own_duplicate(
    nats_server: NatsServer,
) -> None:
    async with open_bridge(nats_server.url) as bridge:
        await bridge.ensure_streams(LAYOUT)
        batch = items("trades.BTCUSD", range(1, 6))
        fence = SubjectFence()
        with trio.fail_after(20):
            await bridge.publish_batch(batch[:3], fence=fence, writer="w1:1")
            before_lost_ack = SubjectFence(fence.snapshot())
            await bridge.publish_batch(batch[3:4], fence=fence, writer="w1:1")
            # Record 4 was stored but its ack was lost: the retry goes out with the old fence.
            retry = await bridge.publish_batch(batch[3:], fence=before_lost_ack, writer="w1:1")
            # Another term's writer sending the subject's last id with a stale fence is a stale
            # leader, not a duplicate of its own.
            subject = subjects.record_subject("trades.BTCUSD")
            other = await bridge.publish_batch(
                batch[4:], fence=SubjectFence({subject: 4}), writer="w2:7"
            )
            count = await bridge.message_count(LAYOUT.records)

    assert [o.status for o in retry] == [PublishStatus.DUPLICATE, PublishStatus.STORED]
    assert [o.stream_seq for o in retry] == [4, 5]
    assert before_lost_ack.expected(subjects.record_subject("trades.BTCUSD")) == 5
    assert [o.status for o in other] == [PublishStatus.FENCED]
    assert count == 5


async def test_a_stale_leaders_publish_is_rejected(nats_server: NatsServer) -> None:
    async with open_bridge(nats_server.url) as old, open_bridge(nats_server.url) as new:
        await old.ensure_streams(LAYOUT)
        with trio.fail_after(20):
            old_fence = SubjectFence()
            await old.publish_batch(items("trades.BTCUSD", range(1, 11)), fence=old_fence)
            # The old leader pauses; a new one takes over from what the stream holds ...
            last = await new.last_messages(LAYOUT.records)
            subject = subjects.record_subject("trades.BTCUSD")
            assert last[subject].stream_seq == 10
            assert last[subject].headers is not None
            cont = subjects.record_id_of_headers(subject, last[subject].headers)
            assert (cont.epoch, cont.seq) == (str(EPOCH), 10)
            new_fence = SubjectFence({s: m.stream_seq for s, m in last.items()})
            won = await new.publish_batch(items("trades.BTCUSD", range(11, 13)), fence=new_fence)
            # ... and the old one wakes up and writes its next records with its old fence.
            stale = await old.publish_batch(
                items("trades.BTCUSD", range(11, 14), epoch=NEXT_EPOCH), fence=old_fence
            )
            count = await old.message_count(LAYOUT.records)

    assert {o.status for o in won} == {PublishStatus.STORED}
    assert [o.status for o in stale] == [
        PublishStatus.FENCED,
        PublishStatus.SKIPPED,
        PublishStatus.SKIPPED,
    ]
    assert "wrong last sequence" in stale[0].error
    assert count == 12


async def test_backpressure_bounds_the_batches_and_keeps_the_order(
    nats_server: NatsServer,
) -> None:
    async with open_bridge(nats_server.url) as bridge:
        await bridge.ensure_streams(LAYOUT)
        with trio.fail_after(20):
            await bridge.publish_batch(items("book.BTCUSD", range(1, 301)), fence=None)
        # A slow trio consumer: the loop thread waits for room instead of buffering all.
        batches = await read(bridge, 300, high_water=16)
    seqs = [d.stream_seq for b in batches for d in b]
    assert seqs == list(range(1, 301))
    assert max(len(b) for b in batches) <= 16


async def test_an_edge_starts_after_a_checkpoint(nats_server: NatsServer) -> None:
    checkpoint = subjects.checkpoint_subject("book.BTCUSD")
    async with open_bridge(nats_server.url) as bridge:
        await bridge.ensure_streams(LAYOUT)
        with trio.fail_after(20):
            await bridge.publish_batch(items("book.BTCUSD", range(1, 21)), fence=None)
            # Two checkpoints of one book: the last-value stream keeps only the later one.
            for seq in (10, 14):
                (item,) = items("book.BTCUSD", range(seq, seq + 1))
                await bridge.publish_batch(
                    [PublishItem(checkpoint, b"%d" % seq, item.record)], fence=None
                )
            kept = await bridge.last_messages(LAYOUT.checkpoints)
            assert await bridge.message_count(LAYOUT.checkpoints) == 1
        assert kept[checkpoint].data == b"14"
        batches = await read(bridge, 6, start_sequence=15)
    assert [d.stream_seq for b in batches for d in b] == list(range(15, 21))


async def test_nats_unreachable_at_start_is_a_clear_bounded_error() -> None:
    port = free_port()  # nothing listens there
    with trio.fail_after(15), pytest.raises(NatsUnavailable, match=f"127.0.0.1:{port}"):
        async with open_bridge(f"nats://127.0.0.1:{port}", connect_timeout=1.0):
            pytest.fail("connected to nothing")


def _connections(server: NatsServer) -> int:
    url = f"http://127.0.0.1:{server.monitor_port}/connz"
    with urllib.request.urlopen(url, timeout=5) as answer:
        count: int = json.load(answer)["num_connections"]
        return count


async def test_cancellation_from_trio_stops_the_thread_and_closes_the_connection(
    nats_server: NatsServer,
) -> None:
    seen: list[NatsBridge] = []
    reading = trio.Event()

    async def edge() -> None:
        async with open_bridge(nats_server.url) as bridge:
            seen.append(bridge)
            await bridge.ensure_streams(LAYOUT)
            async with bridge.ordered_reader(subjects.RECORDS_PREFIX + ">") as reader:
                reading.set()
                await reader.receive()  # nothing comes: blocked here when cancelled

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(edge)
            await reading.wait()
            assert seen[0].thread.is_alive()
            assert _connections(nats_server) == 1
            nursery.cancel_scope.cancel()

    bridge = seen[0]
    assert not bridge.thread.is_alive()
    assert bridge.closed and bridge.state == "closed"
    with trio.fail_after(10):
        while _connections(nats_server) != 0:  # the server notices the close shortly after
            await trio.sleep(0.02)


async def test_cancelled_while_connecting_ends_the_thread() -> None:
    port = free_port()
    with trio.fail_after(15):
        with trio.move_on_after(0.3):
            async with open_bridge(f"nats://127.0.0.1:{port}", connect_timeout=5.0):
                pytest.fail("connected to nothing")
        while any(t.name == "nats-bridge" and t.is_alive() for t in threading.enumerate()):
            await trio.sleep(0.02)


async def test_nats_lost_mid_run_is_a_status_then_recovers(nats_server: NatsServer) -> None:
    states: list[str] = []
    async with open_bridge(nats_server.url, on_state=states.append) as bridge:
        await bridge.ensure_streams(LAYOUT)
        with trio.fail_after(20):
            await bridge.publish_batch(items("trades.BTCUSD", range(1, 3)), fence=None)
        nats_server.stop()
        with trio.fail_after(20):
            while bridge.state != "disconnected":
                await trio.sleep(0.02)
        with trio.fail_after(10):
            lost = await bridge.publish_batch(
                items("trades.BTCUSD", range(3, 4)), fence=None, ack_timeout=0.5
            )
        assert [o.status for o in lost] == [PublishStatus.FAILED]
        # The same server (store and port) comes back: nats-py reconnects, the stream is there.
        again = start_server(nats_server.root, port=nats_server.client_port)
        try:
            with trio.fail_after(30):
                while bridge.state != "connected":
                    await trio.sleep(0.02)
                while True:  # JetStream answers a moment after the client port
                    retry = await bridge.publish_batch(
                        items("trades.BTCUSD", range(3, 4)), fence=None, ack_timeout=1.0
                    )
                    if retry[0].status is not PublishStatus.FAILED:
                        break
                    await trio.sleep(0.1)
                count = await bridge.message_count(LAYOUT.records)
        finally:
            again.stop()
    assert retry[0].status in (PublishStatus.STORED, PublishStatus.DUPLICATE)
    assert count == 3
    assert states[:2] == ["disconnected", "connected"]
