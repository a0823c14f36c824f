"""RFC 6455 framing, the gateway's one home for it: opcodes and unmasked server frames.

A server-to-client frame is not masked, so its bytes are the same for every subscriber of an
encoding: the hub builds each outgoing message's frame once (``build_frame``) and every
subscriber's buffer shares it. The upstream client (``ingest.wsclient``) takes its opcodes from
here and builds its own masked control frames; ``io.delivery`` writes frames built here.
(``simulator.framing`` and ``bench.wsframes`` frame independently on purpose: they check the
gateway from outside.)

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FIN",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "build_frame",
    "frame_header",
    "header_length",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

FIN: Final = 0x80

# Header bytes of small unmasked final frames, by opcode and length: the common case costs a
# tuple lookup.
_SMALL: Final = {op: tuple(bytes((FIN | op, n)) for n in range(126)) for op in (OP_TEXT, OP_BINARY)}


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, final (FIN) frame carrying ``length`` payload bytes."""
    if length < 126:
        small = _SMALL.get(opcode)
        return small[length] if small is not None else bytes((FIN | opcode, length))
    if length < 65536:
        return bytes((FIN | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((FIN | opcode, 127)) + length.to_bytes(8, "big")


def build_frame(payload: bytes, opcode: int) -> bytes:
    """One complete server-to-client WebSocket frame: the same bytes for every subscriber."""
    return frame_header(opcode, len(payload)) + payload


def header_length(frame: bytes) -> int:
    """The header length of an unmasked frame built by ``build_frame`` (its payload follows)."""
    n = frame[1] & 0x7F
    return 2 if n < 126 else 4 if n == 126 else 10
