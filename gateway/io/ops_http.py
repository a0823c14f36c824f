"""The operations endpoint: ``/metrics``, ``/healthz``, ``/readyz`` over plain HTTP/1.1.

A deliberately small server (h11 on a trio socket) rather than prometheus_client's threaded one:
the collectors read the sans-IO state (feed counters, subscriber buffers) without locks, which is
only correct when they run on the trio thread between checkpoints, as here.

It faces probes and scrapers, but also whatever else can reach the port, so: malformed requests
get 400 (or h11's more precise hint) and a client gets ``request_timeout`` seconds per request.

Connections are admitted by shedding, oldest first (``io.ops_slots``: why a new connection is
never refused for the sake of an idle one); readiness is decided by ``io.readiness``.

The listener binds ``metrics.host``: 127.0.0.1 by default (like ``server.host``); the image and
the chart set 0.0.0.0 because the kubelet and Prometheus connect to the pod's address, and the
chart's NetworkPolicy limits who may reach the port.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus

import h11
import msgspec
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from gateway import __version__
from gateway.fanout.access import client_key
from gateway.io.metrics import PREFIX
from gateway.io.ops_slots import OpsSlot, OpsSlots
from gateway.io.readiness import Readiness

__all__ = ["OpsServer"]

log = logging.getLogger("gateway.ops_http")

MAX_REQUEST_HEAD_BYTES = 16 * 1024
MAX_REQUEST_BODY_BYTES = 16 * 1024
_READ_CHUNK = 16 * 1024
_LINGER = 1.0
_LINGER_BYTES = 256 * 1024
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
# (path, code) of the requests counter that exist from the start: the ones probes and scrapes
# make, and the refusals.
_KNOWN_REQUESTS = (
    ("/metrics", "200"), ("/healthz", "200"), ("/readyz", "200"), ("/readyz", "503"),
    ("other", "404"), ("", "503"),
)  # fmt: skip


class OpsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        *,
        host: str,
        port: int,
        request_timeout: float = 10.0,
        max_connections: int = 64,
        max_connections_per_address: int = 8,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._port = port
        self._timeout = request_timeout
        self._slots = OpsSlots(max_connections, max_connections_per_address)
        self._started_at = 0.0
        self.port: int | None = None  # the bound port, once listening (port 0 picks one)
        # The ops endpoint counts its own traffic: a probe that started failing, or a scanner
        # hammering the port, is visible without a log line per request.
        self._requests = Counter(
            f"{PREFIX}_ops_http_requests",
            "Requests to the operations endpoint, by path and status code.",
            ["path", "code"],
            registry=registry,
        )
        # Every series a probe or a scanner can make, at 0 from the start (see app.py).
        for path, code in _KNOWN_REQUESTS:
            self._requests.labels(path=path, code=code)
        self._shed = Counter(
            f"{PREFIX}_ops_http_shed_connections",
            "Ops connections closed to make room for a new one: the oldest of the same address "
            "(per_address) or the oldest idle one (total).",
            ["reason"],
            registry=registry,
        )
        for reason in ("per_address", "total"):
            self._shed.labels(reason)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        self.port = listeners[0].socket.getsockname()[1]
        self._started_at = trio.current_time()
        log.info(
            "ops endpoint listening",
            extra={"event": "ops_listening", "host": self._host, "port": self.port},
        )
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            slot = OpsSlot(client_key(_peer(stream)))
            admitted = self._slots.admit(slot)
            if admitted is None:
                await self._refuse(stream)
                return
            for victim, reason in admitted:
                self._shed.labels(reason).inc()
                victim.scope.cancel()
            try:
                with slot.scope:
                    await self._connection(stream, slot)
            finally:
                self._slots.release(slot)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to answer
        except Exception:
            # One bad connection must never take down the gateway's nursery.
            log.exception("ops endpoint connection failed", extra={"event": "ops_http_error"})
        finally:
            await stream.aclose()

    async def _refuse(self, stream: trio.SocketStream) -> None:
        self._requests.labels(path="", code="503").inc()
        body = b"too many connections\n"
        head = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        with trio.move_on_after(_LINGER):
            await stream.send_all(head + body)
            await _linger(stream)

    async def _connection(self, stream: trio.SocketStream, slot: OpsSlot) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
        while True:
            slot.busy = False
            request: h11.Request | None = None
            with trio.move_on_after(self._timeout):
                try:
                    request = await self._read_request(conn, stream)
                except h11.RemoteProtocolError as e:
                    await self._error(conn, stream, e.error_status_hint, f"bad request: {e}")
                    return
                except _TooLarge as e:
                    await self._error(conn, stream, e.status, e.text)
                    return
                if request is None:
                    return  # clean close between requests
            if request is None:
                # Timed out: mid-request or idle between keep-alive requests, either way the
                # connection is done. Only a client that had started a request gets a 408.
                if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                    await self._error(conn, stream, 408, "request timeout")
                return
            slot.busy = True  # from here on the client is owed an answer: not shed as idle
            with trio.move_on_after(self._timeout):
                await self._respond(conn, stream, request)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> h11.Request | None:
        """The next request with its (discarded) body; None if the client closed cleanly."""
        request: h11.Request | None = None
        head_bytes = body_bytes = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_READ_CHUNK)
                if request is None:
                    # h11's own limit only applies to what is still buffered when it parses,
                    # so a large head arriving in two reads would slip through it.
                    head_bytes += len(data)
                    if head_bytes > MAX_REQUEST_HEAD_BYTES:
                        raise _TooLarge(431, "request header fields too large")
                conn.receive_data(data)  # b"" marks EOF; h11 turns it into ConnectionClosed
                continue
            if isinstance(event, h11.ConnectionClosed):
                if request is not None:
                    raise h11.RemoteProtocolError("connection closed mid-request")
                return None
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body_bytes += len(event.data)
                if body_bytes > MAX_REQUEST_BODY_BYTES:
                    raise _TooLarge(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request
            # h11.PAUSED cannot happen here: a cycle ends before the next request is read.

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        method = request.method.decode("ascii", "replace")
        if path not in ("/metrics", "/healthz", "/readyz"):
            self._requests.labels(path="other", code="404").inc()
            await self._send(conn, stream, 404, _TEXT, b"not found\n", head=method == "HEAD")
            return
        if method not in ("GET", "HEAD"):
            self._requests.labels(path=path, code="405").inc()
            await self._send(
                conn, stream, 405, _TEXT, b"method not allowed\n",
                extra_headers=[("Allow", "GET, HEAD")],
            )  # fmt: skip
            return
        now = trio.current_time()
        code = 200
        if path == "/metrics":
            content_type, body = CONTENT_TYPE_LATEST, generate_latest(self._registry)
        elif path == "/healthz":
            # If this runs, the event loop is turning: that is the whole liveness check.
            uptime = round(now - self._started_at, 3)
            doc = {"status": "ok", "uptime_seconds": uptime, "version": __version__}
            content_type, body = _JSON, msgspec.json.encode(doc) + b"\n"
        else:
            report = self._readiness.check(now)
            code = 200 if report.ready else 503
            content_type, body = _JSON, msgspec.json.encode(report.body) + b"\n"
        self._requests.labels(path=path, code=str(code)).inc()
        await self._send(conn, stream, code, content_type, body, head=method == "HEAD")

    async def _error(
        self, conn: h11.Connection, stream: trio.SocketStream, code: int, text: str
    ) -> None:
        self._requests.labels(path="", code=str(code)).inc()
        log.debug("ops endpoint refused a request", extra={"event": "ops_http_bad", "code": code,
                                                           "reason": text})  # fmt: skip
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with trio.move_on_after(self._timeout):
            await self._send(
                conn, stream, code, _TEXT, text.encode() + b"\n",
                extra_headers=[("Connection", "close")],
            )  # fmt: skip
        with trio.move_on_after(_LINGER):
            await _linger(stream)

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        code: int,
        content_type: str,
        body: bytes,
        *,
        head: bool = False,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *extra_headers,
        ]
        try:
            response = h11.Response(
                status_code=code, headers=headers, reason=HTTPStatus(code).phrase
            )
            data = conn.send(response)
            if not head:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return  # h11 refuses only when the connection is already unusable
        await stream.send_all(data)


def _peer(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return ""  # already gone: it gets a slot under the empty key, and is closed soon
    return str(address[0]) if isinstance(address, tuple) else str(address)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close and drain what the client still sends, briefly.

    Closing a socket with unread input makes the kernel send RST, and the client may then lose
    the error response it had not read yet. The caller bounds this in time; it is bounded in
    bytes here.
    """
    await stream.send_eof()
    drained = 0
    while drained < _LINGER_BYTES:
        data = await stream.receive_some(_READ_CHUNK)
        if not data:
            return
        drained += len(data)


class _TooLarge(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text
