"""The ingest lease against a real JetStream KV bucket (single node, short TTL).

No assertion is about how fast: the contender's refusals are counted in attempts (more than a
TTL's worth of them while the holder renews), and the takeover is awaited under a generous bound.
"""

from __future__ import annotations

import pytest
import trio

from bench.nats_server import NatsServer
from gateway.cluster.lease import Lease, LeaseRole
from gateway.io.nats_bridge import LeaseConflict, open_bridge
from gateway.io.nats_lease import attempt_once, run_lease

TTL = 1.0
BUCKET = "pgw_lease_test"


async def wait_for(predicate: object, bound: float = 20.0) -> None:
    assert callable(predicate)
    with trio.fail_after(bound):
        while not predicate():
            await trio.sleep(0.02)


async def test_one_holder_a_refused_contender_then_a_takeover(nats_server: NatsServer) -> None:
    a = Lease("ingest-a", ttl=TTL)
    b = Lease("ingest-b", ttl=TTL)
    changes: list[tuple[str, LeaseRole]] = []

    def seen(lease: Lease) -> None:
        changes.append((lease.holder, lease.role))

    async with open_bridge(nats_server.url) as bridge_a, open_bridge(nats_server.url) as bridge_b:
        await bridge_a.ensure_bucket(BUCKET, ttl=TTL, replicas=1)
        async with trio.open_nursery() as nursery:
            holder = trio.CancelScope()

            async def hold() -> None:
                with holder:
                    await run_lease(bridge_a, a, bucket=BUCKET, on_change=seen)

            nursery.start_soon(hold)
            await wait_for(lambda: a.role is LeaseRole.LEADER)
            nursery.start_soon(lambda: run_lease(bridge_b, b, bucket=BUCKET, on_change=seen))

            # More refusals than fit in one TTL (attempts come every TTL/3): the key outlived
            # its TTL because a renewed it, and b never got it.
            await wait_for(lambda: b.conflicts >= 5)
            assert b.role is LeaseRole.STANDBY and b.reason == "held by another"
            assert a.role is LeaseRole.LEADER and a.losses == 0
            revision_a = a.revision
            assert revision_a is not None and a.term is not None

            # a stops renewing (paused, crashed): b takes over once the key's TTL has run out.
            holder.cancel()
            await wait_for(lambda: b.role is LeaseRole.LEADER)
            assert b.term is not None and b.term != a.term

            # The paused former leader wakes up and renews against its last revision: refused.
            with pytest.raises(LeaseConflict):
                await bridge_a.kv_update(BUCKET, "ingest", a.value(), revision_a)
            # Through the state machine: its own TTL bound has passed, so it had stepped down
            # before even asking, and its create is refused while b holds the key.
            assert await attempt_once(bridge_a, a, bucket=BUCKET) is LeaseRole.STANDBY
            assert a.losses == 1 and a.reason == "held by another"
            # A leader paused so long that its clock never saw the bound pass (a stopped VM)
            # still believes it leads: its renew is the revision conflict that ends it.
            frozen = Lease("ingest-a", ttl=3600.0)
            frozen.written(revision_a, sent_at=trio.current_time())
            assert await attempt_once(bridge_a, frozen, bucket=BUCKET) is LeaseRole.STANDBY
            assert frozen.reason.startswith("revision conflict")
            assert b.role is LeaseRole.LEADER
            nursery.cancel_scope.cancel()

    assert changes[0] == ("ingest-a", LeaseRole.LEADER)
    assert ("ingest-b", LeaseRole.LEADER) in changes
