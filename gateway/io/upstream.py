"""The upstream I/O edge: one trio task per feed that keeps one Paxos WebSocket alive.

``run_feed`` loops forever: wait for the shared ``ConnectGate`` → connect (TCP, TLS, WebSocket
handshake, all within ``connect_timeout``) → hand the frames of every socket read to the feed's
sans-IO session and publish what it returns, as one batch → on any end of the connection,
publish a status, count it, log it once and reconnect: at once (the gate permitting) after a
connection that delivered data or heard 1001, after a backoff otherwise (``backoff.py``). It
only returns by cancellation.

Why it is built the way it is:

* The WebSocket protocol is ``wsclient`` (sans-IO; why not trio-websocket: see there). One read
  of up to ``_RECEIVE_BUFFER_SIZE`` bytes is parsed, normalized and published in one go, so a
  burst costs one task switch, not one per message, and its records reach each subscriber in
  one write.
* ``session.receive`` and ``publish`` run back to back with no checkpoint in between, so every
  book the hub can see always matches its stream's head sequence number (architecture
  invariant). Metrics are updated after ``publish`` to keep them off the latency path.
* Liveness is judged by WebSocket ping/pong only. An idle market legitimately sends nothing for
  hours; a silent-but-alive upstream must stay connected, a connection whose pongs stop is dead.
* The TLS handshake is done explicitly, before the WebSocket one, so that a failure (e.g. an
  unverifiable certificate) is reported at once as ``tls_error`` with the certificate message.
  TLS is always verified.
* Shutdown closes the WebSocket with a proper close handshake (code 1000). The connection runs
  inside a shielded scope with its own timeouts, and a small watcher task turns the outer
  cancellation into a graceful close bounded by ``close_timeout``: a cancelled read could not
  wait for the server's close frame.
* Disconnect reasons are a small fixed set (``REASONS``) because they are metric label values.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn, Protocol
from urllib.parse import urlsplit

import trio

from gateway.config import UpstreamConfig
from gateway.contract.records import Price, Record, Trade
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.wsclient import (
    CLOSE_MESSAGE_TOO_BIG,
    OP_PING,
    ClientProtocol,
    Closing,
    Handshake,
    HandshakeError,
    Rejected,
    client_frame,
)
from gateway.io.backoff import Backoff
from gateway.io.connect_gate import ConnectGate
from gateway.io.metrics import Metrics

log = logging.getLogger("gateway.upstream")

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

DEFAULT_CLOSE_TIMEOUT = 2.0
# One read: up to a few hundred Paxos messages, normalized and published as one batch.
_RECEIVE_BUFFER_SIZE = 65536
# The records whose exchange time measures the feed's lag (built once, not per record).
_LAG_RECORDS = (Trade, Price)

Publish = Callable[[list[Record], int], None]


class UpstreamSession(Protocol):
    """What ``run_feed`` needs of ``session.FeedNormalizer`` (kept structural for test doubles)."""

    def connected(self, now_ns: int) -> list[Record]: ...
    def receive(self, payload: bytes | str, now_ns: int) -> list[Record]: ...
    def disconnected(self, reason: str, now_ns: int) -> list[Record]: ...
    @property
    def resync_reason(self) -> str | None: ...
    @property
    def upstream_error(self) -> str | None: ...


@dataclass(slots=True)
class FeedState:
    """Read-only view of one feed's upstream connection, for /readyz and metrics collectors.

    Times ending in ``_at`` / ``_since`` are ``trio.current_time()`` seconds (compare them with
    ``trio.current_time()``); ``last_message_monotonic_ns`` is ``time.monotonic_ns()`` and can
    be read outside trio (e.g. by a Prometheus collector running in a thread).
    """

    feed: str
    connected: bool = False
    since: float | None = None  # last state change (start, connect, disconnect)
    disconnected_since: float | None = None  # None while connected; run start until first up
    last_message_at: float | None = None
    last_message_monotonic_ns: int | None = None
    last_reason: str | None = None  # why the last connection or attempt ended
    connections: int = 0  # successful handshakes so far
    failed_attempts: int = 0  # consecutive attempts that did not reach the handshake
    messages: int = 0  # upstream frames received, all connections

    def down_for(self, now: float) -> float:
        """Seconds without an open connection at trio time ``now`` (0 while connected)."""
        if self.connected or self.disconnected_since is None:
            return 0.0
        return max(0.0, now - self.disconnected_since)

    def last_message_age(self, now: float) -> float | None:
        """Seconds since the last upstream frame at trio time ``now``; None if none yet."""
        return None if self.last_message_at is None else max(0.0, now - self.last_message_at)


class _ConnectFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Ended:
    """How one connection attempt ended."""

    reason: str
    detail: str
    established: bool = False
    lived: float = 0.0
    messages: int = 0
    close_code: int | None = None  # the server's close code, if it sent a close frame


class UpstreamWebSocket:
    """One open upstream WebSocket (I/O around ``wsclient.ClientProtocol``): the stream, one
    writer at a time (the read loop's pongs and close replies, the keepalive's pings, the close
    handshake), and the pings waiting for their pongs. Reading is the read loop's alone."""

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self._send_lock = trio.Lock()
        self._pings: dict[bytes, trio.Event] = {}
        self.close_sent = False
        self.eof = False  # the peer's side of the TCP connection has ended

    async def send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(frame)

    async def send_pending(self) -> None:
        """Send what the protocol queued (pongs, the close reply)."""
        outgoing = self.protocol.outgoing
        if outgoing:
            frames = bytes(outgoing)
            outgoing.clear()
            if self.protocol.closing is not None:
                self.close_sent = True
            await self.send(frames)

    def pongs_received(self) -> None:
        for payload in self.protocol.pongs:
            event = self._pings.pop(payload, None)
            if event is not None:
                event.set()
        self.protocol.pongs.clear()

    async def ping(self) -> None:
        """Send a ping and wait for its pong (the caller bounds the wait)."""
        payload = os.urandom(8)
        event = self._pings[payload] = trio.Event()
        try:
            await self.send(client_frame(OP_PING, payload))
            await event.wait()
        finally:
            self._pings.pop(payload, None)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake from this side: send a close frame, then read (and drop)
        until the peer's close frame or EOF. The caller bounds it in time."""
        if not self.close_sent and self.protocol.closing is None:
            self.close_sent = True
            await self.send(self.protocol.send_close(code, reason))
        while self.protocol.closing is None and not self.eof:
            data = await self.stream.receive_some(_RECEIVE_BUFFER_SIZE)
            if not data:
                self.eof = True
                break
            self.protocol.receive(bytes(data))


@dataclass(slots=True)
class _Conn:
    stream: trio.abc.Stream | None = None
    ws: UpstreamWebSocket | None = None
    established: bool = False
    opened_at: float = 0.0
    messages: int = 0
    # Wall clock when the connection was established. Paxos opens every executions
    # connection by replaying each market's last execution, which may be hours old: a trade
    # executed before this instant is such a replay and says nothing about lag. Paxos trims
    # timestamps (whole seconds at worst), so a live trade may look up to 1 s older.
    established_ns: int = 0
    leftover: bytes = b""  # frames that arrived with the handshake's response

    @property
    def replay_before_ns(self) -> int:
        return self.established_ns - 1_000_000_000


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    resource: str
    host_header: str
    tls: bool


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r}: not a ws:// or wss:// URL with a host")
    tls = parts.scheme == "wss"
    port = parts.port if parts.port is not None else (443 if tls else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    host = parts.hostname
    bracketed = f"[{host}]" if ":" in host else host
    default_port = 443 if tls else 80
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return _Target(host, port, resource, host_header, tls)


def verified_tls_context(context: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """The TLS context for wss upstreams; refuses one that would skip verification."""
    ctx = context if context is not None else ssl.create_default_context()
    if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
        raise ValueError("upstream TLS must verify the certificate and the host name")
    return ctx


async def run_feed(
    feed: FeedSpec,
    session: UpstreamSession,
    publish: Publish,
    settings: UpstreamConfig,
    metrics: Metrics,
    *,
    connect_gate: ConnectGate,
    rng: random.Random | None = None,
    state: FeedState | None = None,
    ssl_context: ssl.SSLContext | None = None,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    task_status: trio.TaskStatus[FeedState] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep ``feed``'s upstream connection alive until cancelled.

    ``publish(records, received_monotonic_ns)`` is called synchronously right after the session
    produced the records. ``nursery.start(run_feed, ...)`` returns the feed's ``FeedState`` at
    once (it does not wait for the first connection).
    """
    runner = _FeedRunner(
        feed, session, publish, settings, metrics,
        connect_gate=connect_gate,
        backoff=Backoff(settings.backoff_initial, settings.backoff_max, rng=rng),
        state=state if state is not None else FeedState(feed.name),
        ssl_context=ssl_context,
        close_timeout=close_timeout,
    )  # fmt: skip
    task_status.started(runner.state)
    await runner.run()


class _FeedRunner:
    def __init__(
        self,
        feed: FeedSpec,
        session: UpstreamSession,
        publish: Publish,
        settings: UpstreamConfig,
        metrics: Metrics,
        *,
        connect_gate: ConnectGate,
        backoff: Backoff,
        state: FeedState,
        ssl_context: ssl.SSLContext | None,
        close_timeout: float,
    ) -> None:
        self.feed = feed
        self.session = session
        self.publish = publish
        self.settings = settings
        self.gate = connect_gate
        self.backoff = backoff
        self.state = state
        self.close_timeout = close_timeout
        self.target = _target(feed.url)
        # Built once: loading the CA store on every reconnect costs milliseconds each time.
        self.ssl_context = verified_tls_context(ssl_context) if self.target.tls else None
        name = feed.name
        self._metrics = metrics
        self._m_connected = metrics.upstream_connected.labels(feed=name)
        self._m_down_seconds = metrics.upstream_disconnected_seconds.labels(feed=name)
        self._m_bytes = metrics.upstream_bytes.labels(feed=name)
        self._m_lag = metrics.upstream_lag.labels(feed=name)
        # Every reason at 0 from the start, so that increase() sees the first event.
        for reason in RECONNECT_REASONS:
            metrics.upstream_reconnects.labels(feed=name, reason=reason)
        for reason in CONNECT_FAILURE_REASONS:
            metrics.upstream_connect_failures.labels(feed=name, reason=reason)
        self._down_accounted_at = 0.0
        self._trio_token: trio.lowlevel.TrioToken | None = None

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> NoReturn:
        now = trio.current_time()
        self.state.connected = False
        self.state.since = now
        self.state.disconnected_since = now
        self._down_accounted_at = now
        self._m_connected.set(0)
        # A scrape during an outage sees the time disconnected up to that instant, not up to
        # the end of the last attempt (up to backoff_max + connect_timeout ago).
        self._trio_token = trio.lowlevel.current_trio_token()
        remove_hook = self._metrics.before_collect(self._account_down_at_scrape)
        try:
            while True:
                await self.gate.wait()
                ended = await self._attempt()
                # Reconnect policy (backoff.py, docs/upstream.md): a connection that delivered
                # data or heard 1001 reconnects at once (the gate spaces it); failures back off.
                prompt = ended.established and self.backoff.reset_unless_failed(
                    delivered=self._healthy(ended), going_away=ended.close_code == 1001
                )
                delay = 0.0 if prompt else self.backoff.next_delay()
                self._report_end(ended, delay)
                await trio.sleep(delay)
        finally:
            remove_hook()
            self._account_down()

    @staticmethod
    def _healthy(ended: _Ended) -> bool:
        # An error frame is a message too, but a connection that only ever says "Not Found"
        # must keep backing off.
        return ended.messages > 0 and ended.reason != ERROR_FRAME

    async def _attempt(self) -> _Ended:
        """One connection from connect to close; on shutdown closes cleanly, then re-raises."""
        work = trio.CancelScope()
        finished = False

        async def watch_for_shutdown() -> None:
            try:
                await trio.sleep_forever()
            finally:
                # Reached by the outer (shutdown) cancellation, or by ours below once the
                # connection has already finished; only the former must interrupt the work.
                if not finished:
                    work.cancel()

        async with trio.open_nursery() as guard:
            guard.start_soon(watch_for_shutdown)
            with trio.CancelScope(shield=True):
                ended = await self._connection(work)
            finished = True
            guard.cancel_scope.cancel()
        return ended

    # -- one connection ---------------------------------------------------------------------

    async def _connection(self, work: trio.CancelScope) -> _Ended:
        """Runs shielded: every wait in here is bounded by a timeout or by ``work``."""
        conn = _Conn()
        ended: _Ended | None = None
        try:
            with work:
                try:
                    with trio.fail_after(self.settings.connect_timeout):
                        await self._open(conn)
                except trio.TooSlowError:
                    raise _ConnectFailed(
                        CONNECT_TIMEOUT,
                        f"no WebSocket handshake within {self.settings.connect_timeout} s",
                    ) from None
                self._went_up(conn)
                ended = await self._serve(conn)
            if work.cancelled_caught:
                ended = self._ended(conn, CANCELLED, "gateway shutting down")
        except _ConnectFailed as exc:
            ended = _Ended(exc.reason, exc.detail)
        except Exception as exc:
            # A bug in the session or the hub must not take the whole gateway down on one
            # frame: log it loudly and reconnect, which replaces every book of this feed with
            # a fresh snapshot.
            log.error(
                "feed %s: internal error, reconnecting",
                self.feed.name,
                exc_info=exc,
                extra={"feed": self.feed.name, "event": "error", "reason": INTERNAL_ERROR},
            )
            ended = self._ended(conn, INTERNAL_ERROR, repr(_first(exc)))
        finally:
            await self._close(conn, ended)
        assert ended is not None
        if ended.established or ended.reason == CANCELLED:
            self._went_down(ended)
        return ended

    async def _open(self, conn: _Conn) -> None:
        t = self.target
        try:
            conn.stream = tcp = await trio.open_tcp_stream(t.host, t.port)
        except OSError as exc:
            raise _ConnectFailed(_classify_os_error(exc), _describe_os_error(exc)) from None
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            conn.stream = stream = trio.SSLStream(
                tcp, self.ssl_context, server_hostname=t.host, https_compatible=True
            )
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                detail = f"TLS handshake failed: {exc.__cause__ or exc}"
                raise _ConnectFailed(TLS_ERROR, detail) from None
        handshake = Handshake(t.host_header, t.resource)
        try:
            await stream.send_all(handshake.request)
            while not handshake.receive(bytes(await stream.receive_some(_RECEIVE_BUFFER_SIZE))):
                pass
        except HandshakeError as exc:
            raise _ConnectFailed(PROTOCOL_ERROR, f"bad WebSocket handshake: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            detail = f"connection lost in the handshake: {exc}"
            raise _ConnectFailed(NETWORK_ERROR, detail) from None
        if handshake.rejected is not None:
            raise _ConnectFailed(HANDSHAKE_REJECTED, _describe_rejection(handshake.rejected))
        protocol = ClientProtocol(self.settings.max_message_bytes)
        conn.ws = UpstreamWebSocket(stream, protocol)
        conn.established = True
        conn.opened_at = trio.current_time()
        # Frames that came with the 101 response (Paxos starts with the snapshot at once) are
        # read by the read loop like any other, so that they are published as they should be.
        conn.leftover = handshake.leftover

    async def _serve(self, conn: _Conn) -> _Ended:
        ws = conn.ws
        assert ws is not None
        ended: _Ended | None = None
        async with trio.open_nursery() as nursery:
            if self.settings.ping_interval > 0:
                nursery.start_soon(self._keepalive, ws, nursery.cancel_scope)
            ended = await self._read_loop(conn, ws)
            nursery.cancel_scope.cancel()
        if ended is None:  # only the keepalive cancels this nursery without a result
            ended = self._ended(
                conn, PING_TIMEOUT, f"no pong within {self.settings.ping_timeout} s"
            )
        return ended

    async def _keepalive(self, ws: UpstreamWebSocket, serving: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            with trio.move_on_after(self.settings.ping_timeout) as waited:
                try:
                    await ws.ping()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the read loop sees the connection end and reports it
            if waited.cancelled_caught:
                serving.cancel()
                return

    async def _read_loop(self, conn: _Conn, ws: UpstreamWebSocket) -> _Ended:
        """Every socket read is parsed, normalized and published as one batch: no task switch
        per message, and the records of one read reach each subscriber in one write."""
        session = self.session
        publish = self.publish
        state = self.state
        protocol = ws.protocol
        data, conn.leftover = conn.leftover, b""
        while True:
            if not data:
                try:
                    # bytes for trio's streams (SSLStream may hand out a bytearray).
                    data = bytes(await ws.stream.receive_some(_RECEIVE_BUFFER_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    return self._ended(conn, CONNECTION_LOST, f"connection lost: {exc}")
                if not data:
                    ws.eof = True
                    return self._ended(conn, CONNECTION_LOST, "connection closed (no close frame)")
            received_mono = time.monotonic_ns()
            now_ns = time.time_ns()
            messages = protocol.receive(data)
            data = b""
            records: list[Record] = []
            size = 0
            try:
                for message in messages:
                    records += session.receive(message, now_ns)
                    size += len(message)
                    conn.messages += 1
                    if session.resync_reason is not None or session.upstream_error is not None:
                        break  # the rest belongs to a connection about to be replaced
            finally:
                # Also after a failure half-way: the records that got sequence numbers must
                # reach the hub, or their streams would show a gap.
                if records:
                    publish(records, received_mono)
            # -- no checkpoint above this line since receive_some returned --
            if messages:
                state.messages += len(messages)
                state.last_message_at = trio.current_time()
                state.last_message_monotonic_ns = received_mono
                self._m_bytes.inc(size)
            replay_before_ns = conn.replay_before_ns
            for record in records:
                if isinstance(record, _LAG_RECORDS):
                    # Their receive_time is now_ns (digits on the wire since protocol v2).
                    exchange_ns = int(record.exchange_time)
                    if exchange_ns >= replay_before_ns:
                        self._m_lag.observe((now_ns - exchange_ns) / 1e9)
            if protocol.pongs:
                ws.pongs_received()
            resync = session.resync_reason
            if resync is not None:
                return self._ended(conn, CROSSED_BOOK, f"resync requested: {resync}")
            error = session.upstream_error
            if error is not None:
                return self._ended(conn, ERROR_FRAME, f"upstream error frame: {error}")
            try:
                await ws.send_pending()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                return self._ended(conn, CONNECTION_LOST, f"connection lost: {exc}")
            closing = protocol.closing
            if closing is not None:
                reason, detail = _classify_close(closing)
                code = closing.code if closing.by_peer else None
                return self._ended(conn, reason, detail, code)

    def _ended(
        self, conn: _Conn, reason: str, detail: str, close_code: int | None = None
    ) -> _Ended:
        lived = trio.current_time() - conn.opened_at if conn.established else 0.0
        return _Ended(reason, detail, conn.established, lived, conn.messages, close_code)

    async def _close(self, conn: _Conn, ended: _Ended | None) -> None:
        """Close the WebSocket (gracefully when the peer is alive) and always the transport."""
        ws = conn.ws
        try:
            alive = ended is not None and ended.reason not in (PING_TIMEOUT, CONNECTION_LOST)
            if ws is not None and alive and not ws.eof:
                # Our side ends an alive connection (resync, error frame, shutdown, a protocol
                # error of the peer's), or answered the peer's close: finish the handshake.
                assert ended is not None
                with trio.move_on_after(self.close_timeout):
                    await ws.send_pending()
                    await ws.aclose(1000, _close_text(ended.reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer is gone already: nothing left to close gracefully
        finally:
            # The peer stopped answering, went away or misbehaved: no handshake to wait for,
            # and in every case the socket is ours to release, even after an interruption.
            if conn.stream is not None:
                await trio.aclose_forcefully(conn.stream)

    # -- state, metrics, logs ---------------------------------------------------------------

    def _went_up(self, conn: _Conn) -> None:
        now = trio.current_time()
        state = self.state
        down_for = state.down_for(now)
        attempts = state.failed_attempts
        self._account_down()
        state.connected = True
        state.since = now
        state.disconnected_since = None
        state.connections += 1
        state.failed_attempts = 0
        self._m_connected.set(1)
        conn.established_ns = time.time_ns()
        records = self.session.connected(conn.established_ns)
        if records:
            self.publish(records, time.monotonic_ns())
        log.info(
            "feed %s: connected to %s (down %.1f s, %d failed attempts before)",
            self.feed.name, self.feed.url, down_for, attempts,
            extra={"feed": self.feed.name, "event": "connected", "reason": None},
        )  # fmt: skip

    def _went_down(self, ended: _Ended) -> None:
        now = trio.current_time()
        state = self.state
        if state.connected:
            state.connected = False
            state.since = now
            state.disconnected_since = now
            self._down_accounted_at = now
            self._m_connected.set(0)
            records = self.session.disconnected(ended.reason, time.time_ns())
            if records:
                try:
                    self.publish(records, time.monotonic_ns())
                except Exception:
                    # Nothing to repair by reconnecting here; the feed itself must go on.
                    log.exception(
                        "feed %s: publishing the disconnected status failed",
                        self.feed.name,
                        extra={"feed": self.feed.name, "event": "error", "reason": INTERNAL_ERROR},
                    )
        state.last_reason = ended.reason
        if ended.reason == CANCELLED:
            log.info(
                "feed %s: upstream closed for shutdown",
                self.feed.name,
                extra={"feed": self.feed.name, "event": "disconnected", "reason": CANCELLED},
            )

    def _report_end(self, ended: _Ended, delay: float) -> None:
        """Count and log an attempt that ended for any reason but shutdown."""
        name = self.feed.name
        self.state.last_reason = ended.reason
        if ended.established:
            self._metrics.upstream_reconnects.labels(feed=name, reason=ended.reason).inc()
            level = logging.INFO if ended.reason == CROSSED_BOOK else logging.WARNING
            log.log(
                level,
                "feed %s: disconnected (%s: %s) after %.1f s and %d messages; "
                "reconnecting in %.2f s",
                name, ended.reason, ended.detail, ended.lived, ended.messages, delay,
                extra={"feed": name, "event": "disconnected", "reason": ended.reason},
            )  # fmt: skip
        else:
            self.state.failed_attempts += 1
            self._account_down()
            self._metrics.upstream_connect_failures.labels(feed=name, reason=ended.reason).inc()
            log.warning(
                "feed %s: connecting to %s failed (%s: %s), attempt %d; retrying in %.2f s",
                name, self.feed.url, ended.reason, ended.detail,
                self.state.failed_attempts, delay,
                extra={"feed": name, "event": "connect_failed", "reason": ended.reason},
            )  # fmt: skip

    def _account_down_at_scrape(self) -> None:
        # The times are this trio run's clock: a scrape from elsewhere (another thread, no
        # trio) leaves the time to be counted at the next attempt boundary or scrape.
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return
        if token is self._trio_token:
            self._account_down()

    def _account_down(self) -> None:
        """Add the disconnected time since the last call to the counter.

        Called at every attempt boundary, not only on reconnect, so the counter's rate shows
        an outage while it lasts.
        """
        if self.state.connected:
            return
        now = trio.current_time()
        if now > self._down_accounted_at:
            self._m_down_seconds.inc(now - self._down_accounted_at)
        self._down_accounted_at = now


# -- classification ---------------------------------------------------------------------------


def _first(error: BaseException) -> BaseException:
    exc = error
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _causes(exc: BaseException) -> list[BaseException]:
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


def _classify_os_error(exc: OSError) -> str:
    causes = _causes(exc)
    if any(isinstance(e, socket.gaierror) for e in causes):
        return DNS_ERROR
    if any(isinstance(e, ssl.SSLError) for e in causes):
        return TLS_ERROR
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return CONNECT_REFUSED
    return NETWORK_ERROR


def _describe_os_error(exc: OSError) -> str:
    leaves = [e for e in _causes(exc) if not isinstance(e, BaseExceptionGroup)]
    innermost = leaves[-1] if leaves else exc
    return str(exc) if innermost is exc else f"{exc} ({innermost})"


def _describe_rejection(rejected: Rejected) -> str:
    body = rejected.body[:200].decode("utf-8", "replace").strip()
    return f"server answered HTTP {rejected.status}" + (f": {body}" if body else "")


def _classify_close(closing: Closing) -> tuple[str, str]:
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


def _close_text(reason: str) -> str:
    return {
        CROSSED_BOOK: "resync",
        ERROR_FRAME: "upstream error",
        CANCELLED: "gateway shutting down",
    }.get(reason, reason)
