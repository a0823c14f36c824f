"""Server-to-client WebSocket text frames (RFC 6455 section 5.2), built by hand.

Data frames are written straight to the stream in batches, one socket write for many
messages; going through trio-websocket costs one write per message, which made the
simulator, not the gateway, the bottleneck of a benchmark. trio-websocket still does the
handshake, pings and the close handshake. No extension is ever negotiated (the server
accepts none), server frames are never masked, so a frame is just a header and the bytes.
"""

from __future__ import annotations


def text_frame(text: str) -> bytes:
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload
