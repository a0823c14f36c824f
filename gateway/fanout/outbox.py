"""The outbox: what the hub queues for each subscriber, and how the I/O side takes it.

Encoding happens once per record per encoding in use: a record becomes one ``OutFrame`` whose
cache of complete WebSocket frames (header + payload, ``wsframe.build_frame``: server frames are
unmasked, so the bytes are the same for every subscriber) is filled the first time an encoding
needs it, and every subscriber's buffer holds a reference to that same frame. The hot path per
delivery is a deque append and an integer add; the I/O side (``io.delivery``) takes a
subscriber's whole backlog as one joined chunk (``Subscriber.take_framed``), or message by
message for trio-websocket's ``send_message`` fallback (``Subscriber.take``).

Each subscriber's buffer is bounded (frame bytes queued plus bytes in flight in the writer);
what happens when it overflows is the hub's policy (``fanout.conflation``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Final

import msgspec

from gateway.contract.protocol import Encoding, Response
from gateway.contract.records import Record
from gateway.fanout import mirror
from gateway.fanout.wsframe import OP_BINARY, OP_TEXT, build_frame, header_length
from gateway.ingest import decimals

if TYPE_CHECKING:
    from gateway.fanout.conversation import Conversation
    from gateway.fanout.streams import Stream

__all__ = ["DEFAULT_BATCH_BYTES", "FRAMED", "OutFrame", "Subscriber"]

_json_encoder: Final = msgspec.json.Encoder(enc_hook=decimals.enc_hook)
_msgpack_encoder: Final = msgspec.msgpack.Encoder(enc_hook=decimals.enc_hook)

# The writer takes at most this much per batch (at least one frame), so bytes in flight stay
# bounded and a conflation can still reach most of a backlog.
DEFAULT_BATCH_BYTES: Final = 256 * 1024


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
        w = FRAMED[encoding](self)
        return self.encode(encoding) if w is None else w

    def payload(self, encoding: Encoding) -> str | bytes:
        if self.payloads is None:
            self.payloads = [None, None, None]
        p = self.payloads[encoding]
        if p is None:
            wire = self.framed(encoding)
            body = wire[header_length(wire) :] if wire else b""
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
FRAMED: Final[tuple[Callable[[OutFrame], bytes | None], ...]] = (
    attrgetter("json"),
    attrgetter("msgpack"),
    attrgetter("paxos"),
)


class Subscriber:
    """One connection's state in the hub. The I/O side sets ``on_ready`` (called when the
    buffer goes from empty to non-empty), drains with ``take``/``sent`` and closes the socket
    with ``close_code``/``close_reason`` once those are set and the buffer is empty."""

    __slots__ = (
        "buffer_bytes", "close_code", "close_reason", "conflating", "conversation", "encoding",
        "id", "inflight_bytes", "on_ready", "queue", "queued_bytes", "responses", "streams",
    )  # fmt: skip

    def __init__(self, sub_id: int, encoding: Encoding, buffer_bytes: int, responses: bool) -> None:
        self.id = sub_id
        self.encoding = encoding
        self.buffer_bytes = buffer_bytes
        self.responses = responses  # False on mirror paths: Paxos clients get data only
        self.queue: deque[OutFrame] = deque()
        self.queued_bytes = 0  # queued plus in flight: the amount the limit applies to
        self.inflight_bytes = 0
        self.streams: dict[str, Stream] = {}  # streams delivered now
        self.conflating: dict[Stream, int] | None = None  # book stream -> head when detached
        # Its requests and their answers (``fanout.conversation``); set by ``Hub.connect``.
        self.conversation: Conversation | None = None
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
        get_framed = FRAMED[encoding]
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
        get_framed = FRAMED[self.encoding]
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
