"""One upstream connection, from TCP connect to close: ``FeedConnection`` (I/O).

``FeedConnection.run`` opens the connection (TCP, TLS, WebSocket handshake), reads it, hands the
messages of every read to ``ingest.batch.ingest_batch`` (synchronous: normalized and published
with no checkpoint in between), answers pings and keeps its own pings going, and closes it with
a close handshake when it can. It returns how the connection ended (``upstream_reasons.Ended``);
the retry loop around it is ``io.upstream``, the state and health bookkeeping
``io.upstream_health``, the open WebSocket's writes and pings ``io.upstream_ws``, where to
connect ``io.upstream_target``, and how far behind the feed is ``ingest.lag``.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from gateway.config import UpstreamConfig
from gateway.contract.records import Record
from gateway.ingest.batch import Batch, Normalizer, RecordSink, ingest_batch
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.lag import LagSampler
from gateway.ingest.ws_handshake import Handshake, HandshakeError
from gateway.ingest.wsclient import ClientProtocol
from gateway.io.metrics import Metrics
from gateway.io.plain_metrics import PlainHistogram
from gateway.io.upstream_health import FeedState
from gateway.io.upstream_reasons import (
    CANCELLED,
    CONNECT_TIMEOUT,
    CONNECTION_LOST,
    CROSSED_BOOK,
    ERROR_FRAME,
    HANDSHAKE_REJECTED,
    INTERNAL_ERROR,
    NETWORK_ERROR,
    PING_TIMEOUT,
    PROTOCOL_ERROR,
    TLS_ERROR,
    ConnectFailed,
    Ended,
    classify_close,
    classify_os_error,
    close_text,
    describe_os_error,
    describe_rejection,
    first_error,
)
from gateway.io.upstream_target import Target
from gateway.io.upstream_ws import RECEIVE_BUFFER_SIZE, UpstreamWebSocket

__all__ = ["FeedConnection", "FeedWiring", "UpstreamSession", "observe_publish_latency"]

log = logging.getLogger("gateway.upstream")


class UpstreamSession(Normalizer, Protocol):
    """What ``run_feed`` needs of ``FeedNormalizer`` (kept structural for the ``record``
    command's writer and for test doubles)."""

    def connected(self, now_ns: int) -> list[Record]: ...
    def disconnected(self, reason: str, now_ns: int) -> list[Record]: ...


def observe_publish_latency(histogram: PlainHistogram, received_mono: int) -> None:
    """From the frame's receipt to its records sitting in subscriber buffers (``publish`` is
    synchronous, so it is over when it returns)."""
    latency = (time.monotonic_ns() - received_mono) / 1e9
    histogram.observe(max(latency, 0.0))


@dataclass(slots=True)
class _Conn:
    stream: trio.abc.Stream | None = None
    ws: UpstreamWebSocket | None = None
    established: bool = False
    opened_at: float = 0.0
    messages: int = 0
    established_ns: int = 0  # wall clock when the handshake completed (lag: replays before it)
    leftover: bytes = b""  # frames that arrived with the handshake's response


@dataclass(frozen=True, slots=True)
class FeedWiring:
    """What every connection of one feed works with: the feed, its normalizer, where the
    records go (the hub), the ``[upstream]`` settings and the metrics."""

    feed: FeedSpec
    session: UpstreamSession
    sink: RecordSink
    settings: UpstreamConfig
    metrics: Metrics


class FeedConnection:
    """One connection attempt of one feed. Every wait in ``run`` is bounded by a timeout or by
    the ``work`` scope, because the caller runs it shielded (see ``io.upstream``)."""

    def __init__(
        self,
        wiring: FeedWiring,
        *,
        target: Target,
        ssl_context: ssl.SSLContext | None,
        close_timeout: float,
        state: FeedState,
        on_established: Callable[[int], None],
    ) -> None:
        """``on_established(now_ns)``: the handshake completed at wall-clock ``now_ns`` (the
        caller's bookkeeping, and the session's connected status)."""
        feed, metrics = wiring.feed, wiring.metrics
        self.feed = feed
        self.session = wiring.session
        self.sink = wiring.sink
        self.settings = wiring.settings
        self.target = target
        self.ssl_context = ssl_context
        self.close_timeout = close_timeout
        self.state = state
        self._on_established = on_established
        name = feed.name
        self._m_bytes = metrics.upstream_bytes.labels(feed=name)
        self._m_lag = metrics.upstream_lag.labels(feed=name)
        self._m_publish_latency = metrics.publish_latency

    async def run(self, work: trio.CancelScope) -> Ended:
        """Runs shielded: every wait in here is bounded by a timeout or by ``work``."""
        conn = _Conn()
        ended: Ended | None = None
        try:
            with work:
                try:
                    with trio.fail_after(self.settings.connect_timeout):
                        await self._open(conn)
                except trio.TooSlowError:
                    raise ConnectFailed(
                        CONNECT_TIMEOUT,
                        f"no WebSocket handshake within {self.settings.connect_timeout} s",
                    ) from None
                conn.established_ns = time.time_ns()
                self._on_established(conn.established_ns)
                ended = await self._serve(conn)
            if work.cancelled_caught:
                ended = self._ended(conn, CANCELLED, "gateway shutting down")
        except ConnectFailed as exc:
            ended = Ended(exc.reason, exc.detail)
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
            ended = self._ended(conn, INTERNAL_ERROR, repr(first_error(exc)))
        finally:
            await self._close(conn, ended)
        assert ended is not None
        return ended

    async def _open(self, conn: _Conn) -> None:
        t = self.target
        try:
            conn.stream = tcp = await trio.open_tcp_stream(t.host, t.port)
        except OSError as exc:
            raise ConnectFailed(classify_os_error(exc), describe_os_error(exc)) from None
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            conn.stream = stream = trio.SSLStream(
                tcp, self.ssl_context, server_hostname=t.host, https_compatible=True
            )
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                detail = f"TLS handshake failed: {exc.__cause__ or exc}"
                raise ConnectFailed(TLS_ERROR, detail) from None
        handshake = Handshake(t.host_header, t.resource)
        try:
            await stream.send_all(handshake.request)
            while not handshake.receive(bytes(await stream.receive_some(RECEIVE_BUFFER_SIZE))):
                pass
        except HandshakeError as exc:
            raise ConnectFailed(PROTOCOL_ERROR, f"bad WebSocket handshake: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            detail = f"connection lost in the handshake: {exc}"
            raise ConnectFailed(NETWORK_ERROR, detail) from None
        if handshake.rejected is not None:
            raise ConnectFailed(HANDSHAKE_REJECTED, describe_rejection(handshake.rejected))
        protocol = ClientProtocol(self.settings.max_message_bytes)
        conn.ws = UpstreamWebSocket(stream, protocol, coalesce_window=self.settings.coalesce_window)
        conn.established = True
        conn.opened_at = trio.current_time()
        # Frames that came with the 101 response (Paxos starts with the snapshot at once) are
        # read by the read loop like any other, so that they are published as they should be.
        conn.leftover = handshake.leftover

    async def _serve(self, conn: _Conn) -> Ended:
        ws = conn.ws
        assert ws is not None
        ended: Ended | None = None
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

    async def _read_loop(self, conn: _Conn, ws: UpstreamWebSocket) -> Ended:
        """Every socket read is parsed, normalized and published as one batch: no task switch
        per message, and the records of one read reach each subscriber in one write."""
        session = self.session
        sink = self.sink
        state = self.state
        protocol = ws.protocol
        lag = LagSampler(conn.established_ns)
        observe_lag = self._m_lag.observe
        data, conn.leftover = conn.leftover, b""
        while True:
            if not data:
                try:
                    data = await ws.receive()  # one recv per wakeup (see there)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    return self._ended(conn, CONNECTION_LOST, f"connection lost: {exc}")
                if not data:
                    ws.eof = True
                    return self._ended(conn, CONNECTION_LOST, "connection closed (no close frame)")
            received_mono = time.monotonic_ns()
            now_ns = time.time_ns()
            messages = protocol.receive(data)
            data = b""
            batch = Batch()
            try:
                # Synchronous: no checkpoint between the read and the publish (invariant).
                ingest_batch(session, sink, messages, now_ns, batch)
            finally:
                conn.messages += batch.messages
            records = batch.records
            if records:
                observe_publish_latency(self._m_publish_latency, received_mono)
            if messages:
                state.messages += len(messages)
                state.last_message_at = trio.current_time()
                state.last_message_monotonic_ns = received_mono
                self._m_bytes.inc(batch.size)
            for seconds in lag.samples(records, now_ns):  # now_ns: the records' receive_time
                observe_lag(seconds)
            if protocol.pongs:
                ws.pongs_received()
            verdict = batch.verdict
            if verdict.action == "resync":
                return self._ended(conn, CROSSED_BOOK, f"resync requested: {verdict.reason}")
            if verdict.action == "upstream_error":
                return self._ended(conn, ERROR_FRAME, f"upstream error frame: {verdict.reason}")
            if protocol.outgoing:  # pongs, the close reply (rare: not a call per read)
                try:
                    await ws.send_pending()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    return self._ended(conn, CONNECTION_LOST, f"connection lost: {exc}")
            closing = protocol.closing
            if closing is not None:
                reason, detail = classify_close(closing)
                code = closing.code if closing.by_peer else None
                return self._ended(conn, reason, detail, code)

    def _ended(self, conn: _Conn, reason: str, detail: str, close_code: int | None = None) -> Ended:
        lived = trio.current_time() - conn.opened_at if conn.established else 0.0
        return Ended(reason, detail, conn.established, lived, conn.messages, close_code)

    async def _close(self, conn: _Conn, ended: Ended | None) -> None:
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
                    await ws.aclose(1000, close_text(ended.reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer is gone already: nothing left to close gracefully
        finally:
            # The peer stopped answering, went away or misbehaved: no handshake to wait for,
            # and in every case the socket is ours to release, even after an interruption.
            if conn.stream is not None:
                await trio.aclose_forcefully(conn.stream)
