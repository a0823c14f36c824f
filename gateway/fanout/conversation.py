"""One subscriber connection's conversation with the hub: requests in, responses out.

A ``Conversation`` is the protocol state of one connection (h11/wsproto style): what it has
subscribed to (concrete names and patterns) and how each request changes that. A request frame
goes in (``receive``); the answer (``subscribed``, ``unsubscribed``, ``pong``, ``streams`` or an
``error``), followed by whatever catching up the request implies, goes into the subscriber's
outbox through the hub. Mirror connections (Paxos clients) have a conversation too, for their
URL's subscription, but never get a response.

A subscribe is all or nothing: every name and resume point is validated before anything
changes, then the subscriptions are applied, answered, and each new stream is caught up
(``fanout.catchup``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from gateway.contract.protocol import (
    Encoding,
    Error,
    ErrorCode,
    ListRequest,
    PingRequest,
    Pong,
    Request,
    ResumeFrom,
    StreamList,
    StreamName,
    StreamNameError,
    StreamState,
    Subscribed,
    SubscribeRequest,
    Unsubscribed,
    UnsubscribeRequest,
    parse_stream,
)
from gateway.contract.request_parser import parse_request
from gateway.fanout import catchup
from gateway.fanout.outbox import Subscriber
from gateway.fanout.streams import Stream

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub

__all__ = ["Conversation"]


class Conversation:
    __slots__ = ("exact", "hub", "patterns", "sub")

    def __init__(self, hub: Hub, sub: Subscriber) -> None:
        self.hub = hub
        self.sub = sub
        self.exact: set[str] = set()  # subscribed concrete names
        self.patterns: dict[str, StreamName] = {}  # subscribed patterns (and pending names)

    def receive(self, data: bytes | str) -> Error | None:
        """One request frame; the answer goes into the subscriber's buffer. Returns the error
        sent, if any, so the I/O side can log and count it."""
        sub, hub = self.sub, self.hub
        if not sub.responses or sub.closed:
            return None  # mirror clients speak Paxos, which has nothing to say to the server
        request = parse_request(
            data,
            max_bytes=hub.max_request_bytes,
            max_streams=hub.max_subscriptions,
            msgpack=sub.encoding == Encoding.MSGPACK,
        )
        if isinstance(request, Error):
            self.refuse(request)
            return request
        return self.handle(request)

    def handle(self, request: Request) -> Error | None:
        error: Error | None = None
        match request:
            case SubscribeRequest():
                error = self.subscribe(
                    request.streams, resume=request.resume, request_id=request.id
                )
            case UnsubscribeRequest():
                error = self.unsubscribe(request.streams, request_id=request.id)
            case PingRequest():
                self.hub.reply(self.sub, Pong(id=request.id))
            case ListRequest():
                streams = self.hub.stream_list(self.sub)
                self.hub.reply(self.sub, StreamList(id=request.id, streams=streams))
        # Any answer may have taken the buffer over its bound: the request is an operation,
        # and its conflations end with it (``fanout.conflation``), not at some later publish.
        self.hub.settle()
        return error

    def subscribe(
        self,
        names: Iterable[str],
        *,
        resume: Mapping[str, ResumeFrom] | None = None,
        request_id: int | str | None = None,
        wait_for_streams: bool = False,
    ) -> Error | None:
        """Subscribe to stream names and patterns, all or nothing.

        A concrete name must be a stream the hub has, unless ``wait_for_streams`` (URL
        shortcuts and mirror paths, which may be opened before the upstream has produced the
        stream): then it waits like a pattern and is delivered from its first record.
        """
        hub, sub = self.hub, self.sub
        resume = resume or {}
        exact: list[str] = []
        patterns: dict[str, StreamName] = {}
        targets: dict[str, Stream] = {}
        for name in dict.fromkeys(names):
            try:
                parsed = parse_stream(name)
            except StreamNameError as exc:
                return self.refuse_with("bad_stream", str(exc), request_id)
            known = hub.stream(name)
            if parsed.is_pattern:
                patterns[name] = parsed
                for st in hub.streams_by_name():
                    if parsed.matches(st.name):
                        targets.setdefault(st.name, st)
            elif known is not None:
                exact.append(name)
                targets.setdefault(name, known)
            elif wait_for_streams:
                patterns[name] = parsed
            else:
                return self.refuse_with(
                    "unknown_stream",
                    f"no stream {name!r}; send {{\"op\":\"list\"}} for the streams there are",
                    request_id,
                )  # fmt: skip
        count = len(self.exact | set(exact)) + len(self.patterns.keys() | patterns.keys())
        if count > hub.max_subscriptions:
            return self.refuse_with(
                "too_many_subscriptions",
                f"this would make {count} subscriptions; the limit per connection is "
                f"{hub.max_subscriptions}",
                request_id,
            )  # fmt: skip
        for name in resume:
            if name not in targets:
                return self.refuse_with(
                    "bad_resume", f"resume: no stream {name!r} to resume", request_id
                )
            if name in sub.streams:
                return self.refuse_with(
                    "bad_resume",
                    f"resume: {name!r} is already subscribed on this connection", request_id,
                )  # fmt: skip
        # Validated: apply everything, then answer, then each new stream's start.
        self.exact.update(exact)
        for name, parsed in patterns.items():
            if name not in self.patterns:
                self.patterns[name] = parsed
                hub.patterns.watch(name, parsed, sub)
        new = [st for st in targets.values() if st.name not in sub.streams]
        for st in new:
            hub.attach(sub, st)
        hub.reply(
            sub,
            Subscribed(
                id=request_id,
                streams=[
                    StreamState(stream=s.name, epoch=s.epoch, seq=s.seq) for s in targets.values()
                ],
                patterns=list(patterns),
            ),
        )
        for st in new:
            point = resume.get(st.name)
            if point is None:
                catchup.initial_state(hub, sub, st, "subscribe")
            else:
                catchup.resume(hub, sub, st, point)
        hub.settle()
        return None

    def unsubscribe(
        self, names: Iterable[str], *, request_id: int | str | None = None
    ) -> Error | None:
        hub, sub = self.hub, self.sub
        names = list(dict.fromkeys(names))
        for name in names:
            if name not in self.exact and name not in self.patterns:
                return self.refuse_with(
                    "not_subscribed", f"{name!r} is not subscribed on this connection",
                    request_id,
                )  # fmt: skip
        removed_patterns = []
        for name in names:
            if name in self.exact:
                self.exact.discard(name)
            else:
                del self.patterns[name]
                hub.patterns.forget(sub, name)
                removed_patterns.append(name)
        gone = [
            st
            for name, st in sorted(sub.streams.items())
            if name not in self.exact and not any(p.matches(name) for p in self.patterns.values())
        ]
        for st in gone:
            hub.detach(sub, st)
        hub.reply(
            sub,
            Unsubscribed(
                id=request_id, streams=[st.name for st in gone], patterns=removed_patterns
            ),
        )
        hub.settle()
        return None

    def forget(self) -> None:
        """Drop every subscription (the subscriber is closed or gone)."""
        for name in self.patterns:
            self.hub.patterns.forget(self.sub, name)
        self.patterns.clear()
        self.exact.clear()

    def refuse(self, error: Error) -> None:
        self.hub.stats.count_request_error(error.code)
        self.hub.reply(self.sub, error)
        self.hub.settle()

    def refuse_with(self, code: ErrorCode, message: str, request_id: int | str | None) -> Error:
        error = Error(id=request_id, code=code, message=message)
        self.refuse(error)
        return error
