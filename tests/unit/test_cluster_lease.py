from __future__ import annotations

import pytest

from gateway.cluster.lease import Create, Lease, LeaseRole, Renew


def test_acquire_renew_against_the_last_revision() -> None:
    lease = Lease("a", ttl=3.0)
    assert lease.attempt() == Create()
    assert lease.written(revision=7, sent_at=100.0) is LeaseRole.LEADER
    assert lease.attempt() == Renew(7)
    assert lease.next_attempt_at(100.0) == pytest.approx(101.0)
    lease.written(revision=9, sent_at=101.0)
    assert lease.attempt() == Renew(9)
    assert lease.acquisitions == 1
    assert lease.term == "a:7"  # the term is the acquisition's, renews keep it


def test_a_contender_stays_standby_while_the_key_is_held() -> None:
    lease = Lease("b", ttl=3.0)
    assert lease.conflict() is LeaseRole.STANDBY
    assert lease.reason == "held by another"
    assert lease.attempt() == Create()


def test_a_renew_conflict_loses_the_lease() -> None:
    lease = Lease("a", ttl=3.0)
    lease.written(1, sent_at=0.0)
    assert lease.conflict() is LeaseRole.STANDBY
    assert lease.revision is None and lease.term is None and lease.losses == 1
    assert "conflict" in lease.reason
    assert lease.attempt() == Create()


def test_a_leader_that_cannot_renew_steps_down_before_the_server_expires_the_key() -> None:
    lease = Lease("a", ttl=3.0, safety=0.8)
    lease.written(1, sent_at=10.0)
    assert lease.failed("timeout") is LeaseRole.LEADER  # one missed renew is not a loss
    assert lease.is_leader(12.3)
    # The server expires the key 3 s after it stored the write, which was after 10.0: the
    # leader must have stopped believing before 13.0.
    assert not lease.is_leader(12.4)
    assert lease.valid_until() == 0.0 and lease.losses == 1
    assert lease.reason.startswith("expired")


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Lease("a", ttl=0)
    with pytest.raises(ValueError):
        Lease("a", ttl=1, safety=1.0)


def test_a_released_lease_stands_by_with_the_reason() -> None:
    from gateway.cluster.lease import Lease, LeaseRole

    lease = Lease("ingest-0", ttl=3.0)
    lease.written(7, sent_at=0.0)
    assert lease.released() is LeaseRole.STANDBY
    assert lease.reason.startswith("released") and lease.term is None and lease.losses == 1
