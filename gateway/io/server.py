"""The subscriber WebSocket server (I/O): it listens, runs each connection, and shuts down.

What to deliver is decided by the sans-IO ``Hub``; how the bytes get onto the socket is
``io.delivery`` (the ``Flusher``, and each connection's ``Delivery`` with its writer task). This
module accepts connections and runs each one: its delivery's writer (the only task that waits for
the client), a reader (requests into ``hub.receive``) and a pinger (``io.subscriber_conn``). The
upstream tasks never wait for a subscriber: ``hub.publish`` only appends to buffers, and the
hub's policy handles one that overflows. trio-websocket does the handshake, reads requests and
writes the control frames (pings, pongs, close) under the lock the fast path shares
(``io.socket_writer.adopt``). Who may connect is ``io.accept`` (at accept) and ``io.handshake``
(at the upgrade request); the paths it serves are ``fanout.routes``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Protocol, cast

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from gateway.contract.protocol import CLOSE_GOING_AWAY, CLOSE_REASON_SHUTDOWN
from gateway.fanout.access import ConnectionRateLimiter, TokenAuth
from gateway.fanout.admission import PendingBudget, PendingRefusal
from gateway.fanout.hub import Hub
from gateway.fanout.routes import Route
from gateway.io.accept import AdmittingWebSocketServer
from gateway.io.contained_nursery import ContainedNursery
from gateway.io.delivery import Delivery, Flusher
from gateway.io.handshake import HandshakeGate
from gateway.io.resume_wait import ResumeWait
from gateway.io.socket_writer import adopt
from gateway.io.subscriber_conn import SubscriberConnection, ping, read_requests

if TYPE_CHECKING:
    from gateway.io.metrics import Metrics

__all__ = ["FINAL_CLOSE_TIMEOUT", "Server", "ServerSettings"]

log = logging.getLogger("gateway.server")

# Requests between max_request_bytes and this multiple of it get a ``too_large`` answer; beyond
# it trio-websocket closes the connection (1009) rather than buffer an unbounded frame.
HARD_FRAME_FACTOR: Final = 4
# How long a closing handshake (or the last send of a slow subscriber) may take before the
# TCP connection is simply dropped.
CLOSE_TIMEOUT: Final = 5.0
# At shutdown, after the drain timeout: how long the subscribers still open get to take their
# close frame before they are dropped. Short: they have had the whole drain already.
FINAL_CLOSE_TIMEOUT: Final = 1.0


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
        (the reference behaviour; for tests and comparison). ``rate_limiter`` and ``auth`` are
        checked at the handshake (``io.handshake``), before anything else; None: no limit, no
        authentication."""
        self.hub = hub
        # An edge (docs/cluster.md) holds a resume for a seq it has not applied (None: never).
        self.resume_wait: ResumeWait | None = None
        self.gate = HandshakeGate(metrics, rate_limiter, auth)
        self.settings = settings
        self.metrics = metrics
        self.close_timeout = close_timeout
        self.port: int | None = None
        self._connections: set[SubscriberConnection] = set()
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
        self._flusher.attach(hub)

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
                    "trio.Nursery", ContainedNursery(nursery, self._connection_task_failed)
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
        self.gate.refused_at_accept(why, client, self.pending.pending)

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

    async def _handle(self, request: WebSocketRequest) -> None:
        full = self._slots >= self.settings.max_subscribers
        wanted = await self.gate.admit(request, closing=self._closing, full=full)
        if wanted is None:
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
        conn = SubscriberConnection(sub, delivery)
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
                nursery.start_soon(read_requests, hub, ws, conn, self.resume_wait)
                nursery.start_soon(
                    ping, ws, conn, self.settings.ping_interval, self.settings.ping_timeout
                )
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
