"""From accept to the upgrade request: admission, the socket's send buffer, protocol violations.

trio-websocket's ``WebSocketServer`` accepts every connection, reads its upgrade request (for up
to ``connect_timeout``) and hands it to the gateway's handler. Three things the gateway needs
happen before or below that handler, so ``AdmittingWebSocketServer`` replaces the library's
per-connection function (``_handle_connection``, the same 20 lines plus these):

* **Admission at accept** (``fanout.admission.PendingBudget``, its docstring has the numbers):
  a connection is counted from accept until its request has been read, per client address and
  in total; beyond either limit it is answered ``503`` with ``Retry-After`` and closed before a
  byte of it is read, counted in ``rejected_connections_total{reason="pending_per_ip"|
  "pending_total"}``.
* **The kernel's send buffer** (``server.send_buffer_bytes``): set on the accepted socket, so
  that what a subscriber costs is bounded in the kernel too (docs/operations.md, "Memory").
* **A close frame for protocol violations.** wsproto reports a frame it cannot accept (text
  that is not UTF-8: 1007; a reserved opcode, an unmasked client frame, RSV bits, a control
  frame over 125 bytes or fragmented: 1002) as a ``CloseConnection`` event with the RFC 6455
  code, as if the peer had sent it, while its own state stays ``OPEN``. trio-websocket 0.12
  answers a close event with a close frame only in ``REMOTE_CLOSING`` (a real close from the
  peer), so it closed the TCP connection without one: the client saw an abnormal closure (1006)
  and no reason. ``_ViolationClosingConnection`` sends the close frame with wsproto's code and
  reason first (bounded by ``VIOLATION_CLOSE_TIMEOUT``), then lets the library close as before.
  (A message over ``max_message_size`` already got its 1009 close frame from trio-websocket;
  the TCP connection is now closed after it too, where the library's ``aclose`` returned early
  and left it to the garbage collector.)

Private trio-websocket names used: ``WebSocketServer._handle_connection`` and its settings
(``_handler``, ``_connect_timeout``, ...), ``WebSocketConnection._reader_task``,
``._get_request``, ``._handle_close_connection_event``, ``._send``, ``._wsproto``. Like
``delivery.adopt``, this is tied to the versions in ``delivery.SUPPORTED_VERSIONS``;
``tests/component/test_server.py`` (protocol violations) and ``test_limits.py`` (admission)
fail if a new version moves them.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketServer
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from gateway.fanout.access import client_key
from gateway.fanout.admission import PendingBudget, PendingRefusal

__all__ = ["VIOLATION_CLOSE_TIMEOUT", "AdmittingWebSocketServer", "peer_address"]

log = logging.getLogger("gateway.server")

# How long the close frame after a protocol violation may take to be written (a peer that
# breaks the protocol may also not read).
VIOLATION_CLOSE_TIMEOUT: Final = 1.0
# A close frame's reason: at most 123 bytes (RFC 6455 5.5: control payload <= 125, 2 for code).
_MAX_REASON_BYTES: Final = 123
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
_REFUSAL_TEXT: Final[dict[PendingRefusal, bytes]] = {
    "pending_per_ip": b"too many connections from this address are still handshaking\n",
    "pending_total": b"too many connections are still handshaking\n",
}


def peer_address(stream: trio.abc.Stream) -> str:
    """The TCP peer's address of an accepted stream ("" if it is already gone)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return ""
    try:
        address = sock.getpeername()
    except OSError:
        return ""
    return str(address[0]) if isinstance(address, tuple) else str(address)


class AdmittingWebSocketServer(WebSocketServer):
    """``WebSocketServer`` with admission at accept, a bounded send buffer and close frames
    for protocol violations (module docstring)."""

    def __init__(
        self,
        *args: object,
        budget: PendingBudget,
        on_refused: Callable[[PendingRefusal, str], None],
        send_buffer_bytes: int = 0,
        **kwargs: object,
    ) -> None:
        """``on_refused(reason, client_key)`` counts and logs a refusal; ``send_buffer_bytes``
        0 leaves the kernel's default."""
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.budget = budget
        self._on_refused = on_refused
        self._send_buffer_bytes = send_buffer_bytes

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        key = client_key(peer_address(stream))
        refusal = self.budget.open(key)
        if refusal is not None:
            self._on_refused(refusal, key)
            await _refuse(stream, refusal)
            return
        pending = True
        try:
            self._bound_send_buffer(stream)
            async with trio.open_nursery() as nursery:
                connection = _ViolationClosingConnection(
                    stream,
                    WSConnection(ConnectionType.SERVER),
                    message_queue_size=self._message_queue_size,
                    max_message_size=self._max_message_size,
                    receive_buffer_size=self._receive_buffer_size,
                )
                connect_scope = trio.CancelScope(
                    deadline=trio.current_time() + self._connect_timeout
                )
                nursery.start_soon(_read, connection, connect_scope)
                with connect_scope:
                    request = await connection._get_request()
                if connect_scope.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    return
                pending = False
                self.budget.close(key)
                try:
                    await self._handler(request)
                finally:
                    with trio.move_on_after(self._disconnect_timeout):
                        await connection.aclose()
        finally:
            if pending:
                self.budget.close(key)
            # trio-websocket's aclose returns early once a close reason is set (after a 1009,
            # say) and leaves the socket open: close it here, whatever happened.
            await trio.aclose_forcefully(stream)

    def _bound_send_buffer(self, stream: trio.abc.Stream) -> None:
        sock = getattr(stream, "socket", None)
        if self._send_buffer_bytes and sock is not None:
            # OSError: the peer is already gone; the handshake will notice.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer_bytes)


class _ViolationClosingConnection(WebSocketConnection):
    async def _handle_close_connection_event(self, event: CloseConnection) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            # The peer sent no close frame: wsproto made this event from a protocol violation
            # (ParseFailed). Tell the peer the code before the TCP connection goes.
            reason = (event.reason or "").encode()[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
            log.debug(
                "subscriber protocol violation",
                extra={"event": "protocol_violation", "code": event.code, "reason": reason},
            )
            with trio.move_on_after(VIOLATION_CLOSE_TIMEOUT):
                with contextlib.suppress(ConnectionClosed):
                    await self._send(CloseConnection(code=event.code, reason=reason or None))
        await super()._handle_close_connection_event(event)


async def _read(connection: WebSocketConnection, connect_scope: trio.CancelScope) -> None:
    await connection._reader_task()
    # A peer gone before its request was complete: stop waiting for it at once, rather than
    # hold its pending place until the handshake timeout. (After the request this is a no-op.)
    connect_scope.cancel()


async def _refuse(stream: trio.abc.Stream, refusal: PendingRefusal) -> None:
    """Answer 503 without reading the request, then close; bounded in time, best effort (the
    socket's send buffer is empty, so the write normally completes at once)."""
    text = _REFUSAL_TEXT[refusal]
    with trio.move_on_after(VIOLATION_CLOSE_TIMEOUT):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(_REFUSAL % (len(text), text))
    await trio.aclose_forcefully(stream)
