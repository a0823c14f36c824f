"""An edge waits, bounded, for the seqs a resuming subscriber names (``fanout.resume_ahead``).

Called by the subscriber connection's reader before it hands a request to the hub, only where
``cluster.resume_wait`` is set (an edge). It looks again after every batch the edge applies
(``next_batch``: an event set per batch), at most ``wait`` seconds in all. The request is then
handled as always: resumed if the records came, ``resume_failed`` if not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from gateway.fanout.hub import Hub
from gateway.fanout.outbox import Subscriber
from gateway.fanout.resume_ahead import ahead, resume_points


@dataclass(frozen=True, slots=True)
class ResumeWait:
    """An edge's setting for its subscriber connections: how long, and what to wait on."""

    wait: float  # cluster.resume_wait, s
    next_batch: Callable[[], trio.Event]  # set once the edge's next batch is in the hub


async def wait_for_resume_points(
    hub: Hub,
    sub: Subscriber,
    data: bytes | str,
    wait: float,
    next_batch: Callable[[], trio.Event],
) -> bool:
    """True if it waited (and the points are now served or the wait ran out)."""
    if wait <= 0:
        return False
    points = resume_points(hub, data, sub.encoding)
    if not points or not ahead(hub, points):
        return False
    hub.stats.resume_waits += 1
    with trio.move_on_after(wait):
        while ahead(hub, points):
            await next_batch().wait()
    return True
