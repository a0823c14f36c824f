"""Catching up: what a subscriber gets before live records of a stream it just joined.

A late joiner gets the stream's initial state (``initial_state``): a book's latest status and
its snapshot at the head, or the last value (and the feed's latest status) of other streams. A
reconnecting subscriber that names its last ``(epoch, seq)`` is resumed from the history ring
instead (``resume``): answered ``resumed`` and sent exactly the records it missed, or, if the
epoch changed, it is ahead of the head or the history no longer holds everything after its
point, answered ``resume_failed`` and sent the initial state (a snapshot marked
``resume_failed``). Both run synchronously inside one hub operation, so what they queue and the
live records that follow meet without a gap or an overlap.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from gateway.contract.protocol import Resumed, ResumeFailed, ResumeFailReason, ResumeFrom
from gateway.fanout.outbox import Subscriber
from gateway.fanout.streams import Stream

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub

__all__ = ["initial_state", "resume"]


def initial_state(hub: Hub, sub: Subscriber, st: Stream, reason: str) -> None:
    """What a subscriber needs before live records: a book's status and snapshot at the
    head, or the last value (and the feed's latest status) of other streams."""
    status = st.last_status
    if st.is_book:
        if status is not None:
            hub.enqueue(sub, status)
        if st.book_ready():
            hub.enqueue(sub, st.snapshot_frame(reason, sub.encoding))
        return
    frames = [f for f in (st.last_data, status) if f is not None]
    for frame in sorted(frames, key=lambda f: f.seq):
        hub.enqueue(sub, frame)


def resume(hub: Hub, sub: Subscriber, st: Stream, point: ResumeFrom) -> None:
    """Serve the records after ``point`` from the history, or refuse and send the initial state."""
    reason: ResumeFailReason | None = None
    if point.epoch != st.epoch:
        reason, text = (
            "epoch_changed",
            (f"epoch {point.epoch} is not the gateway's epoch {st.epoch} (it restarted)"),
        )
    elif point.seq > st.seq:
        reason, text = "ahead_of_head", f"seq {point.seq} is beyond the head {st.seq}"
    else:
        first = st.seq - len(st.history) + 1
        if point.seq < st.seq and point.seq + 1 < first:
            reason, text = (
                "history_exhausted",
                (
                    f"records after {point.seq} are no longer all kept "
                    f"(history starts at {first if st.history else st.seq + 1})"
                ),
            )
    if reason is None:
        hub.stats.resumes_served += 1
        hub.reply(
            sub, Resumed(stream=st.name, epoch=st.epoch, from_seq=point.seq + 1, to_seq=st.seq)
        )
        missed = st.seq - point.seq
        if missed:
            for frame in itertools.islice(st.history, len(st.history) - missed, None):
                hub.enqueue(sub, frame)
        return
    hub.stats.resumes_refused += 1
    hub.reply(
        sub,
        ResumeFailed(stream=st.name, epoch=st.epoch, seq=st.seq, reason=reason, message=text),
    )
    initial_state(hub, sub, st, "resume_failed")
