"""How an upstream connection attempt ends: the fixed set of reasons, and the classification of
errors and close frames into them.

The reasons are a small fixed set because they are metric label values
(``upstream_reconnects``, ``upstream_connect_failures``) and the ``reason`` of disconnected
status records.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Final

from gateway.ingest.ws_handshake import Rejected
from gateway.ingest.wsclient import CLOSE_MESSAGE_TOO_BIG, Closing

# Bounded label values of upstream_reconnects / upstream_connect_failures, and the ``reason``
# of disconnected status records.
CLOSED_BY_SERVER = "closed_by_server"  # the server sent a WebSocket close frame
CONNECTION_LOST = "connection_lost"  # TCP ended without a close frame (reset, EOF, 1006)
PING_TIMEOUT = "ping_timeout"
PROTOCOL_ERROR = "protocol_error"  # WebSocket protocol violation or bad handshake
MESSAGE_TOO_BIG = "message_too_big"  # a frame exceeded max_message_bytes
CROSSED_BOOK = "crossed_book"  # the session asked for a resync
ERROR_FRAME = "error_frame"  # Paxos sent {"error": ...}
CONNECT_TIMEOUT = "connect_timeout"
CONNECT_REFUSED = "connect_refused"
DNS_ERROR = "dns_error"
TLS_ERROR = "tls_error"
NETWORK_ERROR = "network_error"  # any other OSError while connecting
HANDSHAKE_REJECTED = "handshake_rejected"  # HTTP status instead of 101 (404, 429, 503, ...)
INTERNAL_ERROR = "internal_error"  # a bug below us raised; the reconnect re-snapshots
CANCELLED = "cancelled"  # gateway shutdown; not a failure

REASONS = frozenset(
    {
        CLOSED_BY_SERVER, CONNECTION_LOST, PING_TIMEOUT, PROTOCOL_ERROR, MESSAGE_TOO_BIG,
        CROSSED_BOOK, ERROR_FRAME, CONNECT_TIMEOUT, CONNECT_REFUSED, DNS_ERROR, TLS_ERROR,
        NETWORK_ERROR, HANDSHAKE_REJECTED, INTERNAL_ERROR, CANCELLED,
    }
)  # fmt: skip

RECONNECT_REASONS: Final = (
    CLOSED_BY_SERVER, CONNECTION_LOST, PING_TIMEOUT, PROTOCOL_ERROR, MESSAGE_TOO_BIG,
    CROSSED_BOOK, ERROR_FRAME, INTERNAL_ERROR,
)  # fmt: skip
"""How an established connection ends (``upstream_reconnects_total``)."""
CONNECT_FAILURE_REASONS: Final = (
    CONNECT_TIMEOUT, CONNECT_REFUSED, DNS_ERROR, TLS_ERROR, NETWORK_ERROR, HANDSHAKE_REJECTED,
    PROTOCOL_ERROR, INTERNAL_ERROR,
)  # fmt: skip
"""How an attempt fails before the handshake completes (``upstream_connect_failures_total``)."""


class ConnectFailed(Exception):
    """The attempt ended before the WebSocket handshake completed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Ended:
    """How one connection attempt ended."""

    reason: str
    detail: str
    established: bool = False
    lived: float = 0.0
    messages: int = 0
    close_code: int | None = None  # the server's close code, if it sent a close frame


def first_error(error: BaseException) -> BaseException:
    exc = error
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def error_causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (trio raises OSError from an ExceptionGroup of tries)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 32:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        if e.__cause__ is not None:
            todo.append(e.__cause__)
    return seen


def classify_os_error(exc: OSError) -> str:
    causes = error_causes(exc)
    if any(isinstance(e, socket.gaierror) for e in causes):
        return DNS_ERROR
    if any(isinstance(e, ssl.SSLError) for e in causes):
        return TLS_ERROR
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return CONNECT_REFUSED
    return NETWORK_ERROR


def describe_os_error(exc: OSError) -> str:
    leaves = [e for e in error_causes(exc) if not isinstance(e, BaseExceptionGroup)]
    innermost = leaves[-1] if leaves else exc
    return str(exc) if innermost is exc else f"{exc} ({innermost})"


def describe_rejection(rejected: Rejected) -> str:
    body = rejected.body[:200].decode("utf-8", "replace").strip()
    return f"server answered HTTP {rejected.status}" + (f": {body}" if body else "")


def classify_close(closing: Closing) -> tuple[str, str]:
    code = closing.code
    if not closing.by_peer:  # the server broke the protocol; we closed with ``code``
        reason = MESSAGE_TOO_BIG if code == CLOSE_MESSAGE_TOO_BIG else PROTOCOL_ERROR
        return reason, f"{closing.reason} (closed with code {code})"
    text = f"close code {code}" + (f": {closing.reason}" if closing.reason else "")
    if code == CLOSE_MESSAGE_TOO_BIG:
        return MESSAGE_TOO_BIG, text
    if code in (1002, 1003, 1007):
        return PROTOCOL_ERROR, text
    if code in (1005, 1006):
        return CONNECTION_LOST, text
    return CLOSED_BY_SERVER, text


def close_text(reason: str) -> str:
    return {
        CROSSED_BOOK: "resync",
        ERROR_FRAME: "upstream error",
        CANCELLED: "gateway shutting down",
    }.get(reason, reason)
