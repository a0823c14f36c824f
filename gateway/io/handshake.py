"""Who may become a subscriber, decided at the WebSocket handshake, and how a refusal is told.

In order, cheapest and most hostile first: the rate limit per client address
(``fanout.access.ConnectionRateLimiter``), the bearer token (``TokenAuth``), the path
(``fanout.routes``), shutdown, and the subscriber limit. A refusal is an HTTP answer (429, 401,
404/400, 503 with ``Retry-After``), counted in ``rejected_connections_total{reason}`` and logged
within a ``LogBudget``; refusals at accept (``io.accept``) go through the same count and budget.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, Endpoint, WebSocketRequest

from gateway.fanout.access import ConnectionRateLimiter, LogBudget, TokenAuth, client_key
from gateway.fanout.admission import PendingRefusal
from gateway.fanout.routes import Route, RouteError, route

if TYPE_CHECKING:
    from gateway.io.metrics import Metrics

__all__ = ["HandshakeGate", "RejectReason", "peer"]

log = logging.getLogger("gateway.server")

# rejected_connections_total{reason}: at the handshake (``HandshakeGate.admit``), and at accept
# (``admission.PENDING_REFUSALS``). All exposed at 0 from the start.
RejectReason = Literal[
    "rate_limited", "unauthorized", "not_found", "bad_request", "max_subscribers",
    "shutting_down", "pending_per_ip", "pending_total",
]  # fmt: skip


def peer(request: WebSocketRequest) -> str:
    """The TCP peer's address (never X-Forwarded-For: any client can send that)."""
    remote = request.remote
    return str(remote.address) if isinstance(remote, Endpoint) else remote


class HandshakeGate:
    """The handshake's checks and the refusals' answers, counts and logs."""

    def __init__(
        self,
        metrics: Metrics | None,
        rate_limiter: ConnectionRateLimiter | None,
        auth: TokenAuth | None,
    ) -> None:
        """``rate_limiter`` (new connections per client address) and ``auth`` (bearer tokens):
        None means no limit, no authentication."""
        self.metrics = metrics
        self.rate_limiter = rate_limiter
        self.auth = auth
        self._log_budget = LogBudget()

    async def admit(self, request: WebSocketRequest, *, closing: bool, full: bool) -> Route | None:
        """The route the request asks for, or None once it has been refused (answered)."""
        if self.rate_limiter is not None:
            wait = self.rate_limiter.check(client_key(peer(request)), trio.current_time())
            if wait > 0:
                await self._reject(
                    request,
                    429,
                    "too many new connections from this address, retry later",
                    "rate_limited",
                    retry_after=max(1, math.ceil(wait)),
                )
                return None
        if self.auth is not None and not self.auth.check(request.headers):
            # One answer for a missing, malformed or wrong token: nothing to learn from it.
            await self._reject(request, 401, "unauthorized", "unauthorized")
            return None
        try:
            wanted = route(request.path)
        except RouteError as exc:
            reason: RejectReason = "not_found" if exc.status == 404 else "bad_request"
            await self._reject(request, exc.status, str(exc), reason)
            return None
        if closing:
            await self._reject(request, 503, "gateway shutting down", "shutting_down")
            return None
        if full:
            await self._reject(request, 503, "too many subscribers, try later", "max_subscribers")
            return None
        return wanted

    def refused_at_accept(self, why: PendingRefusal, client: str, pending: int) -> None:
        """Count and log a refusal ``io.accept`` has answered already."""
        if self.metrics is not None:
            self.metrics.rejected_connections.labels(why).inc()
        suppressed = self._log_budget.allow(trio.current_time())
        if suppressed is not None:
            log.info(
                "subscriber rejected",
                extra={"event": "subscriber_rejected", "status": 503, "why": why,
                       "client": client, "pending": pending, "suppressed": suppressed},
            )  # fmt: skip

    async def _reject(
        self,
        request: WebSocketRequest,
        status: int,
        text: str,
        why: RejectReason,
        *,
        retry_after: int | None = None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.rejected_connections.labels(why).inc()
        suppressed = self._log_budget.allow(trio.current_time())
        if suppressed is not None:
            # Never the headers (a token), and no query for access failures: a client may have
            # put a token there although the gateway ignores it.
            path = request.path if status not in (401, 429) else urlsplit(request.path).path
            log.info(
                "subscriber rejected",
                extra={
                    "event": "subscriber_rejected",
                    "status": status,
                    "why": why,
                    "path": path[:200],
                    "client": peer(request),
                    "suppressed": suppressed,
                },
            )
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        if status == 503:
            retry_after = 5
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="paxos-gateway"'))
        with contextlib.suppress(ConnectionClosed):
            await request.reject(status, extra_headers=headers, body=text.encode() + b"\n")
