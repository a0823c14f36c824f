from __future__ import annotations

from gateway.cluster.fence import (
    PublishOutcome,
    PublishStatus,
    SubjectFence,
    first_problem,
    lanes,
)
from gateway.cluster.subjects import RecordId


def test_the_fence_starts_from_the_last_sequences_and_follows_the_acks() -> None:
    fence = SubjectFence({"a": 10})
    assert fence.expected("a") == 10
    assert fence.expected("new") == 0  # a subject not loaded at takeover is empty
    fence.stored("a", 12)
    fence.stored("a", 11)  # a late duplicate ack never moves it back
    assert fence.expected("a") == 12
    assert fence.snapshot() == {"a": 12}


def test_lanes_keep_each_subjects_order() -> None:
    batch = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]
    assert lanes(batch, lambda item: item[0]) == [
        [("a", 1), ("a", 2)],
        [("b", 1), ("b", 2)],
        [("c", 1)],
    ]


def test_first_problem() -> None:
    rid = RecordId("1", "a.b", 1)
    ok = [
        PublishOutcome(rid, PublishStatus.STORED, 1),
        PublishOutcome(rid, PublishStatus.DUPLICATE, 1),
    ]
    assert first_problem(ok) is None
    fenced = PublishOutcome(rid, PublishStatus.FENCED, error="wrong last sequence")
    assert first_problem([*ok, fenced]) == fenced
