"""A slow subscriber: what the hub does when a subscriber's buffer overflows.

The policy (``[server] slow_policy``):

* ``disconnect``: the buffer is dropped and the subscriber is closed with ``CLOSE_SLOW``.
* ``conflate``: every queued book record of the subscriber is dropped and each affected book
  gets a fresh snapshot (``reason="conflation"``, ``resync=True``) valid at its head, preceded
  by the stream's latest status if that was dropped too. The next record of the stream follows
  the snapshot's ``seq``. Non-book records are never dropped: if the buffer is still over the
  limit after conflation, the subscriber is disconnected as above.

An overflow only starts a conflation (``overflow``: the subscriber's book streams stop
delivering to it); it is settled (``settle``) at the end of the hub operation that caused it,
when every book is at its head again, so the snapshot covers exactly what was dropped or
skipped. Nothing is dropped silently: either a snapshot marked ``conflation`` or a close code.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Literal

from gateway.contract.protocol import CLOSE_REASON_SLOW, CLOSE_SLOW
from gateway.fanout.outbox import FRAMED, OutFrame, Subscriber
from gateway.fanout.streams import Stream

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub

__all__ = ["Conflation", "SlowPolicy"]

SlowPolicy = Literal["conflate", "disconnect"]


class Conflation:
    """The overflow policy of one hub, and the conflations started in its current operation."""

    __slots__ = ("hub", "pending", "policy")

    def __init__(self, hub: Hub, policy: SlowPolicy) -> None:
        self.hub = hub
        self.policy = policy
        self.pending: list[Subscriber] = []  # conflations to settle at the end of the operation

    def overflow(self, sub: Subscriber) -> None:
        if sub.closed or sub.conflating is not None:
            return  # already handled; settled at the end of the current operation
        books = [st for st in sub.streams.values() if st.is_book]
        if self.policy == "disconnect" or not books:
            self.slow(sub)
            return
        # Stop its books' deliveries until settled (it stays subscribed): their records in
        # this call are not queued, and the snapshot built afterwards covers them.
        sub.conflating = {}
        for st in books:
            sub.conflating[st] = st.seq
            st.remove(sub)
        self.pending.append(sub)

    def slow(self, sub: Subscriber, reason: str = CLOSE_REASON_SLOW) -> None:
        self.hub.stats.slow_disconnects += 1
        self.hub.close(sub, CLOSE_SLOW, reason, drain=False)

    def settle(self) -> None:
        """Finish the conflations started during the current operation."""
        hub = self.hub
        pending, self.pending = self.pending, []
        for sub in pending:
            detached = sub.conflating
            sub.conflating = None
            if sub.closed or detached is None:
                continue
            get_framed = FRAMED[sub.encoding]
            detached_names = {st.name: st for st in detached}
            kept: deque[OutFrame] = deque()
            first_dropped: dict[Stream, int] = {}
            size = sub.inflight_bytes
            for frame in sub.queue:
                dropped = detached_names.get(frame.stream) if frame.stream is not None else None
                if dropped is not None:
                    first_dropped.setdefault(dropped, frame.seq)
                else:
                    kept.append(frame)
                    wire = get_framed(frame)
                    assert wire is not None
                    size += len(wire)
            sub.queue = kept
            sub.queued_bytes = size
            for st in sorted(detached, key=lambda s: s.name):
                st.add(sub)
                # The client holds everything up to ``have``; the rest was dropped or skipped.
                have = first_dropped[st] - 1 if st in first_dropped else detached[st]
                if have == st.seq:
                    continue
                if not st.book_ready():
                    self.slow(sub, CLOSE_REASON_SLOW + " (book could not be conflated)")
                    break
                hub.stats.conflations += 1
                status = st.last_status
                if status is not None and status.seq > have:
                    hub.enqueue(sub, status)
                hub.enqueue(sub, st.snapshot_frame("conflation", sub.encoding))
            if not sub.closed and sub.queued_bytes > sub.buffer_bytes:
                self.slow(sub)
            # An enqueue above may have started a new conflation; it is settled as well.
            if sub.conflating is not None:
                sub.conflating = None
                if not sub.closed:
                    self.slow(sub)
        if self.pending:
            self.settle()
