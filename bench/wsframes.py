"""Just enough RFC 6455 for the harness's own feeder and subscribers.

The feeder and the subscribers are deliberately not built on a WebSocket library: they must cost
far less per message than any server under test, so the servers are what is measured. Frames
from a server are unmasked, so a subscriber can count records by scanning the raw byte stream.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def client_handshake(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """The upgrade request and the Sec-WebSocket-Accept value it must be answered with."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
    ).encode()
    return request, accept_key(key)


def server_handshake_response(request: bytes) -> bytes:
    """The 101 answer to an upgrade request (no extensions, no subprotocol)."""
    key = b""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if not key:
        raise ValueError("upgrade request without Sec-WebSocket-Key")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )


def frame_header(opcode: int, length: int, *, masked: bool = False) -> bytes:
    first = 0x80 | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def server_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    return frame_header(opcode, len(payload)) + payload


def _xor(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    mask = os.urandom(4)
    return frame_header(opcode, len(payload), masked=True) + mask + _xor(payload, mask)


def parse_frame(buf: bytes | bytearray, pos: int) -> tuple[int, bytes, int] | None:
    """(opcode, unmasked payload, next position) of the frame at ``pos``, or None if incomplete."""
    if len(buf) - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    head = pos + 2
    if length == 126:
        if len(buf) - head < 2:
            return None
        (length,) = struct.unpack_from("!H", buf, head)
        head += 2
    elif length == 127:
        if len(buf) - head < 8:
            return None
        (length,) = struct.unpack_from("!Q", buf, head)
        head += 8
    mask = b""
    if b1 & 0x80:
        if len(buf) - head < 4:
            return None
        mask = bytes(buf[head : head + 4])
        head += 4
    end = head + length
    if len(buf) < end:
        return None
    payload = bytes(buf[head:end])
    if mask:
        payload = _xor(payload, mask)
    return b0 & 0x0F, payload, end
