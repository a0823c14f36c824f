"""The upstream WebSocket's opening handshake, client side, sans-IO.

The handshake uses h11 (an HTTP/1.1 response may come in any number of pieces, with headers
folded in any case); an answer other than 101 is a ``Rejected`` with its status and the start of
its body, a 101 without the right ``Sec-WebSocket-Accept`` is a ``HandshakeError``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Final

import h11

__all__ = [
    "MAX_REJECTION_BODY", "MAX_RESPONSE_HEAD", "Handshake", "HandshakeError", "Rejected",
    "accept_token",
]  # fmt: skip

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Enough of a refusal's body to tell the operator why (e.g. Paxos's "Not Found").
MAX_REJECTION_BODY: Final = 4096
MAX_RESPONSE_HEAD: Final = 16384


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


@dataclass(frozen=True, slots=True)
class Rejected:
    """The server answered the upgrade with an HTTP status instead of 101."""

    status: int
    body: bytes


class HandshakeError(Exception):
    """The server's answer is no valid WebSocket upgrade (a protocol error)."""


class Handshake:
    """Client side of the opening handshake: send ``request``, feed what arrives to ``receive``
    until it returns True; then ``rejected`` is set, or ``leftover`` holds the bytes that came
    after the 101 response (frames the server sent at once, as Paxos does)."""

    def __init__(self, host_header: str, resource: str, *, key: bytes | None = None) -> None:
        self.key = key if key is not None else base64.b64encode(os.urandom(16))
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.request = self._h11.send(
            h11.Request(
                method="GET",
                target=resource,
                headers=[
                    (b"Host", host_header.encode("idna" if not host_header.isascii() else "ascii")),
                    (b"Upgrade", b"websocket"),
                    (b"Connection", b"Upgrade"),
                    (b"Sec-WebSocket-Key", self.key),
                    (b"Sec-WebSocket-Version", b"13"),
                    (b"User-Agent", b"paxos-gateway"),
                ],
            )
        ) + (self._h11.send(h11.EndOfMessage()) or b"")
        self.rejected: Rejected | None = None
        self.leftover = b""
        self._status = 0
        self._body = bytearray()

    def receive(self, data: bytes) -> bool:
        """Feed received bytes (``b""`` at EOF). True once the handshake is decided."""
        conn = self._h11
        conn.receive_data(data)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HandshakeError(f"bad HTTP response: {exc}") from None
            if event is h11.NEED_DATA:
                if not data:  # EOF before the answer was complete
                    if self._status:
                        return self._reject()
                    raise HandshakeError("connection closed during the handshake")
                return False
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                if self._status:
                    return self._reject()
                raise HandshakeError("connection closed during the handshake")
            if isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    continue  # 1xx other than 101: keep waiting for the real answer
                self._accept(list(event.headers))
                self.leftover = conn.trailing_data[0]
                return True
            if isinstance(event, h11.Response):
                self._status = event.status_code
            elif isinstance(event, h11.Data):
                room = MAX_REJECTION_BODY - len(self._body)
                self._body += event.data[: max(0, room)]
            elif isinstance(event, h11.EndOfMessage):
                return self._reject()

    def _reject(self) -> bool:
        self.rejected = Rejected(self._status, bytes(self._body))
        return True

    def _accept(self, headers: list[tuple[bytes, bytes]]) -> None:
        values: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            values.setdefault(name.lower(), []).append(value)
        upgrade = b",".join(values.get(b"upgrade", [])).lower()
        connection = b",".join(values.get(b"connection", [])).lower()
        if upgrade.strip() != b"websocket":
            raise HandshakeError("101 response without 'Upgrade: websocket'")
        if b"upgrade" not in (t.strip() for t in connection.split(b",")):
            raise HandshakeError("101 response without 'Connection: Upgrade'")
        if values.get(b"sec-websocket-accept") != [accept_token(self.key)]:
            raise HandshakeError("101 response with a wrong Sec-WebSocket-Accept")
        if values.get(b"sec-websocket-extensions"):
            raise HandshakeError("the server accepted an extension that was never offered")
