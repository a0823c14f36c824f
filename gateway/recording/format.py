"""Recordings of raw upstream frames (sans-IO): the file format, a writer and a streaming reader.

A recording is JSON lines (UTF-8). The first line is the header::

    {"format":"paxos-gateway-recording","version":1,
     "feeds":[{"name":"marketdata","url":"wss://ws.paxos.com/marketdata"}],"started_at":NS}

then one line per upstream frame, exactly as received (``t`` is the receive time, integer
nanoseconds since the Unix epoch)::

    {"t":NS,"feed":"marketdata","frame":"{\\"type\\":\\"UPDATE\\",...}"}

(a binary frame, which Paxos never sends, is kept as ``"binary"``: base64 instead of ``frame``),
and one line per connection event, so a replay reproduces reconnects::

    {"t":NS,"feed":"marketdata","event":"connected"}
    {"t":NS,"feed":"marketdata","event":"disconnected","reason":"connection_lost"}

Lines of different feeds interleave in receive order. Frames are stored verbatim (never decoded
and re-encoded), so replaying a recording into a ``FeedNormalizer`` is exactly what the gateway saw.

The reader checks every line as it streams (no whole-file load) and raises ``RecordingError``
naming the file and the line for the first bad one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Literal

import msgspec

if TYPE_CHECKING:
    from gateway.contract.records import Record
    from gateway.ingest.normalizer import FeedNormalizer

__all__ = [
    "FORMAT",
    "VERSION",
    "Entry",
    "Event",
    "EventKind",
    "Header",
    "RecordedFeed",
    "RecordedFrame",
    "RecordingError",
    "RecordingReader",
    "RecordingWriter",
    "feed_session",
    "read_recording",
]

FORMAT: Final = "paxos-gateway-recording"
VERSION: Final = 1

EventKind = Literal["connected", "disconnected"]


class RecordingError(ValueError):
    """A file that is not a valid recording; the message names the file and line."""


class RecordedFeed(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    url: str


class Header(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    format: str
    version: int
    feeds: list[RecordedFeed]
    started_at: int


class _Line(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Any line after the header, before its shape is checked."""

    t: int
    feed: str
    frame: str | None = None
    binary: str | None = None
    event: EventKind | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One upstream frame: ``payload`` is ``str`` for text frames, ``bytes`` for binary ones."""

    t: int
    feed: str
    payload: str | bytes
    line: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    t: int
    feed: str
    event: EventKind
    reason: str = ""
    line: int = 0


Entry = RecordedFrame | Event

_header_decoder: Final = msgspec.json.Decoder(Header)
_line_decoder: Final = msgspec.json.Decoder(_Line)
_encoder: Final = msgspec.json.Encoder()


# -- writing ---------------------------------------------------------------------------------


class _FrameLine(msgspec.Struct):
    t: int
    feed: str
    frame: str


class _BinaryLine(msgspec.Struct):
    t: int
    feed: str
    binary: str


class _EventLine(msgspec.Struct, omit_defaults=True):
    t: int
    feed: str
    event: EventKind
    reason: str = ""


class RecordingWriter:
    """Appends a recording to a binary file object; the header is written at construction.

    Lines are buffered by the file object; ``flush`` pushes them out (the recorder calls it
    periodically and at the end, so an interrupted recording loses at most the last moments).
    """

    def __init__(
        self,
        out: IO[bytes],
        feeds: Sequence[tuple[str, str]] | Sequence[RecordedFeed],
        started_at: int,
    ) -> None:
        self._out = out
        recorded = [f if isinstance(f, RecordedFeed) else RecordedFeed(*f) for f in feeds]
        names = [f.name for f in recorded]
        if len(set(names)) != len(names):
            raise ValueError(f"feed names must be unique, got {names}")
        self._feeds = frozenset(names)
        self.frames = 0
        self.events = 0
        header = Header(format=FORMAT, version=VERSION, feeds=recorded, started_at=started_at)
        self._write(header)

    def frame(self, t: int, feed: str, payload: str | bytes) -> None:
        self._check(feed)
        if isinstance(payload, str):
            self._write(_FrameLine(t, feed, payload))
        else:
            self._write(_BinaryLine(t, feed, base64.b64encode(payload).decode("ascii")))
        self.frames += 1

    def event(self, t: int, feed: str, event: EventKind, reason: str = "") -> None:
        self._check(feed)
        self._write(_EventLine(t, feed, event, reason))
        self.events += 1

    def flush(self) -> None:
        self._out.flush()

    def _check(self, feed: str) -> None:
        if feed not in self._feeds:
            raise ValueError(f"feed {feed!r} is not in the recording's header")

    def _write(self, line: msgspec.Struct) -> None:
        self._out.write(_encoder.encode(line) + b"\n")


# -- reading ---------------------------------------------------------------------------------


class RecordingReader:
    """Streams a recording's entries from a binary file object, checking each line.

    ``header`` is read and checked at construction; iterating yields ``RecordedFrame`` and ``Event``
    entries in file order. ``name`` (the file name) prefixes every error message.
    """

    def __init__(self, source: IO[bytes], name: str = "<recording>") -> None:
        self._source = source
        self.name = name
        self._line = 0
        first = source.readline()
        self._line = 1
        if not first.strip():
            raise self._error("empty file; expected a recording header")
        try:
            header = _header_decoder.decode(first)
        except msgspec.DecodeError as exc:
            raise self._error(f"not a recording header: {exc}") from None
        if header.format != FORMAT:
            raise self._error(f"format is {header.format!r}, expected {FORMAT!r}")
        if header.version != VERSION:
            raise self._error(
                f"recording version {header.version} is not supported (this reads {VERSION})"
            )
        names = [f.name for f in header.feeds]
        if not names:
            raise self._error("the header lists no feeds")
        if len(set(names)) != len(names):
            raise self._error(f"duplicate feed names in the header: {names}")
        self.header = header
        self.feeds = frozenset(names)

    def __iter__(self) -> Iterator[Entry]:
        for raw in self._source:
            self._line += 1
            if not raw.strip():
                continue  # a trailing newline, or blank lines, are harmless
            yield self._entry(raw)

    def _entry(self, raw: bytes) -> Entry:
        try:
            line = _line_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise self._error(f"bad entry: {exc}") from None
        if line.feed not in self.feeds:
            raise self._error(f"feed {line.feed!r} is not listed in the header")
        if line.t < 0:
            raise self._error(f"negative time {line.t}")
        kinds = sum(x is not None for x in (line.frame, line.binary, line.event))
        if kinds != 1:
            raise self._error("an entry has exactly one of 'frame', 'binary' or 'event'")
        if line.event is not None:
            return Event(line.t, line.feed, line.event, line.reason or "", self._line)
        if line.reason is not None:
            raise self._error("'reason' belongs to event entries only")
        if line.frame is not None:
            return RecordedFrame(line.t, line.feed, line.frame, self._line)
        assert line.binary is not None
        try:
            payload = base64.b64decode(line.binary, validate=True)
        except binascii.Error as exc:
            raise self._error(f"'binary' is not base64: {exc}") from None
        return RecordedFrame(line.t, line.feed, payload, self._line)

    def _error(self, message: str) -> RecordingError:
        return RecordingError(f"{self.name}: line {self._line}: {message}")


def read_recording(path: str | Path) -> Iterator[Entry]:
    """Stream the entries of the recording at ``path`` (checking the header first)."""
    with open(path, "rb") as f:
        yield from RecordingReader(f, str(path))


def read_header(path: str | Path) -> Header:
    with open(path, "rb") as f:
        return RecordingReader(f, str(path)).header


def validate(path: str | Path) -> tuple[Header, int, int]:
    """Read the whole recording; (header, frames, events). Raises ``RecordingError``."""
    frames = events = 0
    with open(path, "rb") as f:
        reader = RecordingReader(f, str(path))
        for entry in reader:
            if isinstance(entry, RecordedFrame):
                frames += 1
            else:
                events += 1
    return reader.header, frames, events


def feed_session(entries: Iterable[Entry], feed: str, session: FeedNormalizer) -> list[Record]:
    """Replay one feed's recorded frames and connection events straight into a session (no
    sockets), with the recorded receive times; the records it produced, in order."""
    out: list[Record] = []
    for entry in entries:
        if entry.feed != feed:
            continue
        if isinstance(entry, RecordedFrame):
            out += session.receive(entry.payload, entry.t)
        elif entry.event == "connected":
            out += session.connected(entry.t)
        else:
            out += session.disconnected(entry.reason or "disconnected", entry.t)
    return out
