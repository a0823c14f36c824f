"""Whether a subscribe's resume points are ahead of this hub: an edge a few ms behind the leader.

Every edge serves the same ``(epoch, seq)``, so a subscriber that moves from one edge to
another may name a seq this edge has not applied yet. Refusing it (``ahead_of_head``) would
cost a snapshot for nothing; the I/O side (``io.resume_wait``) waits a bounded time while
``ahead`` holds, then hands the request to the hub as usual.

Ahead means: the stream is not known here yet, or it is in the same epoch with a lower head,
or the point's epoch is newer than the stream's (this edge has not seen the new epoch yet;
epochs are a leader's ``time_ns`` digits, so newer is larger). A point of an older epoch is not
waited for: it can never be served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.contract.protocol import Encoding, ResumeFrom, SubscribeRequest
from gateway.contract.request_parser import parse_request

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub

__all__ = ["ahead", "resume_points"]


def resume_points(hub: Hub, data: bytes | str, encoding: Encoding) -> dict[str, ResumeFrom]:
    """The resume points of a subscribe request frame (empty for anything else)."""
    marker: bytes | str = b"resume" if isinstance(data, bytes) else "resume"
    if marker not in data:  # type: ignore[operator]
        return {}
    request = parse_request(
        data,
        max_bytes=hub.max_request_bytes,
        max_streams=hub.max_subscriptions,
        msgpack=encoding == Encoding.MSGPACK,
    )
    if not isinstance(request, SubscribeRequest) or not request.resume:
        return {}
    return dict(request.resume)


def ahead(hub: Hub, points: dict[str, ResumeFrom]) -> bool:
    for name, point in points.items():
        st = hub.stream(name)
        if st is None:
            return True
        epoch = str(point.epoch)
        if epoch == st.epoch:
            if point.seq > st.seq:
                return True
        elif epoch.isdigit() and st.epoch.isdigit() and int(epoch) > int(st.epoch):
            return True
    return False
