"""The subscriber protocol, version 2 (sans-IO): requests, responses, stream names, close codes.

A subscriber connects to ``/v1/stream`` (or a shortcut path), picks the encoding of everything
the gateway sends with the query string (``?encoding=json``, the default, or ``?encoding=msgpack``)
and then sends requests; every request gets exactly one answer (``subscribed``, ``unsubscribed``,
``pong``, ``streams`` or ``error``) and the connection stays usable after an error.

Requests are small JSON objects (MessagePack in binary frames on a msgpack connection),
discriminated by ``op``; ``contract.request_parser.parse_request`` turns a frame into one of the
request types here or the ``Error`` to answer with:

    {"op": "subscribe", "id": 1, "streams": ["book.BTCUSD", "trades.*"],
     "resume": {"book.BTCUSD": {"epoch": "1700000000000000000", "seq": 1234}}}
    {"op": "unsubscribe", "id": 2, "streams": ["trades.*"]}
    {"op": "ping", "id": 3}
    {"op": "list", "id": 4}

These types and ``records.py`` are the contract published under ``schemas/`` (``schemagen``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from gateway.contract.records import JS_SAFE_MAX, Epoch, Head, Seq

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_PING_TIMEOUT",
    "CLOSE_SLOW",
    "CLOSE_TRY_AGAIN_LATER",
    "JS_SAFE_MAX",
    "OPS",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
    "STREAM_KINDS",
    "Encoding",
    "Epoch",
    "Error",
    "ErrorCode",
    "Hello",
    "ListRequest",
    "PingRequest",
    "Pong",
    "Request",
    "Response",
    "ResumeFailed",
    "ResumeFrom",
    "Resumed",
    "StreamInfo",
    "StreamList",
    "StreamName",
    "StreamNameError",
    "StreamState",
    "SubscribeRequest",
    "Subscribed",
    "UnsubscribeRequest",
    "Unsubscribed",
    "encoding_from_query",
    "parse_stream",
]

PROTOCOL_VERSION: Final = 2
"""2: ``epoch`` and nanosecond times are digit strings (1: JSON numbers, inexact in JavaScript)."""

# -- close codes (RFC 6455 registry for 1xxx, private range 4000-4999 for ours)
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
"""Gateway shutdown: reason ``gateway shutting down, reconnect elsewhere``."""
CLOSE_MESSAGE_TOO_BIG: Final = 1009
"""A frame beyond the hard frame limit (4 x ``max_request_bytes``); smaller over-size
requests only get a ``too_large`` error."""
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_SLOW: Final = 4008
"""The subscriber's outgoing buffer overflowed and the policy was to disconnect it (or the
stream could not be conflated)."""
CLOSE_PING_TIMEOUT: Final = 4009
"""No pong within ``ping_timeout``: the connection is presumed dead."""

CLOSE_REASON_SHUTDOWN: Final = "gateway shutting down, reconnect elsewhere"
CLOSE_REASON_SLOW: Final = "slow subscriber: buffer overflow"
CLOSE_REASON_PING_TIMEOUT: Final = "ping timeout"


class Encoding(enum.IntEnum):
    """What a connection receives. The values index per-record payload caches in the hub."""

    JSON = 0
    MSGPACK = 1
    PAXOS = 2  # the upstream's own JSON format, on the mirror paths only


def encoding_from_query(value: str | None) -> Encoding | None:
    """``?encoding=`` value -> encoding; None means the value is not a known encoding."""
    if value is None or value == "json":
        return Encoding.JSON
    if value == "msgpack":
        return Encoding.MSGPACK
    return None


# -- stream names
#
# ``<kind>.<key>``: ``trades.BTCUSD``, ``book.BTCUSD``, ``price.USDCUSD``, ``status.<feed>``.
# Either part may be ``*`` (a wildcard over that whole part, never a glob inside it): ``book.*``
# is every book, present and future; ``*.BTCUSD`` every stream of that market; ``*.*`` all.

STREAM_KINDS: Final = ("trades", "book", "price", "status")
_MARKET = re.compile(r"[A-Z0-9]{2,20}")
# Feed names as config.py allows them: they contain no dot, so the first dot splits a name.
_FEED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_STREAM_NAME = 128


class StreamNameError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class StreamName:
    """A parsed stream name or pattern; ``None`` parts are wildcards."""

    kind: str | None
    key: str | None

    @property
    def is_pattern(self) -> bool:
        return self.kind is None or self.key is None

    def matches(self, name: str) -> bool:
        kind, _, key = name.partition(".")
        return (self.kind is None or self.kind == kind) and (self.key is None or self.key == key)

    def __str__(self) -> str:
        return f"{self.kind or '*'}.{self.key or '*'}"


def parse_stream(name: str) -> StreamName:
    """Validate a stream name or pattern; raise ``StreamNameError`` saying what is wrong."""
    if len(name) > MAX_STREAM_NAME:
        raise StreamNameError(f"stream name longer than {MAX_STREAM_NAME} characters")
    kind, dot, key = name.partition(".")
    if not dot:
        raise StreamNameError(
            f"stream {name!r} is not <kind>.<market or feed>, e.g. book.BTCUSD or book.*"
        )
    if kind != "*" and kind not in STREAM_KINDS:
        raise StreamNameError(
            f"stream {name!r}: unknown kind {kind!r}; expected one of {', '.join(STREAM_KINDS)}"
            " or *"
        )
    if key != "*":
        if kind == "status":
            if not _FEED.fullmatch(key):
                raise StreamNameError(f"stream {name!r}: {key!r} is not a feed name")
        elif kind == "*":
            if not (_FEED.fullmatch(key)):
                raise StreamNameError(f"stream {name!r}: {key!r} is not a market or feed name")
        elif not _MARKET.fullmatch(key):
            raise StreamNameError(
                f"stream {name!r}: market {key!r} must be 2-20 upper-case letters and digits"
                " (or * for all)"
            )
    return StreamName(None if kind == "*" else kind, None if key == "*" else key)


# -- requests

RequestId = (
    Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]
    | Annotated[str, msgspec.Meta(max_length=64)]
    | None
)
"""Echoed in the answer. Integers are kept within what a JavaScript client can represent."""

ResumeSeq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
LegacyEpoch = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=2**63 - 1,
        description="Deprecated (protocol v1 form), accepted during the transition to v2: "
        "compared as its decimal digits.",
    ),
]
StreamArg = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STREAM_NAME)]


class ResumeFrom(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The last record a client holds of one stream: it wants everything after ``seq``.

    ``epoch`` is the string the gateway sent. An integer (protocol v1) is still accepted and
    turned into its digits, so a v1 client keeps working (its epoch is exact only if its JSON
    parser kept it exact; a JavaScript client's rounded one never matches)."""

    epoch: Epoch | LegacyEpoch
    seq: ResumeSeq

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, str):
            self.epoch = str(self.epoch)


class _Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="op"):
    id: RequestId = None


class SubscribeRequest(_Request, tag="subscribe", kw_only=True):
    """Start receiving streams (names or patterns). ``resume`` maps concrete stream names (each
    covered by ``streams``) to the last record the client holds."""

    streams: Annotated[list[StreamArg], msgspec.Meta(min_length=1)]
    resume: dict[str, ResumeFrom] | None = None


class UnsubscribeRequest(_Request, tag="unsubscribe", kw_only=True):
    """Stop receiving streams, given exactly as they were subscribed (names or patterns)."""

    streams: Annotated[list[StreamArg], msgspec.Meta(min_length=1)]


class PingRequest(_Request, tag="ping", kw_only=True):
    """Application-level liveness check, answered with ``pong``."""


class ListRequest(_Request, tag="list", kw_only=True):
    """Ask for the streams the gateway currently has, answered with ``streams``."""


Request = SubscribeRequest | UnsubscribeRequest | PingRequest | ListRequest
REQUEST_TYPES: Final = (SubscribeRequest, UnsubscribeRequest, PingRequest, ListRequest)
OPS: Final = frozenset(("subscribe", "unsubscribe", "ping", "list"))


# -- responses (everything the gateway sends that is not a record)


class _Response(msgspec.Struct, kw_only=True, tag_field="type"):
    pass


class Hello(_Response, tag="hello", kw_only=True):
    """First message on every ``/v1`` connection."""

    version: Annotated[int, msgspec.Meta(ge=1)]
    server: str
    epoch: Epoch
    encoding: Literal["json", "msgpack"]
    max_request_bytes: Annotated[int, msgspec.Meta(ge=1, le=JS_SAFE_MAX)]
    max_subscriptions: Annotated[int, msgspec.Meta(ge=1, le=JS_SAFE_MAX)]
    buffer_bytes: Annotated[int, msgspec.Meta(ge=1, le=JS_SAFE_MAX)]
    slow_policy: Literal["conflate", "disconnect"]


class StreamState(msgspec.Struct, kw_only=True):
    """A stream's head: the last published ``seq`` (0: nothing yet) in ``epoch``."""

    stream: str
    epoch: Epoch
    seq: Head


class Subscribed(_Response, tag="subscribed", kw_only=True):
    """Answer to ``subscribe``. ``streams`` are the streams now delivered because of it, with
    their heads at that instant; ``patterns`` the wildcard subscriptions it added, which also
    match streams appearing later (each announced by a ``subscribed`` with ``id`` null).

    After it, per stream: for a resume, ``resumed`` + the missed records or ``resume_failed``;
    then the initial state (a book's snapshot at ``seq``, the last value of other streams,
    records with ``seq`` <= the head); then live records from ``seq + 1`` on."""

    id: RequestId = None
    streams: list[StreamState]
    patterns: list[str]


class Unsubscribed(_Response, tag="unsubscribed", kw_only=True):
    """Answer to ``unsubscribe``; ``streams`` are no longer delivered (none after this)."""

    id: RequestId = None
    streams: list[str]
    patterns: list[str]


ResumeFailReason = Literal["epoch_changed", "history_exhausted", "ahead_of_head"]


class Resumed(_Response, tag="resumed", kw_only=True):
    """The missed records ``from_seq``..``to_seq`` follow, all of them (none if from > to)."""

    stream: str
    epoch: Epoch
    from_seq: Seq
    to_seq: Head


class ResumeFailed(_Response, tag="resume_failed", kw_only=True):
    """The gateway could not replay; the stream restarts from its current state (a book
    snapshot with reason ``resume_failed``, or the last value) at head ``seq``."""

    stream: str
    epoch: Epoch
    seq: Head
    reason: ResumeFailReason
    message: str


class Pong(_Response, tag="pong", kw_only=True):
    id: RequestId = None


class StreamInfo(msgspec.Struct, kw_only=True):
    stream: str
    kind: str
    epoch: Epoch
    seq: Head
    subscribed: bool


class StreamList(_Response, tag="streams", kw_only=True):
    """Answer to ``list``: every stream the gateway has, sorted by name."""

    id: RequestId = None
    streams: list[StreamInfo]


ErrorCode = Literal[
    "too_large",  # request over max_request_bytes
    "malformed",  # not JSON (or MessagePack), not UTF-8, too deeply nested, number out of range
    "invalid_request",  # not an object, missing/unknown fields, wrong types
    "unknown_op",
    "bad_stream",  # a stream name or pattern that is not well formed
    "unknown_stream",  # a well-formed concrete name the gateway does not have
    "too_many_subscriptions",
    "bad_resume",  # resume for a stream not in the request, a pattern, or already subscribed,
    # or a resume point that is not {"epoch": "<digits>", "seq": <integer>}
    "not_subscribed",  # unsubscribe of something this connection did not subscribe
]


class Error(_Response, tag="error", kw_only=True):
    """A request that was refused, and why; nothing of it took effect."""

    id: RequestId = None
    code: ErrorCode
    message: str


Response = Hello | Subscribed | Unsubscribed | Resumed | ResumeFailed | Pong | StreamList | Error
RESPONSE_TYPES: Final = (
    Hello, Subscribed, Unsubscribed, Resumed, ResumeFailed, Pong, StreamList, Error,
)  # fmt: skip
