"""The upstream's WebSocket client protocol, sans-IO: the frames of an open connection (the
opening handshake before it is ``ingest.ws_handshake``).

Why the upstream does not use trio-websocket (the subscriber server still does, see
``io.delivery``): its reader task hands each message to the consumer through a memory channel
whose ``send`` is a checkpoint, and parses each frame with wsproto (~7 us per frame). Every
upstream message therefore cost a trip through the scheduler, and the whole path tops out near
13-17k messages/s on one connection, while the session normalizes one in ~2 us. Worse for the
fan-out, records arrived one per scheduling tick, so a subscriber's write could never carry more
than a tick's worth of them. ``ClientProtocol.receive`` instead parses everything one socket read
brought and returns the complete messages together; the upstream task normalizes and publishes
them as one batch, and each subscriber gets them in one write.

What is checked here (RFC 6455), and what a violation leads to (``Closing``):

* server frames are unmasked, no RSV bit is set (no extension is ever offered), opcodes are
  known, control frames are final and at most 125 bytes, continuations follow a started
  message: else close 1002;
* a message (or a frame announcing it) larger than ``max_message_bytes``: close 1009, decided
  from the frame header, before its payload is buffered;
* text messages and close reasons are UTF-8: else close 1007;
* a ping is answered with a pong carrying its payload; a close frame is answered with a close
  frame with the same code (RFC 6455 5.5.1), then nothing more is read.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import Final

from gateway.fanout.wsframe import (
    FIN,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
)

__all__ = [
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_PROTOCOL_ERROR",
    "ClientProtocol",
    "Closing",
    "client_frame",
    "close_payload",
]

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005  # never sent: "the close frame carried no code"
CLOSE_INVALID_DATA: Final = 1007
CLOSE_MESSAGE_TOO_BIG: Final = 1009

_UTF8: Final = codecs.getincrementaldecoder("utf-8")


def client_frame(opcode: int, payload: bytes = b"", mask: bytes | None = None) -> bytes:
    """One final, masked client-to-server frame (the upstream only ever sends control frames,
    so the payload is at most 125 bytes and masking it in Python costs nothing)."""
    if len(payload) > 125:
        raise ValueError("a control frame carries at most 125 bytes")
    key = os.urandom(4) if mask is None else mask
    n = len(payload)
    keystream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    return bytes((FIN | opcode, 0x80 | n)) + key + masked


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code and as much of ``reason`` as fits (whole characters)."""
    data = reason.encode()[:123]
    return code.to_bytes(2, "big") + data.decode(errors="ignore").encode()


@dataclass(frozen=True, slots=True)
class Closing:
    """Why the connection is closing: the code and reason of the peer's close frame
    (``by_peer``), or of the one this side sends after a protocol violation."""

    code: int
    reason: str
    by_peer: bool


def _valid_close_code(code: int) -> bool:
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


class ClientProtocol:
    """The open connection, client side.

    ``receive(data)`` returns the complete data messages (payload bytes, text and binary alike)
    in the order they arrived. Frames to send back (pongs, the close reply) accumulate in
    ``outgoing``; the payloads of pongs received in ``pongs``; ``closing`` is set once the
    peer sent a close frame or broke the protocol, and nothing is parsed after that.
    """

    __slots__ = (
        "_buf",
        "_fragments",
        "_fragments_size",
        "_need",
        "_utf8_stream",
        "closing",
        "max_message_bytes",
        "outgoing",
        "pongs",
    )

    def __init__(self, max_message_bytes: int, leftover: bytes = b"") -> None:
        self.max_message_bytes = max_message_bytes
        self.outgoing = bytearray()
        self.pongs: list[bytes] = []
        self.closing: Closing | None = None
        self._buf = bytearray(leftover)  # an incomplete frame (rarely more)
        self._need = 0  # bytes ``_buf`` must hold before parsing it is worth it
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        # The UTF-8 check of a text message under way: fragment by fragment, so that an
        # impossible byte fails the connection when it arrives, not when the message ends.
        self._utf8_stream: codecs.IncrementalDecoder | None = None

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buf)

    def send_close(self, code: int, reason: str = "") -> bytes:
        """The close frame this side starts a closing handshake with."""
        return client_frame(OP_CLOSE, close_payload(code, reason))

    def receive(self, data: bytes) -> list[bytes]:
        if self.closing is not None:
            return []
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf = self._buf
        else:
            buf = data
        out: list[bytes] = []
        end = len(buf)
        pos = 0
        max_size = self.max_message_bytes
        while end - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1]
            # The common case first: a final, unmasked text or binary frame of up to 65535
            # bytes (7- or 16-bit length), no fragmented message under way. Paxos messages
            # of 126 bytes and more (an execution is ~140) took the general path below: two
            # more calls and a new incremental UTF-8 decoder per message, 18,400 user-space
            # instructions per one-frame read against 7,700 here (callgrind).
            if n <= 126 and (b0 == 0x81 or b0 == 0x82) and not self._fragments:
                head = 2
                if n == 126:
                    if end - pos < 4:
                        self._need = 4
                        break
                    n = (buf[pos + 2] << 8) | buf[pos + 3]
                    head = 4
                if n > max_size:  # decided from the header, before the payload arrives
                    self._fail(CLOSE_MESSAGE_TOO_BIG, f"a {n}-byte message (limit {max_size})")
                    break
                stop = pos + head + n
                if stop > end:
                    self._need = stop - pos
                    break
                payload = bytes(buf[pos + head : stop])
                pos = stop
                if b0 == 0x81 and not self._utf8(payload):
                    break
                out.append(payload)
                continue
            if n & 0x80:
                self._fail(CLOSE_PROTOCOL_ERROR, "masked frame from the server")
                break
            if b0 & 0x70:
                self._fail(CLOSE_PROTOCOL_ERROR, "RSV bit set without an extension")
                break
            head = 2
            if n >= 126:  # 16- or 64-bit extended length
                head = 4 if n == 126 else 10
                if end - pos < head:
                    self._need = head
                    break
                n = int.from_bytes(buf[pos + 2 : pos + head], "big")
                if n >> 63:
                    self._fail(CLOSE_PROTOCOL_ERROR, "frame length with the top bit set")
                    break
            if not self._frame_header_ok(b0, n):
                break
            stop = pos + head + n
            if stop > end:
                self._need = stop - pos
                break
            payload = bytes(buf[pos + head : stop])
            pos = stop
            message = self._frame(b0, payload)
            if message is not None:
                out.append(message)
            if self.closing is not None:
                break
        else:
            self._need = 0
        if self.closing is not None:
            self._buf = bytearray()
        elif buf is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf = bytearray(buf[pos:])
        return out

    # -- the rest of the protocol -----------------------------------------------------------

    def _frame_header_ok(self, b0: int, n: int) -> bool:
        opcode = b0 & 0x0F
        if OP_BINARY < opcode < OP_CLOSE or opcode > OP_PONG:
            self._fail(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            return False
        if opcode >= OP_CLOSE:
            if not b0 & FIN or n > 125:
                self._fail(CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame")
                return False
            return True
        if opcode == OP_CONTINUATION and not self._fragments:
            self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            return False
        if opcode != OP_CONTINUATION and self._fragments:
            self._fail(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
            return False
        size = self._fragments_size + n
        if size > self.max_message_bytes:
            limit = self.max_message_bytes
            self._fail(CLOSE_MESSAGE_TOO_BIG, f"a message of {size}+ bytes (limit {limit})")
            return False
        return True

    def _frame(self, b0: int, payload: bytes) -> bytes | None:
        opcode = b0 & 0x0F
        if opcode == OP_PING:
            self.outgoing += client_frame(OP_PONG, payload)
            return None
        if opcode == OP_PONG:
            self.pongs.append(payload)
            return None
        if opcode == OP_CLOSE:
            self._peer_closed(payload)
            return None
        fin = bool(b0 & FIN)
        if opcode == OP_TEXT:
            self._utf8_stream = _UTF8()
        elif opcode == OP_BINARY:
            self._utf8_stream = None
        if self._utf8_stream is not None:
            try:
                self._utf8_stream.decode(payload, final=fin)
            except UnicodeDecodeError:
                self._fail(CLOSE_INVALID_DATA, "text message is not UTF-8")
                return None
        self._fragments.append(payload)
        self._fragments_size += len(payload)
        if not fin:
            return None
        message = b"".join(self._fragments)
        self._fragments = []
        self._fragments_size = 0
        return message

    def _utf8(self, payload: bytes) -> bool:
        if payload.isascii():
            return True
        try:
            payload.decode()
        except UnicodeDecodeError:
            self._fail(CLOSE_INVALID_DATA, "text message is not UTF-8")
            return False
        return True

    def _peer_closed(self, payload: bytes) -> None:
        if not payload:
            self.closing = Closing(CLOSE_NO_STATUS, "", by_peer=True)
            self.outgoing += client_frame(OP_CLOSE)
            return
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
        if not _valid_close_code(code):
            self._fail(CLOSE_PROTOCOL_ERROR, f"close frame with invalid code {code}")
            return
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            self._fail(CLOSE_INVALID_DATA, "close reason is not UTF-8")
            return
        self.closing = Closing(code, reason, by_peer=True)
        self.outgoing += client_frame(OP_CLOSE, close_payload(code))

    def _fail(self, code: int, reason: str) -> None:
        """A protocol violation: send a close frame with ``code``, read nothing more."""
        self.closing = Closing(code, reason, by_peer=False)
        self.outgoing += client_frame(OP_CLOSE, close_payload(code, reason))
