"""What a new ingest leader continues from: the epoch, each stream's last seq, the fence.

At acquisition the leader reads the last message of every ``PGW`` subject. The message written
last (the highest JetStream sequence) names the epoch the cluster is in; every gateway stream
whose last record is of that epoch continues at its seq + 1, so a subscriber resumes across the
failover. Streams whose last record is of an older epoch were not written in this one: they
start at 1 in it, as they would have under the former leader. Only an empty (or lost) ``PGW``
proves nothing, and then the leader takes a new epoch: clients get ``resume_failed`` and a
snapshot, never a partial replay.

Every subject, whatever its epoch or headers, is in the fence: the next write there must name
its last JetStream sequence (``fence.SubjectFence``).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from gateway.cluster.subjects import SubjectError, record_id_of_headers

__all__ = ["Takeover", "plan_takeover"]


class Takeover(msgspec.Struct, frozen=True):
    epoch: str
    # gateway stream -> last seq published in ``epoch`` (continue at + 1)
    heads: dict[str, int]
    # subject -> JetStream sequence of its last message (the fence's start)
    fence: dict[str, int]
    # False: nothing to continue, ``epoch`` is the new one given
    continued: bool
    # subjects whose last message lacks readable ids (counted and logged by the caller)
    unreadable: tuple[str, ...] = ()


def plan_takeover(
    last: Iterable[tuple[str, int, dict[str, str] | None]], new_epoch: str
) -> Takeover:
    """``last``: per ``PGW`` subject, its last message's JetStream sequence and headers."""
    fence: dict[str, int] = {}
    found: list[tuple[int, str, str, int]] = []  # (stream_seq, epoch, stream, seq)
    unreadable: list[str] = []
    for subject, stream_seq, headers in last:
        fence[subject] = stream_seq
        try:
            record = record_id_of_headers(subject, headers)
        except SubjectError:
            unreadable.append(subject)
            continue
        found.append((stream_seq, record.epoch, record.stream, record.seq))
    if not found:
        return Takeover(new_epoch, {}, fence, continued=False, unreadable=tuple(unreadable))
    epoch = max(found)[1]
    heads = {stream: seq for _, e, stream, seq in found if e == epoch}
    return Takeover(epoch, heads, fence, continued=True, unreadable=tuple(unreadable))
