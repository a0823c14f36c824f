"""The Paxos public feed messages as they arrive on the wire, and their decoders.

Structure only: every field stays the string Paxos sent (numbers and times
included), so a message decodes with no Python code running per field and
``normalizer.py`` converts exactly the values it uses (``decimals``,
``timestamps``). msgspec enforces what can be enforced for free: JSON syntax,
required fields, string types (a JSON number where Paxos sends a string is an
error, never silently a float), the ``SNAPSHOT``/``UPDATE`` tag and the
``BUY``/``SELL`` side. Unknown extra fields are ignored, so Paxos can add
fields without breaking the gateway.

Every failure surfaces as one exception type, ``WireError``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.ingest.feeds import FeedKind

__all__ = [
    "BookMessage",
    "BookSnapshot",
    "BookUpdate",
    "ErrorFrame",
    "Execution",
    "Level",
    "PaxosDecoder",
    "StablecoinPrice",
    "WireError",
    "WireMessage",
    "decode",
    "decoder_for",
]


class WireError(ValueError):
    """An upstream frame that is not a well-formed Paxos message of the expected kind."""


# gc=False: these hold only strings (or lists of such structs), so they can
# never be part of a reference cycle; untracked objects make the collector's
# passes cheaper at 100k+ messages a second.


class Execution(msgspec.Struct, gc=False):
    market: str
    price: str
    amount: str
    executed_at: str
    match_number: str


class Level(msgspec.Struct, gc=False):
    price: str
    amount: str


class BookSnapshot(msgspec.Struct, tag_field="type", tag="SNAPSHOT", gc=False):
    market: str
    bids: list[Level]
    asks: list[Level]
    # Documented as a boolean that is always true; an older page shows the
    # string "true". Absent means complete.
    final_snapshot: bool | Literal["true", "false"] = True

    @property
    def is_final(self) -> bool:
        return self.final_snapshot is True or self.final_snapshot == "true"


class BookUpdate(msgspec.Struct, tag_field="type", tag="UPDATE", gc=False):
    market: str
    side: Literal["BUY", "SELL"]
    price: str
    amount: str


class StablecoinPrice(msgspec.Struct, gc=False):
    market: str
    price: str
    timestamp: str


class ErrorFrame(msgspec.Struct, gc=False):
    """``{"error": "Not Found"}``: seen for an unknown path or market."""

    error: str


class _AnyError(msgspec.Struct, gc=False):
    error: msgspec.Raw


BookMessage = BookSnapshot | BookUpdate
WireMessage = Execution | BookSnapshot | BookUpdate | StablecoinPrice | ErrorFrame

_TYPES: dict[FeedKind, object] = {
    "executions": Execution,
    "book": BookMessage,
    "stablecoin": StablecoinPrice,
}
_error_decoder = msgspec.json.Decoder(_AnyError)


class PaxosDecoder:
    """Decodes one feed kind's frames; reuse one instance per feed (decoders are not free)."""

    __slots__ = ("_decode", "kind")

    def __init__(self, kind: FeedKind) -> None:
        self.kind = kind
        decoder: msgspec.json.Decoder[WireMessage] = msgspec.json.Decoder(_TYPES[kind])
        self._decode = decoder.decode

    def decode(self, payload: bytes | str) -> WireMessage:
        try:
            return self._decode(payload)
        # msgspec raises RecursionError, not DecodeError, while skipping a deeply nested
        # unknown field: that is a bad frame like any other.
        except (msgspec.DecodeError, RecursionError) as exc:
            # Off the hot path: only now look for the error frame, which
            # any channel may send instead of data.
            error = _error_frame(payload)
            if error is not None:
                return error
            raise WireError(f"{self.kind} frame: {exc}") from None


def _error_frame(payload: bytes | str) -> ErrorFrame | None:
    try:
        raw = _error_decoder.decode(payload).error
        text = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    # Any JSON value is accepted as the error: an unusual shape is still an
    # error frame from upstream, not a garbled data message.
    return ErrorFrame(error=text if isinstance(text, str) else bytes(raw).decode())


_decoders: dict[FeedKind, PaxosDecoder] = {}


def decoder_for(kind: FeedKind) -> PaxosDecoder:
    """The shared decoder instance of a feed kind."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = PaxosDecoder(kind)
    return decoder


def decode(kind: FeedKind, payload: bytes | str) -> WireMessage:
    """Decode one upstream frame of a ``kind`` feed; ``WireError`` if it is not one."""
    return decoder_for(kind).decode(payload)
