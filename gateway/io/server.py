"""The subscriber WebSocket server (I/O): routes, one writer task per subscriber, pings, shutdown.

Paths (``docs/protocol.md`` is the full description):

* ``/v1/stream[?encoding=json|msgpack]``: the multiplexed endpoint; requests per ``protocol``.
* ``/v1/{book,trades,price,status}/{MARKET|FEED|*}[?encoding=..][&epoch=E&seq=S]``: the same
  endpoint, subscribed to one stream or pattern at connect time (no request needed).
* ``/executiondata[/M]``, ``/marketdata[/M]``, ``/marketdata/stablecoin[/M]``: Paxos mirrors.

Everything about delivery lives in the sans-IO ``Hub``; this module moves bytes. Each connection
runs a reader (requests into ``hub.receive``), a writer (finishes what the socket did not take at
once; the only task that waits for the client) and a pinger. The upstream tasks never wait for a
subscriber: ``hub.publish`` only appends to buffers, and the hub's policy handles one that
overflows.

Data frames take the fast path of ``delivery`` (why: see its docstring): a buffer that becomes
non-empty schedules its connection with the server's ``Flusher``, which in the next scheduling
tick writes the whole backlog, already framed, with one non-blocking write; only the rest, if
the socket does not take everything, is left to the connection's writer task. trio-websocket
does the handshake, reads requests and writes the control frames (pings, pongs, close) under
the lock the fast path shares. If ``delivery.adopt`` cannot take a connection over (an
untested trio-websocket version), the writer sends through ``send_message`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, cast
from urllib.parse import parse_qsl, unquote, urlsplit

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
    Encoding,
    ResumeFrom,
    StreamNameError,
    encoding_from_query,
    parse_stream,
)
from gateway.fanout import mirror
from gateway.fanout.access import ConnectionRateLimiter, LogBudget, TokenAuth, client_key
from gateway.fanout.hub import Hub, Subscriber
from gateway.io.delivery import Flusher, SocketWriter, adopt

if TYPE_CHECKING:
    from gateway.io.metrics import Metrics

__all__ = ["Route", "RouteError", "Server", "ServerSettings", "route"]

log = logging.getLogger("gateway.server")

DisconnectReason = Literal["slow", "ping_timeout", "client_close", "error", "shutdown"]
RejectReason = Literal[
    "rate_limited", "unauthorized", "not_found", "bad_request", "shutting_down", "max_subscribers"
]

# Requests between max_request_bytes and this multiple of it get a ``too_large`` answer; beyond
# it trio-websocket closes the connection (1009) rather than buffer an unbounded frame.
HARD_FRAME_FACTOR: Final = 4
# How long a closing handshake (or the last send of a slow subscriber) may take before the
# TCP connection is simply dropped.
CLOSE_TIMEOUT: Final = 5.0
# Request errors logged per connection; a hostile client must not flood the log.
MAX_LOGGED_ERRORS: Final = 5

SHORTCUT_KINDS: Final = ("book", "trades", "price", "status")
_DIGITS: Final = re.compile(r"[0-9]{1,20}")


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


@dataclass(frozen=True, slots=True)
class Route:
    """What a connection's URL asks for."""

    encoding: Encoding
    streams: tuple[str, ...] = ()
    resume: dict[str, ResumeFrom] = field(default_factory=dict)
    mirror: bool = False


class RouteError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def route(target: str) -> Route:
    """Parse a request target (path and query); raise ``RouteError`` with the HTTP status."""
    split = urlsplit(target)
    path = unquote(split.path)
    mirrored = mirror.mirror_route(path)
    if mirrored is not None:
        # A Paxos client's URL: whatever it puts in the query is not ours to judge.
        return Route(Encoding.PAXOS, (mirrored.stream,), mirror=True)
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "v1":
        raise RouteError(404, f"no such path {path[:200]!r}; see /v1/stream")
    try:
        query = dict(parse_qsl(split.query, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise RouteError(400, f"bad query string: {exc}") from None
    encoding = encoding_from_query(query.pop("encoding", None))
    if encoding is None:
        raise RouteError(400, "encoding must be json or msgpack")
    epoch, seq = query.pop("epoch", None), query.pop("seq", None)
    if query:
        raise RouteError(400, f"unknown query parameter(s): {', '.join(sorted(query))[:200]}")
    if parts == ["v1", "stream"]:
        if epoch is not None or seq is not None:
            raise RouteError(400, "epoch/seq resume the stream of a shortcut path only")
        return Route(encoding)
    if len(parts) != 3 or parts[1] not in SHORTCUT_KINDS:
        raise RouteError(
            404,
            f"no such path {path[:200]!r}; use /v1/stream or /v1/{{book,trades,price,status}}/NAME",
        )
    name = f"{parts[1]}.{parts[2]}"
    try:
        parsed = parse_stream(name)
    except StreamNameError as exc:
        raise RouteError(404, str(exc)) from None
    resume: dict[str, ResumeFrom] = {}
    if epoch is not None or seq is not None:
        if parsed.is_pattern:
            raise RouteError(400, "epoch/seq need a single stream, not a pattern")
        if (
            epoch is None
            or seq is None
            or not _DIGITS.fullmatch(epoch)
            or not _DIGITS.fullmatch(seq)
        ):
            raise RouteError(
                400, "resume needs both epoch and seq, as decimal digits (epoch as it was sent)"
            )
        if int(epoch) >= 2**63 or int(seq) >= 2**63:
            raise RouteError(400, "epoch/seq out of range")
        resume[name] = ResumeFrom(epoch=str(int(epoch)), seq=int(seq))
    return Route(encoding, (name,), resume)


class _Connection:
    __slots__ = (
        "cancel", "close_code", "close_reason", "done", "errors", "flusher",
        "reason", "scheduled", "send_scope", "sending", "server", "sub", "wakeup", "writer",
    )  # fmt: skip

    def __init__(
        self, server: Server, sub: Subscriber, writer: SocketWriter | None, flusher: Flusher | None
    ) -> None:
        self.server = server
        self.sub = sub
        self.writer = writer  # None: the send_message fallback
        self.flusher = flusher
        self.reason: DisconnectReason | None = None
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.cancel: Callable[[], None] = lambda: None
        self.send_scope: trio.CancelScope | None = None
        # Fallback path: True while a write is under way: if it is interrupted, the WebSocket
        # framing is in an unknown state and the connection can only be dropped, not closed
        # cleanly. (The fast path knows it exactly: ``writer.mid_frame``.)
        self.sending = False
        self.errors = 0
        self.wakeup = trio.Event()  # the writer task's
        self.scheduled = False  # a flush is scheduled with the flusher
        self.done = False  # the connection's tasks are over: nothing more may be written

    @property
    def mid_frame(self) -> bool:
        return self.writer.mid_frame if self.writer is not None else self.sending

    def ready(self) -> None:
        """``sub.on_ready``: the buffer became non-empty, or the hub closed the subscriber."""
        if not self.scheduled and self.flusher is not None:
            self.scheduled = True
            self.flusher.schedule(self.flush)
        elif self.flusher is None:
            self.wakeup.set()
        sub = self.sub
        if sub.close_code is not None:
            self.wakeup.set()
            if sub.close_code == CLOSE_SLOW and self.send_scope is not None:
                # A subscriber too slow to keep its buffer gets a bounded time to take the
                # frame being written (and the close frame), not forever.
                self.send_scope.deadline = min(
                    self.send_scope.deadline, trio.current_time() + self.server.close_timeout
                )

    def flush(self) -> None:
        """Run by the flusher: write the whole backlog now if the socket takes it; anything
        else (the socket is busy or full, an error, a close) is the writer task's."""
        self.scheduled = False
        writer = self.writer
        if self.done or writer is None:
            return
        sub = self.sub
        if not writer.writable_now():
            self.wakeup.set()
            return
        while sub.queue:
            chunk = sub.take_framed()
            assert chunk is not None
            if not writer.write_now(chunk):
                self.wakeup.set()
                return
            self.server.sent_bytes += sub.inflight_bytes
            sub.sent()
        if sub.close_code is not None:
            self.wakeup.set()

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
        self._flusher = Flusher()
        self._flusher.after = self._count_sent
        self.sent_bytes = 0  # written by the flusher, not yet added to the metric

    def _count_sent(self) -> None:
        if self.sent_bytes and self.metrics is not None:
            self.metrics.sent_bytes.inc(self.sent_bytes)
        self.sent_bytes = 0

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
            server = WebSocketServer(
                self._handle,
                listeners,
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

    async def _accept(
        self,
        server: WebSocketServer,
        *,
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self._accept_scope:
            await server.run(task_status=task_status)

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting, drain every subscriber's buffer (up to ``drain_timeout`` s), close
        each with 1001 ``gateway shutting down, reconnect elsewhere``, then stop ``run``."""
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
            for conn in list(self._connections):
                conn.end("shutdown", CLOSE_GOING_AWAY, CLOSE_REASON_SHUTDOWN)
            with trio.move_on_after(self.close_timeout + 1):
                await self._idle.wait()
        self._stopped.set()

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
        conn = _Connection(self, sub, writer, self._flusher if writer is not None else None)
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
                if writer is not None:
                    nursery.start_soon(self._fast_writer, conn, writer)
                else:
                    nursery.start_soon(self._writer, ws, conn)
                nursery.start_soon(self._reader, ws, conn)
                nursery.start_soon(self._pinger, ws, conn)
            conn.done = True
            if ws.closed is None:
                # An interrupted write leaves half a frame on the socket: drop the TCP connection
                # at once (a zero deadline makes aclose skip straight to closing the stream).
                mid_frame = conn.mid_frame
                if mid_frame and writer is not None:
                    writer.abort()
                with trio.move_on_after(0 if mid_frame else self.close_timeout):
                    await ws.aclose(conn.close_code, conn.close_reason or None)
        finally:
            conn.done = True
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
                    },
                )

    async def _fast_writer(self, conn: _Connection, writer: SocketWriter) -> None:
        """Finishes what the flusher could not write at once, and closes when the hub says so.
        Woken by ``conn.wakeup``; the state it looks at (tail, error, queue, close) is the
        truth, the event only a nudge."""
        sub = conn.sub
        sub.on_ready = conn.ready
        if sub.queue:  # hello and initial state, queued before the writer existed
            conn.ready()
        try:
            while True:
                writer.take_error()
                if writer.tail is not None or sub.queue:
                    with trio.CancelScope() as scope:
                        conn.send_scope = scope
                        if sub.close_code == CLOSE_SLOW:
                            scope.deadline = trio.current_time() + self.close_timeout
                        await self._drain(conn, writer)
                    conn.send_scope = None
                    if scope.cancelled_caught:
                        conn.end("slow", CLOSE_SLOW, sub.close_reason)
                        return
                    continue
                if sub.close_code is not None:
                    why: DisconnectReason = "slow" if sub.close_code == CLOSE_SLOW else "shutdown"
                    conn.end(why, sub.close_code, sub.close_reason)
                    return
                conn.wakeup = trio.Event()
                await conn.wakeup.wait()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            conn.end("client_close")
        finally:
            sub.on_ready = None
            conn.send_scope = None

    async def _drain(self, conn: _Connection, writer: SocketWriter) -> None:
        """Write the pending tail and the whole backlog, holding the writer's lock (a tail left
        by the flusher already holds it). A cut-off chunk keeps the lock: see ``_serve``."""
        sub = conn.sub
        metrics = self.metrics
        owned = writer.tail is not None
        try:
            if not owned:
                await writer.lock.acquire()
                owned = True
            if writer.tail is not None:
                await writer.send()
                if metrics is not None:
                    metrics.sent_bytes.inc(sub.inflight_bytes)
                sub.sent()
            while (chunk := sub.take_framed()) is not None:
                await writer.send(chunk)
                if metrics is not None:
                    metrics.sent_bytes.inc(sub.inflight_bytes)
                sub.sent()
                if writer.lock.waiting:
                    # A ping, pong or close frame is waiting: let it in between two chunks.
                    owned = False
                    writer.lock.release()
                    await writer.lock.acquire()
                    owned = True
        finally:
            if owned and writer.tail is None:
                writer.lock.release()

    async def _writer(self, ws: WebSocketConnection, conn: _Connection) -> None:
        """The fallback: every message through trio-websocket's ``send_message``."""
        sub = conn.sub
        sub.on_ready = conn.ready
        metrics = self.metrics
        try:
            while True:
                batch = sub.take()
                if batch:
                    with trio.CancelScope() as scope:
                        conn.send_scope = scope
                        if sub.close_code == CLOSE_SLOW:
                            scope.deadline = trio.current_time() + self.close_timeout
                        conn.sending = True
                        for payload in batch:
                            await ws.send_message(payload)
                        conn.sending = False
                    conn.send_scope = None
                    if scope.cancelled_caught:
                        conn.end("slow", CLOSE_SLOW, sub.close_reason)
                        return
                    if metrics is not None:
                        metrics.sent_bytes.inc(sub.inflight_bytes)
                    sub.sent()
                    continue
                if sub.close_code is not None:
                    reason: DisconnectReason = (
                        "slow" if sub.close_code == CLOSE_SLOW else "shutdown"
                    )
                    conn.end(reason, sub.close_code, sub.close_reason)
                    return
                conn.wakeup = trio.Event()
                await conn.wakeup.wait()
        except ConnectionClosed:
            conn.sending = False
            conn.end("client_close")
        finally:
            sub.on_ready = None
            conn.send_scope = None

    async def _reader(self, ws: WebSocketConnection, conn: _Connection) -> None:
        hub, sub = self.hub, conn.sub
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                closed = ws.closed
                if closed is not None and closed.code == CLOSE_MESSAGE_TOO_BIG:
                    conn.end("error", CLOSE_MESSAGE_TOO_BIG, "request frame too big")
                else:
                    conn.end("client_close")
                return
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
