"""The running gateway: one nursery that owns every task, and the ``run`` subcommand.

Startup order: subscriber server, then ops endpoint, then upstream feeds. Subscribers can
connect (and get status records) before any book exists; ``/readyz`` stays 503 until every
required feed has all its snapshots, which is what a load balancer should wait for.

Shutdown (SIGTERM/SIGINT or ``Gateway.request_shutdown``), per docs/architecture.md:
readiness false → the server stops accepting and closes every subscriber with 1001, the
upstream connections close (a clean close handshake, at most 2 s) at the same time →
subscribers get up to ``shutdown.drain_timeout`` to drain and answer the close, then at most
``FINAL_CLOSE_TIMEOUT`` (1 s) to take their close frame → everything else is cancelled and
``serve`` returns normally: within ``shutdown_bound(drain_timeout)`` = max(drain_timeout + 1,
2) seconds of the signal. The upstream tasks live in a nursery of their own so they can be
stopped, and waited for, before the ops endpoint goes away (probes keep getting 503 rather
than connection refused while the gateway drains). A second signal skips what is left of the
drain: an operator pressing Ctrl-C twice wants out now.
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import get_args
from urllib.parse import urlsplit

import trio

from gateway import __version__
from gateway import config as config_mod
from gateway.backfill_wiring import register_backfill_metrics, start_backfills, tape_for
from gateway.config import Config, ConfigError
from gateway.fanout.access import (
    ConnectionRateLimiter,
    TokenAuth,
    auth_warning,
    is_loopback,
    load_tokens,
)
from gateway.fanout.hub import Hub
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.connect_gate import ConnectGate
from gateway.io.delivery import DisconnectReason
from gateway.io.metrics import (
    PREFIX,
    BufferDepthCollector,
    FeedStatsCollector,
    GaugeCallbackCollector,
    HubStatsCollector,
    Metrics,
)
from gateway.io.ops_http import FeedHealth, OpsServer, Readiness
from gateway.io.server import FINAL_CLOSE_TIMEOUT, RejectReason, Server
from gateway.io.token_reload import TokenReloader
from gateway.io.upstream import DEFAULT_CLOSE_TIMEOUT, run_feed
from gateway.io.upstream_health import FeedState
from gateway.logs import setup_logging

log = logging.getLogger("gateway.app")


@dataclass(slots=True)
class _Feed:
    spec: FeedSpec
    required: bool
    session: FeedNormalizer
    state: FeedState


class Gateway:
    """Everything one gateway process runs. ``serve`` reports itself via ``task_status``.

    After ``nursery.start(gateway.serve)`` returns, ``subscriber_url`` and ``metrics_url`` are
    the bound addresses (useful with port 0), and ``request_shutdown()`` starts the same
    shutdown sequence as SIGTERM.
    """

    def __init__(
        self,
        config: Config,
        *,
        handle_signals: bool = True,
        auth_tokens: tuple[bytes, ...] | None = None,
    ) -> None:
        """``auth_tokens``: the subscriber tokens; None reads them (``load_tokens``) from
        ``server.auth_token_file`` and the process environment (``ConfigError`` if bad)."""
        self.config = config
        # Fixed at process start and stamped on every record: a consumer sees a restart as a
        # new epoch rather than as a sequence gap.
        # Digits, as it is sent (protocol v2): opaque to subscribers.
        self.epoch = str(time.time_ns())
        self.metrics = Metrics()
        self.hub = Hub.from_config(config.server, self.epoch)
        self.feeds: list[_Feed] = [
            _Feed(
                spec=spec,
                required=feed_config.required,
                session=FeedNormalizer(
                    spec,
                    self.epoch,
                    dedup_capacity=config.upstream.dedup_capacity,
                    tape=tape_for(spec, config),  # backfill hook
                ),
                state=FeedState(spec.name),
            )
            for spec, feed_config in zip(config.feed_specs(), config.feeds, strict=True)
        ]
        for feed in self.feeds:
            for stream in feed.session.streams():
                self.hub.declare_stream(stream)
        if auth_tokens is None:
            auth_tokens = load_tokens(config.server.auth_token_file, os.environ)
        self.auth = TokenAuth(auth_tokens)
        self.metrics.auth_enabled.set(1 if self.auth.enabled else 0)
        # The file is read again when it changes or on SIGHUP; the environment as at start.
        self.token_reloader = TokenReloader(
            self.auth, config.server.auth_token_file, os.environ, self.metrics.registry
        )
        # Valid settings that are very likely wrong: logged at start, counted. (A fatal problem
        # is a ConfigError: the process stops before it serves, with exit status 2.)
        self.config_problems = config_problems(config)
        auth_off = auth_warning(config.server.host, config.server.port, self.auth.enabled)
        self.metrics.config_errors.inc(len(self.config_problems) + (auth_off is not None))
        self.server = Server(
            self.hub,
            config.server,
            self.metrics,
            rate_limiter=ConnectionRateLimiter(
                config.server.connections_per_ip_per_second,
                config.server.connection_burst_per_ip,
            ),
            auth=self.auth,
        )
        self.readiness = Readiness(self._feed_health, grace=config.metrics.ready_grace)
        self.ops = OpsServer(
            self.metrics.registry,
            self.readiness,
            host=config.metrics.host,
            port=config.metrics.port,
            max_connections=config.metrics.max_connections,
            max_connections_per_address=config.metrics.max_connections_per_address,
        )
        self._handle_signals = handle_signals
        self._shutdown = trio.Event()
        self._hurry = trio.Event()
        self.stopped = trio.Event()  # set when ``serve`` has finished, however it ended
        self.subscriber_url = ""
        self.metrics_url = ""
        self._register_collectors()

    def request_shutdown(self) -> None:
        """Begin the graceful shutdown; a second call cuts the subscriber drain short."""
        # Not ready from this instant, before any task runs: a probe racing the shutdown must
        # not route a new subscriber here.
        self.readiness.begin_shutdown()
        if self._shutdown.is_set():
            self._hurry.set()
        self._shutdown.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self._serve(task_status)
        finally:
            self.stopped.set()

    async def _serve(self, task_status: trio.TaskStatus[Gateway]) -> None:
        async with trio.open_nursery() as nursery:
            if self._handle_signals:
                await nursery.start(self._watch_signals)
                await nursery.start(self.token_reloader.watch_sighup)
            nursery.start_soon(self.token_reloader.watch_file)
            server_port = await nursery.start(self.server.run)
            self.subscriber_url = _url("ws", self.config.server.host, _port_of(server_port))
            metrics_port = await nursery.start(self.ops.serve)
            self.metrics_url = _url("http", self.config.metrics.host, metrics_port)
            nursery.start_soon(self.readiness.watch)
            upstream_done = trio.Event()
            upstream_scope = trio.CancelScope()
            nursery.start_soon(self._run_upstreams, upstream_scope, upstream_done)
            log.info(
                "gateway started: subscribers at %s, metrics at %s/metrics",
                self.subscriber_url, self.metrics_url,
                extra={"event": "started", "epoch": self.epoch, "version": __version__,
                       "subscriber_url": self.subscriber_url, "metrics_url": self.metrics_url,
                       "feeds": [f.spec.url for f in self.feeds]},
            )  # fmt: skip
            warning = auth_warning(
                self.config.server.host, _port_of(server_port), self.auth.enabled
            )
            if warning is not None:
                log.warning(warning, extra={"event": "auth_off"})
            for problem in self.config_problems:
                log.warning(problem, extra={"event": "config_problem"})
            task_status.started(self)

            await self._shutdown.wait()
            log.info("shutting down", extra={"event": "shutdown_begin"})
            self.readiness.begin_shutdown()
            drain = self.config.shutdown.drain_timeout
            # The upstream connections close while the subscribers drain, not after: a closing
            # subscriber gets nothing new from the hub, so upstream data has no one to go to.
            # In parallel the shutdown takes max(drain + FINAL_CLOSE_TIMEOUT, upstream close),
            # not their sum (``shutdown_bound``).
            upstream_scope.cancel()
            with trio.CancelScope() as drain_scope:
                nursery.start_soon(_cancel_on, self._hurry, drain_scope)
                await self.server.shutdown(drain)
            await upstream_done.wait()
            log.info("shutdown complete", extra={"event": "shutdown_complete"})
            nursery.cancel_scope.cancel()

    # -- tasks

    async def _run_upstreams(self, scope: trio.CancelScope, done: trio.Event) -> None:
        gate = ConnectGate(self.config.upstream.connect_interval)
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    # Backfill and market-list hook: started before the feeds connect.
                    await start_backfills(nursery, self.feeds, self.hub, self.config, self.metrics)
                    for feed in self.feeds:
                        await nursery.start(self._run_feed, feed, gate)
        finally:
            done.set()

    async def _run_feed(
        self, feed: _Feed, gate: ConnectGate, *, task_status: trio.TaskStatus[FeedState]
    ) -> None:
        await run_feed(
            feed.spec, feed.session, self.hub, self.config.upstream, self.metrics,
            connect_gate=gate, state=feed.state, task_status=task_status,
        )  # fmt: skip

    async def _watch_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                hurry = self._shutdown.is_set()
                log.info(
                    "%s received%s", name, ": skipping the rest of the drain" if hurry else "",
                    extra={"event": "signal", "signal": name},
                )  # fmt: skip
                self.request_shutdown()

    # -- readiness and metrics

    def _feed_health(self) -> Iterator[FeedHealth]:
        for feed in self.feeds:
            session, state = feed.session, feed.state
            # market_gone: Paxos halted or delisted the feed's one market (markets come and go).
            ready = (state.connected and session.ready) or session.market_gone
            yield FeedHealth(
                name=feed.spec.name,
                required=feed.required,
                ready=ready,
                reason="" if ready else _not_ready_reason(session, state),
            )

    def _register_collectors(self) -> None:
        m = self.metrics
        # Every value of a small fixed label set is exposed from the start (at 0): a series
        # that only appears on its first event breaks rate() and "absent" alerts.
        for reason in get_args(DisconnectReason):
            m.subscriber_disconnects.labels(reason)
        for why in get_args(RejectReason):
            m.rejected_connections.labels(why)
        m.add_collector(HubStatsCollector(self.hub.stats))
        m.add_collector(
            FeedStatsCollector(lambda: ((f.spec.name, f.session.stats) for f in self.feeds))
        )
        register_backfill_metrics(m, self.feeds, self.config)
        m.add_collector(
            GaugeCallbackCollector(
                f"{PREFIX}_upstream_last_message_age_seconds",
                "Seconds since the feed's last upstream frame (idle markets are silent: alert "
                "on this together with upstream_connected, never alone).",
                ["feed"],
                self._last_message_ages,
            )
        )
        m.add_collector(
            GaugeCallbackCollector(
                f"{PREFIX}_ready",
                "1 if /readyz would answer 200 now, else 0.",
                [],
                lambda: [([], 1.0 if self.readiness.check(trio.current_time()).ready else 0.0)],
            )
        )
        m.add_collector(
            GaugeCallbackCollector(
                f"{PREFIX}_tasks",
                "Trio tasks alive in the gateway process (about 3 per subscriber, plus one per "
                "feed and a few fixed): flat over time unless connections are, a leak otherwise.",
                [],
                lambda: [([], float(_task_count()))],
            )
        )
        m.add_collector(
            GaugeCallbackCollector(
                f"{PREFIX}_info",
                "Constant 1, labelled with the version and this process's epoch.",
                ["version", "epoch"],
                lambda: [([__version__, str(self.epoch)], 1.0)],
            )
        )
        m.add_collector(
            BufferDepthCollector(
                self.config.server.buffer_bytes,
                lambda: ((s.queued_bytes, len(s.queue)) for s in self.hub.subscribers),
            )
        )

    def _last_message_ages(self) -> Iterator[tuple[list[str], float]]:
        # FeedState keeps a time.monotonic_ns copy of the receive time for exactly this.
        now = time.monotonic_ns()
        for feed in self.feeds:
            last = feed.state.last_message_monotonic_ns
            if last is not None:
                yield [feed.spec.name], max(0.0, (now - last) / 1e9)


def config_problems(config: Config) -> list[str]:
    """Settings that pass validation but are very likely wrong, one sentence each.

    Today one: the test-only fast retries of ``upstream.allow_fast_retry`` against an upstream
    that is not on this machine (Paxos answers more than one new connection per second per IP
    with 429). Subscriber auth off on a non-loopback address is the other counted problem; it is
    reported by ``auth_warning``.
    """
    up = config.upstream
    fastest = min(up.backoff_initial, up.connect_interval)
    if not up.allow_fast_retry or fastest >= config_mod.MIN_PRODUCTION_INTERVAL:
        return []
    remote = sorted(
        {
            host
            for spec in config.feed_specs()
            if (host := urlsplit(spec.url).hostname or "") and not is_loopback(host)
        }
    )
    if not remote:
        return []
    return [
        f"upstream.allow_fast_retry is on (backoff_initial {up.backoff_initial} s, "
        f"connect_interval {up.connect_interval} s) and feeds connect to {', '.join(remote)}, "
        "not to this machine: Paxos allows one new connection per second per IP; the setting "
        "is meant for tests against a local simulator"
    ]


def _not_ready_reason(session: FeedNormalizer, state: FeedState) -> str:
    if not state.connected:
        if state.connections == 0 and state.last_reason is None:
            return "connecting"
        return f"disconnected ({state.last_reason or 'unknown'}), reconnecting"
    if session.resync_reason is not None:
        return f"resyncing: {session.resync_reason}"
    if session.upstream_error is not None:
        return f"upstream error: {session.upstream_error}"
    # The normalizer's book-sync states are the truth; a book's ``has_snapshot`` stays true
    # across reconnects and cannot tell a first snapshot from a resync.
    resyncing = session.resyncing_markets()
    if resyncing:
        return f"resyncing: waiting for a fresh snapshot of {_shown(resyncing)}"
    waiting = session.unsynced_markets()
    if waiting:
        return f"waiting for the snapshot of {_shown(waiting)}"
    return "waiting for the first snapshot"


def _shown(markets: list[str]) -> str:
    more = len(markets) - 10
    return ", ".join(markets[:10]) + (f" and {more} more" if more > 0 else "")


def _task_count() -> int:
    """Every task under trio's root task; called on the trio thread (the ops endpoint's scrape).
    A walk of the task tree: ~30k tasks at 10,000 subscribers, a few ms per scrape."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def shutdown_bound(drain_timeout: float) -> float:
    """Seconds from SIGTERM until ``serve`` returns, at most (docs/operations.md, "Shutdown
    timing"; the chart's grace period is derived from it): the subscribers' drain and final
    close in parallel with the upstream connections' close."""
    return max(drain_timeout + FINAL_CLOSE_TIMEOUT, DEFAULT_CLOSE_TIMEOUT)


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _port_of(started: object) -> int:
    # The server may report its port or an object carrying it.
    if isinstance(started, int):
        return started
    port = getattr(started, "port", None)
    if isinstance(port, int):
        return port
    raise TypeError(f"cannot tell the subscriber port from {started!r}")


def _url(scheme: str, host: str, port: int) -> str:
    # A wildcard bind is reachable on loopback; that is the address worth printing.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


async def serve(
    config: Config,
    *,
    auth_tokens: tuple[bytes, ...] | None = None,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway until SIGTERM/SIGINT, then shut down gracefully and return."""
    await Gateway(config, auth_tokens=auth_tokens).serve(task_status=task_status)


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, classes, functions, configuration: tens of
    thousands of objects that live as long as the process) out of the cyclic collector's sight.

    Every full collection walks all tracked objects; with these in, one took ~15 ms, a pause
    felt by every subscriber at once. Together with untracked records and frames
    (``outbox.OutFrame``) it keeps the collector's pauses off the fan-out's tail latency. For a
    process that runs one gateway (``run``, ``demo``); tests that start many in one process
    must not freeze what they will drop.
    """
    gc.collect()
    gc.freeze()


def load_auth_tokens(config: Config, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The subscriber tokens, read before the event loop starts so that a bad token file is a
    configuration error (exit 2), not a traceback."""
    return load_tokens(config.server.auth_token_file, env)


# -- the ``run`` subcommand


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway: connect to the Paxos feeds and serve subscribers until "
        "SIGTERM. Settings: --config FILE, then PAXOS_GATEWAY__SECTION__KEY environment "
        "variables, then flags (strongest).",
    )
    config_mod.add_arguments(parser)
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    try:
        config = config_mod.from_args(args, os.environ)
        tokens = load_auth_tokens(config, os.environ)
    except ConfigError as e:
        print(f"paxos-gateway run: configuration error: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.format)
    freeze_startup_heap()
    try:
        trio.run(functools.partial(serve, config, auth_tokens=tokens))
    except BaseException as e:
        error = bind_error(e)
        if error is None:
            raise
        where = (
            f"server {config.server.host}:{config.server.port} / "
            f"metrics {config.metrics.host}:{config.metrics.port}"
        )
        log.error(
            "cannot listen (%s): %s", where, error.strerror or error,
            extra={"event": "startup_failed", "reason": str(error)},
        )  # fmt: skip
        return 1
    return 0


def bind_error(exc: BaseException) -> OSError | None:
    """The port-in-use (or not bindable) error inside ``exc``, if that is what it is.

    That is an operator problem, not a bug: it deserves one clear line, not a traceback.
    """
    if isinstance(exc, OSError):
        bindable = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)
        return exc if exc.errno in bindable else None
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = bind_error(inner)
            if found is not None:
                return found
    return None
