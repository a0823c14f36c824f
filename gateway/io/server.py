"""The subscriber WebSocket server (I/O): admission, one writer task per subscriber, pings,
shutdown. The paths it serves are ``fanout.routes``.

What to deliver is decided by the sans-IO ``Hub``; how the bytes get onto the socket is
``io.delivery`` (the ``Flusher``, and each connection's ``Delivery`` with its writer task). This
module accepts connections and runs each one: its delivery's writer (the only task that waits for
the client), a reader (requests into ``hub.receive``) and a pinger. The upstream tasks never wait
for a subscriber: ``hub.publish`` only appends to buffers, and the hub's policy handles one that
overflows. trio-websocket does the handshake, reads requests and writes the control frames
(pings, pongs, close) under the lock the fast path shares (``io.socket_writer.adopt``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal, Protocol, cast
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from gateway.contract.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_PING_TIMEOUT,
    CLOSE_REASON_PING_TIMEOUT,
    CLOSE_REASON_SHUTDOWN,
    CLOSE_SLOW,
)
from gateway.fanout.access import ConnectionRateLimiter, LogBudget, TokenAuth, client_key
from gateway.fanout.admission import PendingBudget, PendingRefusal
from gateway.fanout.hub import Hub, Subscriber
from gateway.fanout.routes import Route, RouteError, route
from gateway.io.accept import AdmittingWebSocketServer
from gateway.io.delivery import Delivery, DisconnectReason, Flusher
from gateway.io.resume_wait import wait_for_resume_points
from gateway.io.socket_writer import adopt

if TYPE_CHECKING:
    from gateway.io.metrics import Metrics

__all__ = ["RejectReason", "Server", "ServerSettings"]

log = logging.getLogger("gateway.server")

# rejected_connections_total{reason}: at the handshake (``_reject``), and at accept
# (``admission.PENDING_REFUSALS``). All exposed at 0 from the start.
RejectReason = Literal[
    "rate_limited", "unauthorized", "not_found", "bad_request", "max_subscribers",
    "shutting_down", "pending_per_ip", "pending_total",
]  # fmt: skip

# Requests between max_request_bytes and this multiple of it get a ``too_large`` answer; beyond
# it trio-websocket closes the connection (1009) rather than buffer an unbounded frame.
HARD_FRAME_FACTOR: Final = 4
# How long a closing handshake (or the last send of a slow subscriber) may take before the
# TCP connection is simply dropped.
CLOSE_TIMEOUT: Final = 5.0
# At shutdown, after the drain timeout: how long the subscribers still open get to take their
# close frame before they are dropped. Short: they have had the whole drain already.
FINAL_CLOSE_TIMEOUT: Final = 1.0
# Request errors logged per connection; a hostile client must not flood the log.
MAX_LOGGED_ERRORS: Final = 5

# RFC 6455 close codes of protocol violations found by wsproto (io/accept.py): protocol error
# (1002), a text frame that is not UTF-8 (1007).
_VIOLATION_CODES: Final = (1002, 1007)


class ServerSettings(Protocol):
    """The ``[server]`` section (``config.ServerConfig``)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def max_subscribers(self) -> int: ...
    @property
    def ping_interval(self) -> float: ...
    @property
    def ping_timeout(self) -> float: ...
    @property
    def handshake_timeout(self) -> float: ...
    @property
    def max_pending(self) -> int: ...
    @property
    def max_pending_per_ip(self) -> int: ...
    @property
    def send_buffer_bytes(self) -> int: ...


class _Connection:
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


def _peer(request: WebSocketRequest) -> str:
    """The TCP peer's address (never X-Forwarded-For: any client can send that)."""
    remote = request.remote
    return str(remote.address) if isinstance(remote, Endpoint) else remote


class Server:
    """The subscriber server. ``await nursery.start(server.run)`` returns once listening."""

    def __init__(
        self,
        hub: Hub,
        settings: ServerSettings,
        metrics: Metrics | None = None,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        fast_path: bool = True,
        rate_limiter: ConnectionRateLimiter | None = None,
        auth: TokenAuth | None = None,
    ) -> None:
        """``fast_path=False`` sends every message through trio-websocket's ``send_message``
        (the reference behaviour; for tests and comparison). ``rate_limiter`` (new connections
        per client address) and ``auth`` (bearer tokens) are checked at the handshake, before
        anything else; None: no limit, no authentication."""
        self.hub = hub
        # s an edge waits for a resume point it has not seen (cluster.resume_wait; 0: never)
        self.resume_wait = 0.0
        self.next_batch: Callable[[], trio.Event] = trio.Event  # the edge's, when it waits
        self.rate_limiter = rate_limiter
        self.auth = auth
        self._log_budget = LogBudget()
        self.settings = settings
        self.metrics = metrics
        self.close_timeout = close_timeout
        self.port: int | None = None
        self._connections: set[_Connection] = set()
        self._slots = 0  # connections accepted or being accepted
        self._closing = False
        self._accept_scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._idle = trio.Event()
        self.fast_path = fast_path
        # Connections from accept until their upgrade request is read (io/accept.py).
        self.pending = PendingBudget(settings.max_pending, settings.max_pending_per_ip)
        self._flusher = Flusher()
        self._flusher.after = self._count_flushed

    def _count_flushed(self) -> None:
        flusher = self._flusher
        if flusher.sent_bytes:
            self._count_sent(flusher.sent_bytes)
        flusher.sent_bytes = 0

    def _count_sent(self, n: int) -> None:
        if self.metrics is not None:
            self.metrics.sent_bytes.inc(n)

    @property
    def subscriber_count(self) -> int:
        return len(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``shutdown`` has finished (or until cancelled)."""
        s = self.settings
        listeners = await trio.open_tcp_listeners(s.port, host=s.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher.run)
            # Connection handlers run in this nursery, outside the accept loop's cancel scope,
            # so that shutdown can stop accepting while it drains the open connections.
            server = AdmittingWebSocketServer(
                self._handle,
                listeners,
                budget=self.pending,
                on_refused=self._refused_at_accept,
                send_buffer_bytes=s.send_buffer_bytes,
                # trio documents "any object with a start_soon method"; the stubs say Nursery.
                handler_nursery=cast(
                    "trio.Nursery", _ContainedNursery(nursery, self._connection_task_failed)
                ),
                # The hub judges request sizes; its limit is the one source of truth.
                max_message_size=max(HARD_FRAME_FACTOR * self.hub.max_request_bytes, 4096),
                connect_timeout=s.handshake_timeout,
                disconnect_timeout=self.close_timeout,
            )
            await nursery.start(self._accept, server)
            log.info(
                "subscriber server listening",
                extra={"event": "server_listening", "host": s.host, "port": self.port},
            )
            task_status.started(self)
            await self._stopped.wait()
            nursery.cancel_scope.cancel()

    def _connection_task_failed(self, exc: Exception) -> None:
        log.warning(
            "subscriber connection task failed inside the WebSocket library: %r", exc,
            extra={"event": "connection_task_failed", "error": repr(exc)},
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.connection_task_failures.inc()

    def _refused_at_accept(self, why: PendingRefusal, client: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected_connections.labels(why).inc()
        suppressed = self._log_budget.allow(trio.current_time())
        if suppressed is not None:
            log.info(
                "subscriber rejected",
                extra={"event": "subscriber_rejected", "status": 503, "why": why,
                       "client": client, "pending": self.pending.pending,
                       "suppressed": suppressed},
            )  # fmt: skip

    async def _accept(
        self,
        server: WebSocketServer,
        *,
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self._accept_scope:
            await server.run(task_status=task_status)

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting, drain every subscriber's buffer and close it with 1001 ``gateway
        shutting down, reconnect elsewhere``, then stop ``run``: all within ``drain_timeout``
        + ``FINAL_CLOSE_TIMEOUT`` seconds.

        The drain includes the closing handshakes: a subscriber that took its data but does
        not answer the close frame is waited for until the drain timeout, no longer (it used
        to get ``close_timeout`` more, 5 s, whenever its close began late in the drain). What
        is still open then (undelivered data, an unanswered close) gets its close frame within
        ``FINAL_CLOSE_TIMEOUT`` or is dropped, and ``run`` cancels whatever remains."""
        self._closing = True
        self._accept_scope.cancel()
        for conn in list(self._connections):
            self.hub.close(conn.sub, CLOSE_GOING_AWAY, CLOSE_REASON_SHUTDOWN, drain=True)
        if self._connections:
            self._idle = trio.Event()
            with trio.move_on_after(drain_timeout):
                await self._idle.wait()
        if self._connections:
            log.warning(
                "drain timeout: closing subscribers with undelivered data",
                extra={"event": "drain_timeout", "subscribers": len(self._connections)},
            )
            self.close_timeout = min(self.close_timeout, FINAL_CLOSE_TIMEOUT)
            for conn in list(self._connections):
                conn.end("shutdown", CLOSE_GOING_AWAY, CLOSE_REASON_SHUTDOWN)
            with trio.move_on_after(FINAL_CLOSE_TIMEOUT):
                await self._idle.wait()
        self._stopped.set()  # ``run`` cancels the connections still closing

    # -- one connection --------------------------------------------------------------------

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
                    "client": _peer(request),
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

    async def _handle(self, request: WebSocketRequest) -> None:
        if self.rate_limiter is not None:
            wait = self.rate_limiter.check(client_key(_peer(request)), trio.current_time())
            if wait > 0:
                await self._reject(
                    request,
                    429,
                    "too many new connections from this address, retry later",
                    "rate_limited",
                    retry_after=max(1, math.ceil(wait)),
                )
                return
        if self.auth is not None and not self.auth.check(request.headers):
            # One answer for a missing, malformed or wrong token: nothing to learn from it.
            await self._reject(request, 401, "unauthorized", "unauthorized")
            return
        try:
            wanted = route(request.path)
        except RouteError as exc:
            reason: RejectReason = "not_found" if exc.status == 404 else "bad_request"
            await self._reject(request, exc.status, str(exc), reason)
            return
        if self._closing:
            await self._reject(request, 503, "gateway shutting down", "shutting_down")
            return
        if self._slots >= self.settings.max_subscribers:
            await self._reject(request, 503, "too many subscribers, try later", "max_subscribers")
            return
        self._slots += 1
        try:
            try:
                ws = await request.accept()
            except ConnectionClosed:
                return
            await self._serve(ws, wanted)
        finally:
            self._slots -= 1

    async def _serve(self, ws: WebSocketConnection, wanted: Route) -> None:
        hub = self.hub
        writer = await adopt(ws) if self.fast_path else None
        sub = hub.connect(wanted.encoding, hello=not wanted.mirror)
        delivery = Delivery(
            sub, writer=writer, ws=ws, flusher=self._flusher, close_timeout=self.close_timeout,
            on_sent=self._count_sent,
        )  # fmt: skip
        conn = _Connection(sub, delivery)
        if wanted.streams:
            hub.subscribe(sub, wanted.streams, resume=wanted.resume, wait_for_streams=True)
        self._connections.add(conn)
        if self._closing:  # accepted while shutdown began: it only gets the close
            hub.close(sub, CLOSE_GOING_AWAY, CLOSE_REASON_SHUTDOWN, drain=False)
        if self.metrics is not None:
            self.metrics.subscribers.inc()
        log.info(
            "subscriber connected",
            extra={"event": "subscriber_connected", "subscriber": sub.id, "path": ws.path},
        )
        try:
            async with trio.open_nursery() as nursery:
                conn.cancel = nursery.cancel_scope.cancel
                nursery.start_soon(delivery.run, conn.end)
                nursery.start_soon(self._reader, ws, conn)
                nursery.start_soon(self._pinger, ws, conn)
            delivery.done = True
            if ws.closed is None:
                # An interrupted write leaves half a frame on the socket: drop the TCP connection
                # at once (a zero deadline makes aclose skip straight to closing the stream).
                mid_frame = delivery.mid_frame
                if mid_frame and writer is not None:
                    writer.abort()
                with trio.move_on_after(0 if mid_frame else self.close_timeout):
                    await ws.aclose(conn.close_code, conn.close_reason or None)
        finally:
            delivery.done = True
            hub.disconnect(sub)
            self._connections.discard(conn)
            if not self._connections:
                self._idle.set()
            reason = conn.reason or "error"
            if self.metrics is not None:
                self.metrics.subscribers.dec()
                self.metrics.subscriber_disconnects.labels(reason).inc()
            if reason in ("slow", "ping_timeout", "error"):
                log.info(
                    "subscriber disconnected",
                    extra={
                        "event": "subscriber_disconnected",
                        "subscriber": sub.id,
                        "reason": reason,
                        "close_code": conn.close_code,
                        "close_reason": conn.close_reason[:123],
                    },
                )

    async def _reader(self, ws: WebSocketConnection, conn: _Connection) -> None:
        hub, sub = self.hub, conn.sub
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
            if self.resume_wait:  # an edge (docs/cluster.md): a seq not yet seen is waited for
                await wait_for_resume_points(hub, sub, message, self.resume_wait, self.next_batch)
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

    async def _pinger(self, ws: WebSocketConnection, conn: _Connection) -> None:
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(timeout) as scope:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    conn.end("client_close")
                    return
            if scope.cancelled_caught:
                conn.end("ping_timeout", CLOSE_PING_TIMEOUT, CLOSE_REASON_PING_TIMEOUT)
                return


class _ContainedNursery:
    """The server's nursery as trio-websocket's ``handler_nursery``, containing each
    connection task's failure to that connection.

    trio-websocket 0.12.2 answers a ping that arrives after the closing handshake has begun
    with a Pong that wsproto refuses (``LocalProtocolError`` in ``LOCAL_CLOSING``), and the
    error escapes its per-connection reader task. Seen in the reconnect-storm test at
    shutdown: one client's late ping took the whole subscriber server down. The connection is
    over by then anyway, so one library failure ends one connection: logged and counted
    (``paxos_gateway_connection_task_failures_total``), never the server.
    """

    def __init__(self, nursery: trio.Nursery, on_failure: Callable[[Exception], None]) -> None:
        self._nursery = nursery
        self._on_failure = on_failure

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        self._nursery.start_soon(self._contained, fn, args, name=name or fn)

    async def _contained(
        self, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # Cancelled is a BaseException: shutdown still goes through
            self._on_failure(exc)
