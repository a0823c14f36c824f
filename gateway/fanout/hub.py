"""The fan-out core (sans-IO): streams, history, subscriptions, per-subscriber buffers, policy.

``publish`` is called by the upstream task right after ``FeedNormalizer.receive`` with no checkpoint
in between, so whenever the hub runs, every registered ``OrderBook`` is at its stream's head. All
hub operations are synchronous; a late joiner's snapshot and the records published after it are
therefore gap- and overlap-free without a lock.

Encoding happens once per record per encoding in use: a record becomes one ``OutFrame`` whose
cache of complete WebSocket frames (header + payload, ``delivery.build_frame``: server frames are
unmasked, so the bytes are the same for every subscriber) is filled the first time an encoding
needs it, and every subscriber's buffer holds a reference to that same frame. The hot path per
delivery is a deque append and an integer add; the I/O side takes a subscriber's whole backlog
as one joined chunk (``Subscriber.take_framed``).

Each subscriber has a bounded outgoing buffer (frame bytes queued plus bytes in flight in the
writer). When it overflows, the policy applies:

* ``disconnect``: the buffer is dropped and the subscriber is closed with ``CLOSE_SLOW``.
* ``conflate``: every queued book record of the subscriber is dropped and each affected book
  gets a fresh snapshot (``reason="conflation"``, ``resync=True``) valid at its head, preceded
  by the stream's latest status if that was dropped too. The next record of the stream follows
  the snapshot's ``seq``. Non-book records are never dropped: if the buffer is still over the
  limit after conflation, the subscriber is disconnected as above. Conflation is settled at
  the end of the ``publish`` call, when every book is at the head again.

Nothing is dropped silently: either a snapshot marked ``conflation`` or a close code.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Final, Literal, Protocol

import msgspec

from gateway import __version__
from gateway.contract.protocol import (
    CLOSE_REASON_SLOW,
    CLOSE_SLOW,
    PROTOCOL_VERSION,
    Encoding,
    Error,
    ErrorCode,
    Hello,
    ListRequest,
    PingRequest,
    Pong,
    Request,
    Response,
    Resumed,
    ResumeFailed,
    ResumeFailReason,
    ResumeFrom,
    StreamInfo,
    StreamList,
    StreamName,
    StreamNameError,
    StreamState,
    Subscribed,
    SubscribeRequest,
    Unsubscribed,
    UnsubscribeRequest,
    parse_request,
    parse_stream,
)
from gateway.contract.records import BookSnapshot, BookUpdate, Record, Status
from gateway.fanout import mirror
from gateway.ingest import decimals
from gateway.ingest.book import OrderBook
from gateway.io.delivery import OP_BINARY, OP_TEXT, build_frame

if TYPE_CHECKING:
    from gateway.io.metrics import Metrics

__all__ = ["Hub", "HubStats", "OutFrame", "SlowPolicy", "Subscriber"]

SlowPolicy = Literal["conflate", "disconnect"]

_json_encoder: Final = msgspec.json.Encoder(enc_hook=decimals.enc_hook)
_msgpack_encoder: Final = msgspec.msgpack.Encoder(enc_hook=decimals.enc_hook)
_ENCODINGS: Final = tuple(Encoding)

# The writer takes at most this much per batch (at least one frame), so bytes in flight stay
# bounded and a conflation can still reach most of a backlog.
DEFAULT_BATCH_BYTES: Final = 256 * 1024


def _header_length(wire: bytes) -> int:
    n = wire[1] & 0x7F
    return 2 if n < 126 else 4 if n == 126 else 10


class OutFrame(msgspec.Struct, gc=False):
    """One outgoing message, encoded and framed once per encoding, lazily, and then shared.

    ``wire(encoding)``: the complete WebSocket frame (text for JSON and Paxos, binary for
    MessagePack), built on first use and kept in the field of that encoding; ``b""`` means
    "nothing to send in this encoding" (e.g. a status record on a Paxos mirror). ``payloads``
    caches the message alone (``str`` for text frames, ``bytes`` for binary ones), for the
    ``send_message`` fallback only.

    Not tracked by the cyclic garbage collector (``gc=False``, and records are too): the
    history holds tens of thousands of frames, and with them tracked every full collection
    walked them all, a pause of 15-20 ms every few seconds at 1,000 messages/s, which set the
    fan-out's p99 latency (measured: p99 2.7 ms and p99.9 18.6 ms at N=100, against 1.1 and
    1.8 with the collector off). A frame refers to nothing that could lead back to it: its
    stream by name, its message, bytes.
    """

    message: Record | Response
    stream: str | None  # the stream's name; None: a response to one subscriber
    seq: int
    json: bytes | None = None
    msgpack: bytes | None = None
    paxos: bytes | None = None
    payloads: list[str | bytes | None] | None = None

    def framed(self, encoding: Encoding) -> bytes:
        w = _FRAMED[encoding](self)
        return self.encode(encoding) if w is None else w

    def payload(self, encoding: Encoding) -> str | bytes:
        if self.payloads is None:
            self.payloads = [None, None, None]
        p = self.payloads[encoding]
        if p is None:
            wire = self.framed(encoding)
            body = wire[_header_length(wire) :] if wire else b""
            p = body if encoding == Encoding.MSGPACK else body.decode()
            self.payloads[encoding] = p
        return p

    def encode(self, encoding: Encoding) -> bytes:
        message = self.message
        w: bytes
        if encoding == Encoding.JSON:
            w = self.json = build_frame(_json_encoder.encode(message), OP_TEXT)
        elif encoding == Encoding.MSGPACK:
            w = self.msgpack = build_frame(_msgpack_encoder.encode(message), OP_BINARY)
        else:
            # Responses (no stream) have no Paxos form; mirror subscribers never get them.
            text = None if self.stream is None else mirror.encode_record(message)
            w = self.paxos = build_frame(text.encode(), OP_TEXT) if text else b""
        return w

    def __repr__(self) -> str:
        return f"OutFrame({self.message!r})"


# A frame's wire in an encoding (an Encoding indexes this), without building it.
_FRAMED: Final[tuple[Callable[[OutFrame], bytes | None], ...]] = (
    attrgetter("json"),
    attrgetter("msgpack"),
    attrgetter("paxos"),
)


class Subscriber:
    """One connection's state in the hub. The I/O side sets ``on_ready`` (called when the
    buffer goes from empty to non-empty), drains with ``take``/``sent`` and closes the socket
    with ``close_code``/``close_reason`` once those are set and the buffer is empty."""

    __slots__ = (
        "buffer_bytes", "close_code", "close_reason", "conflating", "encoding", "exact", "id",
        "inflight_bytes", "on_ready", "patterns", "queue", "queued_bytes", "responses",
        "streams",
    )  # fmt: skip

    def __init__(self, sub_id: int, encoding: Encoding, buffer_bytes: int, responses: bool) -> None:
        self.id = sub_id
        self.encoding = encoding
        self.buffer_bytes = buffer_bytes
        self.responses = responses  # False on mirror paths: Paxos clients get data only
        self.queue: deque[OutFrame] = deque()
        self.queued_bytes = 0  # queued plus in flight: the amount the limit applies to
        self.inflight_bytes = 0
        self.streams: dict[str, _Stream] = {}  # streams delivered now
        self.exact: set[str] = set()  # subscribed concrete names
        self.patterns: dict[str, StreamName] = {}  # subscribed patterns (and pending names)
        self.conflating: dict[_Stream, int] | None = None  # book stream -> head when detached
        self.close_code: int | None = None
        self.close_reason = ""
        self.on_ready: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def take(self, max_bytes: int = DEFAULT_BATCH_BYTES) -> list[str | bytes]:
        """Pop queued payloads (at least one if any, then up to ``max_bytes``) for sending.
        Their bytes stay counted against the buffer until ``sent``."""
        queue = self.queue
        encoding = self.encoding
        get_framed = _FRAMED[encoding]
        out: list[str | bytes] = []
        total = self.inflight_bytes
        while queue and (not out or total < max_bytes):
            frame = queue.popleft()
            wire = get_framed(frame)
            assert wire  # only frames with something to send in this encoding are queued
            out.append(frame.payload(encoding))
            total += len(wire)
        self.inflight_bytes = total
        return out

    def take_framed(self, max_bytes: int = DEFAULT_BATCH_BYTES) -> bytes | None:
        """Like ``take``, but the complete WebSocket frames, joined into one chunk (None when
        nothing is queued): one write for a whole backlog."""
        queue = self.queue
        if not queue:
            return None
        get_framed = _FRAMED[self.encoding]
        wire = get_framed(queue.popleft())
        assert wire
        total = self.inflight_bytes + len(wire)
        if not queue or total >= max_bytes:
            self.inflight_bytes = total
            return wire
        parts = [wire]
        while queue and total < max_bytes:
            wire = get_framed(queue.popleft())
            assert wire
            parts.append(wire)
            total += len(wire)
        self.inflight_bytes = total
        return b"".join(parts)

    def sent(self) -> None:
        """The payloads from the last ``take`` are written to the socket."""
        self.queued_bytes -= self.inflight_bytes
        self.inflight_bytes = 0

    def __repr__(self) -> str:
        return f"Subscriber({self.id}, {self.encoding.name}, queued={self.queued_bytes})"


class _Stream:
    __slots__ = (
        "book", "epoch", "groups", "history", "is_book", "key", "kind", "last_data",
        "last_status", "name", "own_book", "receive_time", "seq", "snapshot_cache",
        "subscribers",
    )  # fmt: skip

    def __init__(self, name: str, epoch: str, history: int) -> None:
        self.name = name
        self.kind, _, self.key = name.partition(".")
        self.is_book = self.kind == "book"
        self.seq = 0
        self.epoch = epoch
        self.receive_time = "0"
        self.history: deque[OutFrame] = deque(maxlen=history)
        self.last_data: OutFrame | None = None
        self.last_status: OutFrame | None = None
        self.book: OrderBook | None = None
        # Kept only while no session book is registered, so late joiners of a book stream fed
        # by publish() alone still get a correct snapshot.
        self.own_book: OrderBook | None = None
        if self.is_book:
            self.book = self.own_book = OrderBook(self.key)
        self.subscribers: set[Subscriber] = set()
        # Per encoding in use: its subscribers, in attach order. Replaced, never mutated, so
        # publish can go on iterating while a subscriber is detached mid-call.
        self.groups: tuple[tuple[Encoding, list[Subscriber]], ...] = ()
        self.snapshot_cache: dict[tuple[str, Encoding], OutFrame] = {}

    def add(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            return
        self.subscribers.add(sub)
        groups = dict(self.groups)
        groups[sub.encoding] = [*groups.get(sub.encoding, ()), sub]
        self.groups = tuple(sorted(groups.items()))

    def remove(self, sub: Subscriber) -> None:
        if sub not in self.subscribers:
            return
        self.subscribers.discard(sub)
        groups = ((enc, [s for s in subs if s is not sub]) for enc, subs in self.groups)
        self.groups = tuple((enc, subs) for enc, subs in groups if subs)

    def book_ready(self) -> bool:
        return self.book is not None and self.book.has_snapshot


@dataclass(slots=True)
class HubStats:
    """Plain counters (the sans-IO side never touches Prometheus)."""

    records: int = 0
    deliveries: int = 0
    conflations: int = 0
    resumes_served: int = 0
    resumes_refused: int = 0
    slow_disconnects: int = 0
    sequence_breaks: int = 0  # a record whose seq did not follow its stream's head
    book_errors: int = 0  # records the hub's own fallback book could not apply
    request_errors: int = 0


class HubSettings(Protocol):
    """The ``[server]`` fields the hub uses (``config.ServerConfig`` has them)."""

    @property
    def history(self) -> int: ...
    @property
    def buffer_bytes(self) -> int: ...
    @property
    def slow_policy(self) -> SlowPolicy: ...
    @property
    def max_subscriptions(self) -> int: ...
    @property
    def max_request_bytes(self) -> int: ...


class Hub:
    def __init__(
        self,
        epoch: str,
        *,
        history: int = 10000,
        buffer_bytes: int = 4 * 1024 * 1024,
        slow_policy: SlowPolicy = "conflate",
        max_subscriptions: int = 1000,
        max_request_bytes: int = 65536,
        metrics: Metrics | None = None,
        monotonic_ns: Callable[[], int] | None = None,
    ) -> None:
        if slow_policy not in ("conflate", "disconnect"):
            raise ValueError(f"slow_policy must be conflate or disconnect, not {slow_policy!r}")
        self.epoch = epoch
        self.history = history
        self.buffer_bytes = buffer_bytes
        self.slow_policy: SlowPolicy = slow_policy
        self.max_subscriptions = max_subscriptions
        self.max_request_bytes = max_request_bytes
        self.stats = HubStats()
        self._metrics = metrics
        # Injected, so this module stays clock-free; only used for the publish latency metric.
        self._monotonic_ns = monotonic_ns
        self._streams: dict[str, _Stream] = {}
        self._patterns: dict[str, tuple[StreamName, set[Subscriber]]] = {}
        self._subscribers: set[Subscriber] = set()
        self._ids = itertools.count(1)
        self._pending: list[Subscriber] = []

    @classmethod
    def from_config(
        cls,
        settings: HubSettings,
        epoch: str,
        *,
        metrics: Metrics | None = None,
        monotonic_ns: Callable[[], int] | None = None,
    ) -> Hub:
        return cls(
            epoch,
            history=settings.history,
            buffer_bytes=settings.buffer_bytes,
            slow_policy=settings.slow_policy,
            max_subscriptions=settings.max_subscriptions,
            max_request_bytes=settings.max_request_bytes,
            metrics=metrics,
            monotonic_ns=monotonic_ns,
        )

    # -- the upstream side ---------------------------------------------------------------

    def declare_stream(self, name: str) -> None:
        """Make a stream known before its first record (e.g. from ``FeedNormalizer.streams()``),
        so subscribers can name it at once."""
        if name not in self._streams:
            self._create_stream(name)

    def register_book(self, stream: str, book: OrderBook) -> None:
        """The session's book of a book stream: late joiners get snapshots built from it."""
        st = self._streams.get(stream) or self._create_stream(stream)
        st.book = book
        st.own_book = None
        st.snapshot_cache.clear()

    def publish(self, records: Sequence[Record], received_monotonic_ns: int | None = None) -> None:
        """Append records to their streams and to every subscriber's buffer."""
        streams = self._streams
        deliveries = 0
        kinds: dict[str, int] = {}
        for record in records:
            st = streams.get(record.stream)
            if st is None:
                st = self._create_stream(record.stream)
            seq = record.seq
            if seq != st.seq + 1:
                # History must be contiguous, or a resume could claim records it lacks.
                self.stats.sequence_breaks += 1
                st.history.clear()
            st.seq = seq
            st.epoch = record.epoch
            st.receive_time = record.receive_time
            frame = OutFrame(record, st.name, seq)
            st.history.append(frame)
            if type(record) is Status:
                st.last_status = frame
            else:
                st.last_data = frame
            if st.own_book is not None:
                self._apply_own(st.own_book, record)
            kinds[st.kind] = kinds.get(st.kind, 0) + 1
            for encoding, subs in st.groups:
                wire = frame.encode(encoding)
                if not wire:
                    continue
                size = len(wire)
                deliveries += len(subs)
                for sub in subs:
                    queue = sub.queue
                    if not queue and sub.on_ready is not None:
                        sub.on_ready()
                    queue.append(frame)
                    sub.queued_bytes += size
                    if sub.queued_bytes > sub.buffer_bytes:
                        self._overflow(sub)
        if self._pending:
            self._settle()
        self.stats.records += len(records)
        self.stats.deliveries += deliveries
        metrics = self._metrics
        if metrics is not None:
            for kind, n in kinds.items():
                metrics.records_published.labels(kind).inc(n)
            if deliveries:
                metrics.deliveries.inc(deliveries)
            if received_monotonic_ns is not None and self._monotonic_ns is not None:
                latency = (self._monotonic_ns() - received_monotonic_ns) / 1e9
                metrics.publish_latency.observe(max(latency, 0.0))

    def _apply_own(self, book: OrderBook, record: Record) -> None:
        try:
            if type(record) is BookUpdate:
                book.apply(record.side, record.price, record.amount)
            elif type(record) is BookSnapshot:
                book.replace(record.bids, record.asks)
        except ValueError:
            self.stats.book_errors += 1

    # -- the subscriber side -------------------------------------------------------------

    def connect(self, encoding: Encoding = Encoding.JSON, *, hello: bool = True) -> Subscriber:
        """A new subscriber. ``hello=False`` for mirror connections: no responses at all."""
        sub = Subscriber(next(self._ids), encoding, self.buffer_bytes, responses=hello)
        self._subscribers.add(sub)
        if hello:
            self._reply(
                sub,
                Hello(
                    version=PROTOCOL_VERSION,
                    server=f"paxos-gateway/{__version__}",
                    epoch=self.epoch,
                    encoding="msgpack" if encoding == Encoding.MSGPACK else "json",
                    max_request_bytes=self.max_request_bytes,
                    max_subscriptions=self.max_subscriptions,
                    buffer_bytes=self.buffer_bytes,
                    slow_policy=self.slow_policy,
                ),
            )
        return sub

    def disconnect(self, sub: Subscriber) -> None:
        """The connection is gone: forget the subscriber. Idempotent."""
        self._detach_all(sub)
        sub.queue.clear()
        sub.queued_bytes = sub.inflight_bytes = 0
        self._subscribers.discard(sub)

    def close(self, sub: Subscriber, code: int, reason: str, *, drain: bool = True) -> None:
        """Stop delivering to ``sub`` and ask the I/O side to close it with ``code`` once the
        buffer is sent (``drain``) or at once. Used for shutdown and slow subscribers."""
        if sub.close_code is not None:
            return
        sub.close_code = code
        sub.close_reason = reason
        self._detach_all(sub)
        if not drain:
            sub.queue.clear()
            sub.queued_bytes = sub.inflight_bytes
        if sub.on_ready is not None:
            sub.on_ready()

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    def receive(self, sub: Subscriber, data: bytes | str) -> Error | None:
        """One request frame from ``sub``; the answer goes into its buffer. Returns the error
        sent, if any, so the I/O side can log and count it."""
        if not sub.responses or sub.closed:
            return None  # mirror clients speak Paxos, which has nothing to say to the server
        request = parse_request(
            data,
            max_bytes=self.max_request_bytes,
            max_streams=self.max_subscriptions,
            msgpack=sub.encoding == Encoding.MSGPACK,
        )
        if isinstance(request, Error):
            self._refuse(sub, request)
            return request
        return self.handle(sub, request)

    def handle(self, sub: Subscriber, request: Request) -> Error | None:
        match request:
            case SubscribeRequest():
                return self.subscribe(
                    sub, request.streams, resume=request.resume, request_id=request.id
                )
            case UnsubscribeRequest():
                return self.unsubscribe(sub, request.streams, request_id=request.id)
            case PingRequest():
                self._reply(sub, Pong(id=request.id))
            case ListRequest():
                self._reply(sub, StreamList(id=request.id, streams=self.stream_list(sub)))
        return None

    def subscribe(
        self,
        sub: Subscriber,
        names: Iterable[str],
        *,
        resume: Mapping[str, ResumeFrom] | None = None,
        request_id: int | str | None = None,
        wait_for_streams: bool = False,
    ) -> Error | None:
        """Subscribe ``sub`` to stream names and patterns, all or nothing.

        A concrete name must be a stream the hub has, unless ``wait_for_streams`` (URL
        shortcuts and mirror paths, which may be opened before the upstream has produced the
        stream): then it waits like a pattern and is delivered from its first record.
        """
        resume = resume or {}
        exact: list[str] = []
        patterns: dict[str, StreamName] = {}
        targets: dict[str, _Stream] = {}
        for name in dict.fromkeys(names):
            try:
                parsed = parse_stream(name)
            except StreamNameError as exc:
                return self._refuse_with(sub, "bad_stream", str(exc), request_id)
            if parsed.is_pattern:
                patterns[name] = parsed
                for st in sorted(self._streams.values(), key=lambda s: s.name):
                    if parsed.matches(st.name):
                        targets.setdefault(st.name, st)
            elif name in self._streams:
                exact.append(name)
                targets.setdefault(name, self._streams[name])
            elif wait_for_streams:
                patterns[name] = parsed
            else:
                return self._refuse_with(
                    sub, "unknown_stream",
                    f"no stream {name!r}; send {{\"op\":\"list\"}} for the streams there are",
                    request_id,
                )  # fmt: skip
        count = len(sub.exact | set(exact)) + len(sub.patterns.keys() | patterns.keys())
        if count > self.max_subscriptions:
            return self._refuse_with(
                sub, "too_many_subscriptions",
                f"this would make {count} subscriptions; the limit per connection is "
                f"{self.max_subscriptions}",
                request_id,
            )  # fmt: skip
        for name in resume:
            if name not in targets:
                return self._refuse_with(
                    sub, "bad_resume", f"resume: no stream {name!r} to resume", request_id
                )
            if name in sub.streams:
                return self._refuse_with(
                    sub, "bad_resume",
                    f"resume: {name!r} is already subscribed on this connection", request_id,
                )  # fmt: skip
        # Validated: apply everything, then answer, then each new stream's start.
        sub.exact.update(exact)
        for name, parsed in patterns.items():
            if name not in sub.patterns:
                sub.patterns[name] = parsed
                self._patterns.setdefault(name, (parsed, set()))[1].add(sub)
        new = [st for st in targets.values() if st.name not in sub.streams]
        for st in new:
            self._attach(sub, st)
        self._reply(
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
                self._initial_state(sub, st, "subscribe")
            else:
                self._resume(sub, st, point)
        self._settle()
        return None

    def unsubscribe(
        self, sub: Subscriber, names: Iterable[str], *, request_id: int | str | None = None
    ) -> Error | None:
        names = list(dict.fromkeys(names))
        for name in names:
            if name not in sub.exact and name not in sub.patterns:
                return self._refuse_with(
                    sub, "not_subscribed", f"{name!r} is not subscribed on this connection",
                    request_id,
                )  # fmt: skip
        removed_patterns = []
        for name in names:
            if name in sub.exact:
                sub.exact.discard(name)
            else:
                del sub.patterns[name]
                self._forget_pattern(sub, name)
                removed_patterns.append(name)
        gone = [
            st
            for name, st in sorted(sub.streams.items())
            if name not in sub.exact and not any(p.matches(name) for p in sub.patterns.values())
        ]
        for st in gone:
            self._detach(sub, st)
        self._reply(
            sub,
            Unsubscribed(
                id=request_id, streams=[st.name for st in gone], patterns=removed_patterns
            ),
        )
        return None

    def stream_list(self, sub: Subscriber | None = None) -> list[StreamInfo]:
        return [
            StreamInfo(
                stream=st.name,
                kind=st.kind,
                epoch=st.epoch,
                seq=st.seq,
                subscribed=sub is not None and st.name in sub.streams,
            )
            for st in sorted(self._streams.values(), key=lambda s: s.name)
        ]

    def head(self, stream: str) -> int:
        """The stream's last published ``seq`` (0: none or unknown)."""
        st = self._streams.get(stream)
        return 0 if st is None else st.seq

    def snapshot(self, stream: str, reason: str = "subscribe") -> BookSnapshot | None:
        """The book of a book stream as a snapshot valid at its head, if it has one."""
        st = self._streams.get(stream)
        if st is None or not st.book_ready():
            return None
        return self._build_snapshot(st, reason)

    # -- internals -----------------------------------------------------------------------

    def _create_stream(self, name: str) -> _Stream:
        st = self._streams[name] = _Stream(name, self.epoch, self.history)
        for parsed, subs in list(self._patterns.values()):
            if parsed.matches(name):
                for sub in sorted(subs, key=lambda s: s.id):
                    if name not in sub.streams:
                        self._attach(sub, st)
                        # A new stream starts at its first record: nothing to catch up on.
                        self._reply(
                            sub,
                            Subscribed(
                                streams=[StreamState(stream=name, epoch=st.epoch, seq=st.seq)],
                                patterns=[],
                            ),
                        )
        return st

    def _attach(self, sub: Subscriber, st: _Stream) -> None:
        sub.streams[st.name] = st
        st.add(sub)
        if self._metrics is not None:
            self._metrics.subscriptions.labels(st.kind).inc()

    def _detach(self, sub: Subscriber, st: _Stream) -> None:
        if sub.streams.pop(st.name, None) is None:
            return
        st.remove(sub)
        if self._metrics is not None:
            self._metrics.subscriptions.labels(st.kind).dec()

    def _detach_all(self, sub: Subscriber) -> None:
        for st in list(sub.streams.values()):
            self._detach(sub, st)
        for name in list(sub.patterns):
            self._forget_pattern(sub, name)
        sub.patterns.clear()
        sub.exact.clear()
        sub.conflating = None

    def _forget_pattern(self, sub: Subscriber, name: str) -> None:
        entry = self._patterns.get(name)
        if entry is not None:
            entry[1].discard(sub)
            if not entry[1]:
                del self._patterns[name]

    def _enqueue(self, sub: Subscriber, frame: OutFrame) -> None:
        """Queue one frame for one subscriber, outside the publish hot path."""
        if sub.closed:
            return
        wire = frame.framed(sub.encoding)
        if not wire:
            return
        if not sub.queue and sub.on_ready is not None:
            sub.on_ready()
        sub.queue.append(frame)
        sub.queued_bytes += len(wire)
        if sub.queued_bytes > sub.buffer_bytes:
            self._overflow(sub)

    def _reply(self, sub: Subscriber, message: Response) -> None:
        if sub.responses:
            self._enqueue(sub, OutFrame(message, None, 0))

    def _refuse(self, sub: Subscriber, error: Error) -> None:
        self.stats.request_errors += 1
        if self._metrics is not None:
            self._metrics.request_errors.labels(error.code).inc()
        self._reply(sub, error)
        self._settle()

    def _refuse_with(
        self, sub: Subscriber, code: ErrorCode, message: str, request_id: int | str | None
    ) -> Error:
        error = Error(id=request_id, code=code, message=message)
        self._refuse(sub, error)
        return error

    def _build_snapshot(self, st: _Stream, reason: str) -> BookSnapshot:
        book = st.book
        assert book is not None
        return BookSnapshot(
            stream=st.name,
            seq=st.seq,
            epoch=st.epoch,
            receive_time=st.receive_time,
            market=book.market,
            bids=book.bids(),
            asks=book.asks(),
            resync=reason != "subscribe",
            reason=reason,
        )

    def _snapshot_frame(self, st: _Stream, reason: str, encoding: Encoding) -> OutFrame:
        # Many subscribers joining at one head (a reconnect storm) share one encoded snapshot.
        key = (reason, encoding)
        frame = st.snapshot_cache.get(key)
        if frame is None or frame.seq != st.seq:
            if len(st.snapshot_cache) > 8:
                st.snapshot_cache.clear()
            frame = OutFrame(self._build_snapshot(st, reason), st.name, st.seq)
            st.snapshot_cache[key] = frame
        return frame

    def _initial_state(self, sub: Subscriber, st: _Stream, reason: str) -> None:
        """What a subscriber needs before live records: a book's status and snapshot at the
        head, or the last value (and the feed's latest status) of other streams."""
        status = st.last_status
        if st.is_book:
            if status is not None:
                self._enqueue(sub, status)
            if st.book_ready():
                self._enqueue(sub, self._snapshot_frame(st, reason, sub.encoding))
            return
        frames = [f for f in (st.last_data, status) if f is not None]
        for frame in sorted(frames, key=lambda f: f.seq):
            self._enqueue(sub, frame)

    def _resume(self, sub: Subscriber, st: _Stream, point: ResumeFrom) -> None:
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
            self.stats.resumes_served += 1
            if self._metrics is not None:
                self._metrics.resumes.labels("served").inc()
            self._reply(
                sub, Resumed(stream=st.name, epoch=st.epoch, from_seq=point.seq + 1, to_seq=st.seq)
            )
            missed = st.seq - point.seq
            if missed:
                for frame in itertools.islice(st.history, len(st.history) - missed, None):
                    self._enqueue(sub, frame)
            return
        self.stats.resumes_refused += 1
        if self._metrics is not None:
            self._metrics.resumes.labels("refused").inc()
        self._reply(
            sub,
            ResumeFailed(stream=st.name, epoch=st.epoch, seq=st.seq, reason=reason, message=text),
        )
        self._initial_state(sub, st, "resume_failed")

    def _overflow(self, sub: Subscriber) -> None:
        if sub.closed or sub.conflating is not None:
            return  # already handled; settled at the end of the current operation
        books = [st for st in sub.streams.values() if st.is_book]
        if self.slow_policy == "disconnect" or not books:
            self._slow(sub)
            return
        # Stop its books' deliveries until settled (it stays subscribed): their records in
        # this call are not queued, and the snapshot built afterwards covers them.
        sub.conflating = {}
        for st in books:
            sub.conflating[st] = st.seq
            st.remove(sub)
        self._pending.append(sub)

    def _slow(self, sub: Subscriber, reason: str = CLOSE_REASON_SLOW) -> None:
        self.stats.slow_disconnects += 1
        self.close(sub, CLOSE_SLOW, reason, drain=False)

    def _settle(self) -> None:
        """Finish the conflations started during the current operation."""
        pending, self._pending = self._pending, []
        for sub in pending:
            detached = sub.conflating
            sub.conflating = None
            if sub.closed or detached is None:
                continue
            get_framed = _FRAMED[sub.encoding]
            detached_names = {st.name: st for st in detached}
            kept: deque[OutFrame] = deque()
            first_dropped: dict[_Stream, int] = {}
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
                    self._slow(sub, CLOSE_REASON_SLOW + " (book could not be conflated)")
                    break
                self.stats.conflations += 1
                if self._metrics is not None:
                    self._metrics.conflations.inc()
                status = st.last_status
                if status is not None and status.seq > have:
                    self._enqueue(sub, status)
                self._enqueue(sub, self._snapshot_frame(st, "conflation", sub.encoding))
            if not sub.closed and sub.queued_bytes > sub.buffer_bytes:
                self._slow(sub)
            # An enqueue above may have started a new conflation; it is settled as well.
            if sub.conflating is not None:
                sub.conflating = None
                if not sub.closed:
                    self._slow(sub)
        if self._pending:
            self._settle()
