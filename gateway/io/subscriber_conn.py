"""One subscriber connection's cold tasks: the reader (requests into ``hub.receive``), the
pinger, and the one place that records why the connection ended.

The writer, the only task that waits for the client to read, is the connection's ``Delivery``
(``io.delivery``); ``io.server`` runs the three in one nursery whose cancel is ``end``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway.contract.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_PING_TIMEOUT,
    CLOSE_REASON_PING_TIMEOUT,
    CLOSE_SLOW,
)
from gateway.fanout.hub import Hub, Subscriber
from gateway.io.delivery import Delivery, DisconnectReason
from gateway.io.resume_wait import ResumeWait, wait_for_resume_points

__all__ = ["MAX_LOGGED_ERRORS", "SubscriberConnection", "ping", "read_requests"]

log = logging.getLogger("gateway.server")

# Request errors logged per connection; a hostile client must not flood the log.
MAX_LOGGED_ERRORS: Final = 5

# RFC 6455 close codes of protocol violations found by wsproto (io/accept.py): protocol error
# (1002), a text frame that is not UTF-8 (1007).
_VIOLATION_CODES: Final = (1002, 1007)


class SubscriberConnection:
    """One subscriber connection's tasks: its delivery (``io.delivery``), reader and pinger,
    and why it ended."""

    __slots__ = ("cancel", "close_code", "close_reason", "delivery", "errors", "reason", "sub")

    def __init__(self, sub: Subscriber, delivery: Delivery) -> None:
        self.sub = sub
        self.delivery = delivery
        self.reason: DisconnectReason | None = None
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.cancel: Callable[[], None] = lambda: None
        self.errors = 0

    def end(self, reason: DisconnectReason, code: int = CLOSE_NORMAL, text: str = "") -> None:
        """The first reason to end the connection wins; the tasks are stopped. Once the hub has
        closed the subscriber (slow, shutdown), that is the reason, whatever happens next."""
        if self.reason is None:
            if self.sub.close_code == CLOSE_SLOW:
                reason, code, text = "slow", CLOSE_SLOW, self.sub.close_reason
            elif self.sub.close_code == CLOSE_GOING_AWAY:
                reason, code, text = "shutdown", CLOSE_GOING_AWAY, self.sub.close_reason
            self.reason, self.close_code, self.close_reason = reason, code, text
        self.cancel()


async def read_requests(
    hub: Hub,
    ws: WebSocketConnection,
    conn: SubscriberConnection,
    resume_wait: ResumeWait | None = None,
) -> None:
    """Hand each request to the hub until the client closes (or breaks the protocol).
    ``resume_wait`` (an edge, docs/cluster.md): a resume for a seq not applied yet is held."""
    sub = conn.sub
    while True:
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            closed = ws.closed
            if closed is not None and closed.code == CLOSE_MESSAGE_TOO_BIG:
                conn.end("error", CLOSE_MESSAGE_TOO_BIG, "request frame too big")
            elif closed is not None and closed.code in _VIOLATION_CODES:
                # A protocol violation: io/accept.py has sent the close frame already.
                conn.end("error", closed.code, closed.reason or "")
            else:
                conn.end("client_close")
            return
        if resume_wait is not None:
            await wait_for_resume_points(
                hub, sub, message, resume_wait.wait, resume_wait.next_batch
            )
        error = hub.receive(sub, message)
        if error is not None:
            conn.errors += 1
            if conn.errors <= MAX_LOGGED_ERRORS:
                log.info(
                    "subscriber request refused",
                    extra={
                        "event": "request_refused",
                        "subscriber": sub.id,
                        "code": error.code,
                        "error": error.message,
                    },
                )
        # A client flooding requests must not starve the other tasks.
        await trio.lowlevel.checkpoint()


async def ping(
    ws: WebSocketConnection, conn: SubscriberConnection, interval: float, pong_within: float
) -> None:
    """Ping every ``interval`` seconds; end the connection when a pong takes longer than
    ``pong_within``."""
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(pong_within) as scope:
            try:
                await ws.ping()
            except ConnectionClosed:
                conn.end("client_close")
                return
        if scope.cancelled_caught:
            conn.end("ping_timeout", CLOSE_PING_TIMEOUT, CLOSE_REASON_PING_TIMEOUT)
            return
