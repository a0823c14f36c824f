"""The client core (sans-IO): frames from the gateway in, events out, requests to send queued.

``ClientSession`` knows the subscriber protocol and nothing about sockets or event loops, like
h11 or wsproto. A driver (``driver.Client``, or your own) does the I/O:

    session = ClientSession(["book.BTCUSD", "trades.*"])
    ...open stream_url(base, session.encoding)...
    session.connection_made()                 # queues the subscribe (with resume positions)
    for frame in session.data_to_send(): send(frame)
    for each frame received:
        for event in session.receive(frame): handle(event)
        for frame in session.data_to_send(): send(frame)
    session.connection_lost(code, reason)    # then reconnect: connection_made() resumes

Per concrete stream a ``TrackedStream`` (``client.tracked_stream``) keeps the position (the
``epoch`` and ``seq`` of the last record held), applies the protocol's sequencing rules and keeps
an ``OrderBook`` per ``book.*`` stream. This module owns the conversation: subscriptions kept
across reconnects, resumes, the answers, and the repair of a broken stream — a jump no snapshot
explains is a ``Gap`` event, and the stream is resubscribed for a fresh state: its records are
dropped meanwhile, so a book is never built on a hole. Epochs are opaque: compared by equality,
sent back as received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from gateway.client import events as ev
from gateway.client.codec import ClientEncoding, FrameDecoder, encode_request, subscribe_request
from gateway.client.tracked_stream import SessionStats, TrackedStream
from gateway.contract.protocol import (
    Epoch,
    Error,
    Hello,
    ListRequest,
    PingRequest,
    Pong,
    Resumed,
    ResumeFailed,
    StreamList,
    StreamName,
    Subscribed,
    Unsubscribed,
    UnsubscribeRequest,
    parse_stream,
)
from gateway.contract.records import BookSnapshot, BookUpdate, Price, Record, Status, Trade
from gateway.ingest.book import OrderBook

__all__ = ["ClientSession", "SessionStats"]

log: Final = logging.getLogger("gateway.client")


class ClientSession:
    def __init__(
        self,
        streams: Iterable[str] = (),
        *,
        encoding: ClientEncoding = "json",
        keep_books: bool = True,
    ) -> None:
        """``streams``: names and patterns (``book.BTCUSD``, ``trades.*``). A malformed one is
        sent anyway: the gateway's refusal (a ``RequestRefused`` event) says precisely why."""
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"encoding must be json or msgpack, not {encoding!r}")
        self.encoding: ClientEncoding = encoding
        self.keep_books = keep_books
        self.stats = SessionStats()
        self.connected = False
        self.epoch: Epoch | None = None
        """The epoch of the gateway last connected to (from its ``hello``)."""
        self.reconnect_wanted = False
        """Set when only a new connection can repair a stream; a driver then reconnects."""
        self._names: dict[str, StreamName | None] = {}  # None: not a well-formed name
        self._streams: dict[str, TrackedStream] = {}
        self._outgoing: list[str] = []
        self._next_id = 0
        # Request id -> the subscription names a gap repair unsubscribed and will subscribe again.
        self._repairs: dict[str, list[str]] = {}
        # Request id -> streams whose resume rides on that subscribe (to undo on refusal).
        self._resuming: dict[str, list[str]] = {}
        self._decoder = FrameDecoder()
        self._handlers: dict[type, Callable[[Any, list[ev.Event]], None]] = {
            Trade: self._on_record,
            Price: self._on_record,
            Status: self._on_record,
            BookUpdate: self._on_record,
            BookSnapshot: self._on_record,
            Hello: self._on_hello,
            Subscribed: self._on_subscribed,
            Unsubscribed: self._on_unsubscribed,
            Resumed: self._on_resumed,
            ResumeFailed: self._on_resume_failed,
            Error: self._on_error,
            Pong: self._on_pong,
            StreamList: self._on_stream_list,
        }
        for name in streams:
            self._names.setdefault(name, _parse(name))

    # -- what a driver calls

    @property
    def subscriptions(self) -> list[str]:
        """The names and patterns subscribed now and on every reconnect."""
        return list(self._names)

    def connection_made(self) -> None:
        """A new connection is open: queue the subscribe that resumes every stream held."""
        self.connected = True
        self.reconnect_wanted = False
        self._repairs.clear()
        self._resuming.clear()
        for st in self._streams.values():
            st.active = False
            st.resume_pending = False
            st.held_status = None
        if self._names:
            self._outgoing.append(self._subscribe(list(self._names)))

    def connection_lost(self, code: int | None = None, reason: str = "") -> list[ev.Event]:
        self.connected = False
        for st in self._streams.values():
            st.active = False
            st.held_status = None
        return [ev.Disconnected(code, reason)]

    def data_to_send(self) -> list[str]:
        """Frames (JSON text) to send now, oldest first; the queue is emptied."""
        out, self._outgoing = self._outgoing, []
        return out

    def receive(self, data: bytes | str) -> list[ev.Event]:
        """Events for one frame from the gateway. Never raises on bad input: a frame that is
        not understood is a ``ProtocolProblem`` event (and a log line)."""
        events: list[ev.Event] = []
        msg = self._decoder.decode(data)
        if isinstance(msg, str):
            self._problem(events, msg)
        else:
            self._handlers[type(msg)](msg, events)
        return events

    def subscribe(self, streams: Iterable[str]) -> None:
        """Add subscriptions (kept for reconnects); sent now if connected."""
        added = [n for n in streams if n not in self._names]
        for name in added:
            self._names[name] = _parse(name)
        if added and self.connected:
            self._outgoing.append(self._subscribe(added))

    def unsubscribe(self, streams: Iterable[str]) -> None:
        """Drop subscriptions (names exactly as subscribed); positions are kept, so subscribing
        again later resumes."""
        removed = [n for n in streams if self._names.pop(n, None) is not None]
        if removed and self.connected:
            request = UnsubscribeRequest(id=self._new_id("u"), streams=removed)
            self._outgoing.append(encode_request(request))

    def ping(self, request_id: int | str | None = None) -> None:
        self._outgoing.append(encode_request(PingRequest(id=request_id)))

    def list_streams(self, request_id: int | str | None = None) -> None:
        self._outgoing.append(encode_request(ListRequest(id=request_id)))

    # -- what a consumer reads

    def book(self, stream: str) -> OrderBook | None:
        """The book of ``stream`` if it is in sync (a snapshot and every update since)."""
        st = self._streams.get(stream)
        return st.book if st is not None and st.book_valid else None

    @property
    def books(self) -> dict[str, OrderBook]:
        """Every book in sync, by stream name."""
        return {
            n: st.book for n, st in self._streams.items() if st.book is not None and st.book_valid
        }

    def positions(self) -> dict[str, tuple[Epoch, int]]:
        """``(epoch, seq)`` of the last record held, per stream: what a resume sends."""
        return {
            n: (st.epoch, st.last_seq)
            for n, st in self._streams.items()
            if st.epoch is not None and st.last_seq is not None
        }

    # -- requests

    def subscribe_request(
        self, streams: list[str], resume: dict[str, tuple[Epoch, int]] | None = None
    ) -> str:
        """A subscribe frame as the gateway expects it (the session's own are built with
        this); ``resume`` maps concrete streams to the ``(epoch, seq)`` held."""
        return subscribe_request(self._new_id("s"), streams, resume)

    def resume_request(self) -> str | None:
        """The subscribe a new connection sends: every subscription, resuming each stream held
        (None without subscriptions). ``connection_made`` queues it."""
        return self._subscribe(list(self._names)) if self._names else None

    def _subscribe(self, names: list[str], only: Iterable[str] | None = None) -> str:
        patterns = [p for n in names if (p := self._names.get(n) or _parse(n)) is not None]
        candidates = self._streams.values() if only is None else self._held(only)
        resume: dict[str, tuple[Epoch, int]] = {}
        for st in candidates:
            if not st.active and st.resumable() and any(p.matches(st.name) for p in patterns):
                assert st.epoch is not None and st.last_seq is not None
                resume[st.name] = (st.epoch, st.last_seq)
                st.resume_pending = True
        request_id = self._new_id("s")
        if resume:
            self._resuming[request_id] = list(resume)
        return subscribe_request(request_id, names, resume or None)

    def _held(self, names: Iterable[str]) -> list[TrackedStream]:
        return [st for n in names if (st := self._streams.get(n)) is not None]

    def _new_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}{self._next_id}"

    # -- records

    def _stream(self, name: str) -> TrackedStream:
        st = self._streams.get(name)
        if st is None:
            st = self._streams[name] = TrackedStream(name, self.keep_books, self.stats)
        return st

    def _on_record(self, rec: Record, events: list[ev.Event]) -> None:
        st = self._streams.get(rec.stream)
        if st is None:
            # No ``subscribed`` named it (a shortcut path announces nothing more): follow it
            # from its first record.
            st = self._stream(rec.stream)
        if not st.receive(rec, events):
            self._repair(st, events)

    def _repair(self, st: TrackedStream, events: list[ev.Event]) -> None:
        """Drop the stream's records until the gateway sends a fresh state: unsubscribe every
        subscription that covers it, and subscribe them again once the ``unsubscribed`` answer
        says nothing more of them is coming (the other streams they cover then resume from
        their exact positions, so only the broken one starts afresh)."""
        st.break_off()
        if not self.connected:
            return  # the next connection subscribes it afresh (broken streams are not resumed)
        covering = [n for n, p in self._names.items() if p is not None and p.matches(st.name)]
        in_repair = {n for names in self._repairs.values() for n in names}
        if not covering or in_repair.intersection(covering):
            # Subscribed by a shortcut path, or already being resubscribed: only a new
            # connection gives it a fresh state.
            self.reconnect_wanted = True
            events.append(ev.ProtocolProblem(f"{st.name}: reconnecting for a fresh state"))
            return
        request_id = self._new_id("r")
        self._repairs[request_id] = covering
        self._outgoing.append(encode_request(UnsubscribeRequest(id=request_id, streams=covering)))

    # -- answers

    def _on_hello(self, hello: Hello, events: list[ev.Event]) -> None:
        changed = self.epoch is not None and hello.epoch != self.epoch
        self.epoch = hello.epoch
        events.append(ev.Connected(hello, changed))

    def _on_subscribed(self, answer: Subscribed, events: list[ev.Event]) -> None:
        for state in answer.streams:
            st = self._stream(state.stream)
            if st.active:
                continue  # subscribed again while already delivered: nothing is resent
            st.active = True
            if st.resume_pending:
                continue  # ``resumed`` or ``resume_failed`` says how it continues
            st.restart(state.epoch, state.seq)
        events.append(ev.SubscriptionChanged(answer))

    def _on_unsubscribed(self, answer: Unsubscribed, events: list[ev.Event]) -> None:
        for name in answer.streams:
            st = self._streams.get(name)
            if st is not None:
                st.active = False
        names = self._repairs.pop(answer.id, None) if isinstance(answer.id, str) else None
        if names is not None:
            still = [n for n in names if n in self._names]
            if still:
                self._outgoing.append(self._subscribe(still, only=answer.streams))
            return
        events.append(ev.SubscriptionChanged(answer))

    def _on_resumed(self, msg: Resumed, events: list[ev.Event]) -> None:
        st = self._stream(msg.stream)
        st.resume_pending = False
        if st.last_seq is not None and msg.from_seq != st.last_seq + 1:
            self._problem(
                events, f"{st.name}: resumed from {msg.from_seq} while holding {st.last_seq}"
            )
        st.expected = msg.from_seq
        st.initial_head = None
        self.stats.resumes += 1
        events.append(ev.Resumed(msg.stream, msg.from_seq, msg.to_seq))

    def _on_resume_failed(self, msg: ResumeFailed, events: list[ev.Event]) -> None:
        st = self._stream(msg.stream)
        st.resume_pending = False
        st.restart(msg.epoch, msg.seq)
        self.stats.resume_failures += 1
        log.info("%s: resume failed (%s): %s", msg.stream, msg.reason, msg.message)
        events.append(ev.ResumeFailed(msg.stream, msg.reason, msg.message, msg.epoch, msg.seq))

    def _on_error(self, msg: Error, events: list[ev.Event]) -> None:
        log.warning("request %r refused: %s: %s", msg.id, msg.code, msg.message)
        events.append(ev.RequestRefused(msg.id, msg.code, msg.message))
        resumed = self._resuming.pop(msg.id, None) if isinstance(msg.id, str) else None
        if resumed is not None or (isinstance(msg.id, str) and msg.id in self._repairs):
            # A refused resubscription changes nothing: the streams it meant to restore are
            # not coming. Only a new connection (which resumes what it can) restores them.
            self._repairs.pop(msg.id, None)  # type: ignore[arg-type]
            for st in self._held(resumed or ()):
                st.resume_pending = False
            self.reconnect_wanted = True

    def _on_pong(self, msg: Pong, events: list[ev.Event]) -> None:
        events.append(ev.PongReceived(msg.id))

    def _on_stream_list(self, msg: StreamList, events: list[ev.Event]) -> None:
        events.append(ev.StreamsListed(msg))

    def _problem(self, events: list[ev.Event], detail: str) -> None:
        self.stats.problems += 1
        log.warning("gateway message unusable: %s", detail)
        events.append(ev.ProtocolProblem(detail))


def _parse(name: str) -> StreamName | None:
    try:
        return parse_stream(name)
    except ValueError:
        return None
