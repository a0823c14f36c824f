"""The upstream I/O edge: one trio task per feed that keeps one Paxos WebSocket alive.

Three parts: this module's retry loop (``run_feed``: the gate, one attempt, the backoff),
``upstream_conn.FeedConnection`` (one connection's I/O, connect to close),
``upstream_health.UpstreamHealth`` (the ``FeedState``, connection metrics and log lines, kept at
attempt boundaries), with the reasons an attempt ends in ``upstream_reasons``.

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
* The messages of one read are normalized and published by ``ingest.batch.ingest_batch``, a
  synchronous function: no checkpoint can come between ``session.receive`` and ``publish``, so
  every book the hub can see always matches its stream's head sequence number (architecture
  invariant). Metrics are updated after it returns, to keep them off the latency path.
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
import random
import ssl
import time
from typing import NoReturn

import trio

from gateway.config import UpstreamConfig
from gateway.contract.records import Record
from gateway.ingest.batch import RecordSink, publish_records
from gateway.ingest.feeds import FeedSpec
from gateway.io.connect_gate import ConnectGate
from gateway.io.metrics import Metrics
from gateway.io.upstream_conn import (
    FeedConnection,
    FeedWiring,
    UpstreamSession,
    observe_publish_latency,
)
from gateway.io.upstream_health import FeedState, UpstreamHealth
from gateway.io.upstream_reasons import CANCELLED, ERROR_FRAME, INTERNAL_ERROR, Ended
from gateway.io.upstream_target import target_of, verified_tls_context
from gateway.retry.backoff import Backoff

__all__ = ["DEFAULT_CLOSE_TIMEOUT", "run_feed"]

log = logging.getLogger("gateway.upstream")

DEFAULT_CLOSE_TIMEOUT = 2.0


async def run_feed(
    feed: FeedSpec,
    session: UpstreamSession,
    sink: RecordSink,
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

    The records the session produces go to ``sink`` (the hub) synchronously, one batch per
    socket read (``ingest.batch``). ``nursery.start(run_feed, ...)`` returns the feed's
    ``FeedState`` at once (it does not wait for the first connection).
    """
    runner = _FeedRunner(
        FeedWiring(feed, session, sink, settings, metrics),
        connect_gate=connect_gate,
        backoff=Backoff(settings.backoff_initial, settings.backoff_max, rng=rng),
        state=state if state is not None else FeedState(feed.name),
        ssl_context=ssl_context,
        close_timeout=close_timeout,
    )  # fmt: skip
    task_status.started(runner.state)
    await runner.run()


class _FeedRunner:
    """The retry loop: wait for the gate, make one attempt, report it, back off, again."""

    def __init__(
        self,
        wiring: FeedWiring,
        *,
        connect_gate: ConnectGate,
        backoff: Backoff,
        state: FeedState,
        ssl_context: ssl.SSLContext | None,
        close_timeout: float,
    ) -> None:
        self.wiring = wiring
        self.gate = connect_gate
        self.backoff = backoff
        self.state = state
        self.health = UpstreamHealth(wiring.feed, state, wiring.metrics)
        self.close_timeout = close_timeout
        self.target = target_of(wiring.feed.url)
        # Built once: loading the CA store on every reconnect costs milliseconds each time.
        self.ssl_context = verified_tls_context(ssl_context) if self.target.tls else None

    async def run(self) -> NoReturn:
        stop_accounting = self.health.started()
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
                self.health.attempt_ended(ended, delay)
                await trio.sleep(delay)
        finally:
            stop_accounting()

    @staticmethod
    def _healthy(ended: Ended) -> bool:
        # An error frame is a message too, but a connection that only ever says "Not Found"
        # must keep backing off.
        return ended.messages > 0 and ended.reason != ERROR_FRAME

    async def _attempt(self) -> Ended:
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
                ended = await self._connection().run(work)
                if ended.established or ended.reason == CANCELLED:
                    self._went_down(ended)
            finished = True
            guard.cancel_scope.cancel()
        return ended

    def _connection(self) -> FeedConnection:
        return FeedConnection(
            self.wiring,
            target=self.target, ssl_context=self.ssl_context, close_timeout=self.close_timeout,
            state=self.state, on_established=self._went_up,
        )  # fmt: skip

    def _went_up(self, now_ns: int) -> None:
        self.health.went_up()
        self._publish(self.wiring.session.connected(now_ns))

    def _went_down(self, ended: Ended) -> None:
        if not self.health.went_down(ended):
            return
        w = self.wiring
        records = w.session.disconnected(ended.reason, time.time_ns())
        try:
            self._publish(records)
        except Exception:
            # Nothing to repair by reconnecting here; the feed itself must go on.
            log.exception(
                "feed %s: publishing the disconnected status failed",
                w.feed.name,
                extra={"feed": w.feed.name, "event": "error", "reason": INTERNAL_ERROR},
            )

    def _publish(self, records: list[Record]) -> None:
        """A status record of a connection change, published as a batch of its own."""
        if records:
            w = self.wiring
            now_mono = time.monotonic_ns()
            publish_records(w.session, w.sink, records)
            observe_publish_latency(w.metrics.publish_latency, now_mono)
