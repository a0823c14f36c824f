"""The leader's fencing token per subject, and what a publish's ack means.

Every publish names the JetStream sequence of the leader's own last write on that subject
(``Nats-Expected-Last-Subject-Sequence``). If anything else wrote there since, a newer leader,
JetStream rejects the publish with error 10071 "wrong last sequence" and the old leader knows
it is stale before a single record of it is stored out of place. The price: the writes of one
subject are serial (the next expected sequence is only known from the previous ack), so a batch
is published as one *lane* per subject, lanes concurrently. The design study measured that at
9,475 records/s over 10 subjects on this kind of 2-core machine, against Paxos feed rates of a
few hundred per second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

import msgspec

from gateway.cluster.subjects import RecordId

T = TypeVar("T")


class SubjectFence:
    """Per subject, the JetStream sequence of this leader's last write.

    Built at takeover from the stream's last sequence of every subject (a subject not given is
    empty: expected 0), then moved on by every stored ack.
    """

    def __init__(self, last_sequences: Mapping[str, int] | None = None) -> None:
        self._last: dict[str, int] = dict(last_sequences or {})

    def expected(self, subject: str) -> int:
        return self._last.get(subject, 0)

    def stored(self, subject: str, stream_seq: int) -> None:
        # Acks of one lane arrive in order; max() keeps a late duplicate ack from moving it back.
        self._last[subject] = max(self._last.get(subject, 0), stream_seq)

    def snapshot(self) -> dict[str, int]:
        return dict(self._last)


def lanes(items: Iterable[T], subject_of: Callable[[T], str]) -> list[list[T]]:
    """Split a batch into one lane per subject, each in the batch's order, lanes by first use."""
    by_subject: dict[str, list[T]] = {}
    for item in items:
        by_subject.setdefault(subject_of(item), []).append(item)
    return list(by_subject.values())


class PublishStatus(StrEnum):
    STORED = "stored"  # a new message; stream_seq is its JetStream sequence
    DUPLICATE = "duplicate"  # the id was already stored (a retry): stream_seq is the original's
    FENCED = "fenced"  # wrong last sequence: another writer holds the subject; step down
    FAILED = "failed"  # no ack (timeout, disconnect, other API error): retry with the same id
    SKIPPED = "skipped"  # not sent: an earlier record of its lane was fenced or failed


class PublishOutcome(msgspec.Struct, frozen=True):
    record: RecordId
    status: PublishStatus
    stream_seq: int = 0
    error: str = ""


def first_problem(outcomes: Sequence[PublishOutcome]) -> PublishOutcome | None:
    """The first outcome that is neither stored nor a duplicate, if any."""
    for outcome in outcomes:
        if outcome.status not in (PublishStatus.STORED, PublishStatus.DUPLICATE):
            return outcome
    return None
