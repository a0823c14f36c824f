"""Drives the ingest lease (``gateway.cluster.lease.Lease``) against a JetStream KV bucket.

One trio task per process that may lead: every ``TTL / 3`` it creates the key (standing by) or
renews it against its last revision (leading), each call bounded by that interval, and tells
``on_change`` when the role changes. The state machine decides; this module only times the
calls and carries their answers back. Whoever publishes asks ``lease.is_leader(now)`` before
every batch (and names ``lease.term`` as the writer), so a step-down takes effect at the next
batch even between two of these attempts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import trio

from gateway.cluster.lease import Lease, LeaseRole, Renew
from gateway.cluster.subjects import LEASE_BUCKET, LEASE_KEY
from gateway.io.nats_bridge import BridgeClosed, LeaseConflict, NatsBridge


async def attempt_once(
    bridge: NatsBridge, lease: Lease, *, bucket: str = LEASE_BUCKET, key: str = LEASE_KEY
) -> LeaseRole:
    """One create or renew, its answer applied to ``lease``; the role after it."""
    lease.check(trio.current_time())
    attempt = lease.attempt()
    sent_at = trio.current_time()
    try:
        with trio.fail_after(lease.interval):
            if isinstance(attempt, Renew):
                revision = await bridge.kv_update(bucket, key, lease.value(), attempt.revision)
            else:
                revision = await bridge.kv_create(bucket, key, lease.value())
    except LeaseConflict:
        return lease.conflict()
    except BridgeClosed:
        raise
    except Exception as exc:  # a timeout, a disconnect, a JetStream error: try again
        lease.failed(repr(exc))
        return lease.check(trio.current_time())
    return lease.written(revision, sent_at)


async def run_lease(
    bridge: NatsBridge,
    lease: Lease,
    *,
    bucket: str = LEASE_BUCKET,
    key: str = LEASE_KEY,
    on_change: Callable[[Lease], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Contend for and keep the lease until cancelled (the bucket must exist:
    ``bridge.ensure_bucket``)."""
    task_status.started()
    role = lease.role
    while True:
        started = trio.current_time()
        new_role = await attempt_once(bridge, lease, bucket=bucket, key=key)
        if new_role is not role:
            role = new_role
            if on_change is not None:
                on_change(lease)
        wake = lease.next_attempt_at(started)
        if role is LeaseRole.LEADER:
            wake = min(wake, lease.valid_until())
        await trio.sleep_until(wake)
        if lease.check(trio.current_time()) is not role:
            role = lease.role
            if on_change is not None:
                on_change(lease)
