"""The fan-out core (sans-IO): the stream registry, ``publish``, and the subscriber lifecycle.

``publish`` is called by ``ingest.batch.ingest_batch`` right after ``FeedNormalizer.receive``,
synchronously, so whenever the hub runs, every registered ``OrderBook`` is at its stream's head.
All hub operations are synchronous; a late joiner's snapshot and the records published after it
are therefore gap- and overlap-free without a lock.

The hub keeps the hot path, ``publish`` (one flat loop: append to the stream's history, then a
deque append and an integer add per subscriber), and the registry the cold paths work on. Those
live beside it, one concern each: ``outbox`` (``OutFrame``, ``Subscriber``: the encode-once
frames and the buffers the I/O side drains), ``streams`` (``Stream``: history, last values,
snapshots), ``conversation`` (each connection's requests and answers), ``catchup`` (late join
and resume) and ``conflation`` (what a slow subscriber gets: a fresh snapshot or a close code,
never a silent drop).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from gateway import __version__
from gateway.contract.protocol import (
    PROTOCOL_VERSION,
    Encoding,
    Error,
    Hello,
    Request,
    Response,
    ResumeFrom,
    StreamInfo,
    StreamState,
    Subscribed,
)
from gateway.contract.records import BookSnapshot, Record, Status
from gateway.fanout.conflation import Conflation, SlowPolicy
from gateway.fanout.conversation import Conversation
from gateway.fanout.outbox import OutFrame, Subscriber
from gateway.fanout.patterns import PatternWatches
from gateway.fanout.stats import HubStats
from gateway.fanout.streams import Stream
from gateway.ingest.book import OrderBook

__all__ = ["Hub", "HubSettings", "OutFrame", "SlowPolicy", "Subscriber"]


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
        self._streams: dict[str, Stream] = {}
        self.patterns = PatternWatches()  # ``Conversation`` keeps it
        self._subscribers: set[Subscriber] = set()
        self._ids = itertools.count(1)
        self._conflation = Conflation(self, slow_policy)
        # Called once after an operation that called some subscriber's ``on_ready`` (which may
        # then be a bare list append: see ``io.delivery.Flusher``); ``publish`` calls
        # ``after_publish`` instead when set: its records are complete, to be written at once.
        self.after_ready: Callable[[], None] | None = None
        self.after_publish: Callable[[], None] | None = None

    @classmethod
    def from_config(cls, settings: HubSettings, epoch: str) -> Hub:
        return cls(
            epoch,
            history=settings.history,
            buffer_bytes=settings.buffer_bytes,
            slow_policy=settings.slow_policy,
            max_subscriptions=settings.max_subscriptions,
            max_request_bytes=settings.max_request_bytes,
        )

    # -- the upstream side ---------------------------------------------------------------

    def declare_stream(self, name: str) -> None:
        """Make a stream known before its first record (e.g. from ``FeedNormalizer.streams()``),
        so subscribers can name it at once."""
        if name not in self._streams:
            self._create_stream(name)
            self.settle()

    def register_book(self, stream: str, book: OrderBook) -> None:
        """The normalizer's book of a book stream: late joiners get snapshots built from it.
        Registered before the stream's first book record is published (``ingest.batch``); a
        book stream without one has no snapshot to give."""
        st = self._streams.get(stream) or self._create_stream(stream)
        st.book = book
        st.snapshot_cache.clear()
        self.settle()

    def seed_stream(self, name: str, epoch: str, seq: int) -> None:
        """Where a stream stands before its first record here: an edge (docs/cluster.md) that
        starts from a book's checkpoint or in the middle of a stream. The next record is
        ``seq + 1`` of ``epoch``, with no sequence break counted. A stream that already has
        history is left alone."""
        st = self._streams.get(name)
        if st is None:  # seeded before it is announced: the announcement names this head
            self._create_stream(name, epoch, seq)
        elif not st.history:
            st.epoch, st.seq = epoch, seq
            st.snapshot_cache.clear()
        self.settle()

    def publish(self, records: Sequence[Record]) -> None:
        """Append records to their streams and subscribers' buffers; then ``after_publish``."""
        streams = self._streams
        deliveries = 0
        kinds = self.stats.records_published
        overflow = self._conflation.overflow
        woke = False
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
                        woke = True
                    queue.append(frame)
                    sub.queued_bytes += size
                    if sub.queued_bytes > sub.buffer_bytes:
                        overflow(sub)
        if self._conflation.pending:
            self._conflation.settle()
        self.stats.deliveries += deliveries
        after = self.after_publish or self.after_ready
        if woke and after is not None:
            after()

    # -- the subscriber side -------------------------------------------------------------

    def connect(self, encoding: Encoding = Encoding.JSON, *, hello: bool = True) -> Subscriber:
        """A new subscriber. ``hello=False`` for mirror connections: no responses at all."""
        sub = Subscriber(next(self._ids), encoding, self.buffer_bytes, responses=hello)
        sub.conversation = Conversation(self, sub)
        self._subscribers.add(sub)
        if hello:
            self.reply(
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
            if self.after_ready is not None:
                self.after_ready()

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    # The subscriber's conversation (``fanout.conversation``) handles its requests.

    def receive(self, sub: Subscriber, data: bytes | str) -> Error | None:
        """One request frame from ``sub``; the answer goes into its buffer. Returns the error
        sent, if any, so the I/O side can log and count it."""
        return _conversation(sub).receive(data)

    def handle(self, sub: Subscriber, request: Request) -> Error | None:
        return _conversation(sub).handle(request)

    def subscribe(
        self,
        sub: Subscriber,
        names: Iterable[str],
        *,
        resume: Mapping[str, ResumeFrom] | None = None,
        request_id: int | str | None = None,
        wait_for_streams: bool = False,
    ) -> Error | None:
        """``Conversation.subscribe``: stream names and patterns, all or nothing."""
        return _conversation(sub).subscribe(
            names, resume=resume, request_id=request_id, wait_for_streams=wait_for_streams
        )

    def unsubscribe(
        self, sub: Subscriber, names: Iterable[str], *, request_id: int | str | None = None
    ) -> Error | None:
        return _conversation(sub).unsubscribe(names, request_id=request_id)

    # -- the registry ----------------------------------------------------------------------

    def stream(self, name: str) -> Stream | None:
        return self._streams.get(name)

    def streams_by_name(self) -> list[Stream]:
        return sorted(self._streams.values(), key=lambda s: s.name)

    def stream_list(self, sub: Subscriber | None = None) -> list[StreamInfo]:
        return [
            StreamInfo(
                stream=st.name,
                kind=st.kind,
                epoch=st.epoch,
                seq=st.seq,
                subscribed=sub is not None and st.name in sub.streams,
            )
            for st in self.streams_by_name()
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
        return st.snapshot(reason)

    # -- the outbox, for the fan-out's own modules ------------------------------------------

    def attach(self, sub: Subscriber, st: Stream) -> None:
        sub.streams[st.name] = st
        st.add(sub)
        self.stats.count_subscription(st.kind, 1)

    def detach(self, sub: Subscriber, st: Stream) -> None:
        if sub.streams.pop(st.name, None) is None:
            return
        st.remove(sub)
        self.stats.count_subscription(st.kind, -1)

    def enqueue(self, sub: Subscriber, frame: OutFrame) -> None:
        """Queue one frame for one subscriber, outside the publish hot path."""
        if sub.closed:
            return
        wire = frame.framed(sub.encoding)
        if not wire:
            return
        on_ready = None if sub.queue else sub.on_ready
        if on_ready is not None:
            on_ready()
        sub.queue.append(frame)
        sub.queued_bytes += len(wire)
        if sub.queued_bytes > sub.buffer_bytes:
            self._conflation.overflow(sub)
        if on_ready is not None and self.after_ready is not None:
            self.after_ready()

    def reply(self, sub: Subscriber, message: Response) -> None:
        if sub.responses:
            self.enqueue(sub, OutFrame(message, None, 0))

    def settle(self) -> None:
        """Finish the conflations the current operation started (``fanout.conflation``)."""
        if self._conflation.pending:
            self._conflation.settle()

    # -- internals -----------------------------------------------------------------------

    def _create_stream(self, name: str, epoch: str | None = None, seq: int = 0) -> Stream:
        """A new stream at ``seq`` of ``epoch`` (default: this hub's), announced to matching
        pattern subscribers: an answer that can overflow one, so the public caller settles."""
        st = self._streams[name] = Stream(name, self.epoch, self.history)
        st.epoch, st.seq = (self.epoch if epoch is None else epoch), seq
        for sub in self.patterns.matching(name):
            # Once per subscriber; one closed by an earlier announcement is left alone.
            if name not in sub.streams and not sub.closed:
                self.attach(sub, st)
                # A new stream starts at its first record: nothing to catch up on.
                self.reply(
                    sub,
                    Subscribed(
                        streams=[StreamState(stream=name, epoch=st.epoch, seq=st.seq)],
                        patterns=[],
                    ),
                )
        return st

    def _detach_all(self, sub: Subscriber) -> None:
        for st in list(sub.streams.values()):
            self.detach(sub, st)
        _conversation(sub).forget()
        sub.conflating = None


def _conversation(sub: Subscriber) -> Conversation:
    conversation = sub.conversation
    assert conversation is not None, "a subscriber made by Hub.connect has one"
    return conversation
