"""The running gateway: one nursery that owns every task (the ``run`` subcommand: run_command.py).

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

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable

import trio

from gateway import __version__
from gateway.backfill_wiring import start_backfills, tape_for
from gateway.cluster_wiring import ClusterWiring
from gateway.config import Config
from gateway.config.advice import config_problems
from gateway.fanout.access import ConnectionRateLimiter, TokenAuth, auth_warning, load_tokens
from gateway.fanout.hub import Hub
from gateway.feed_readiness import Feed, feed_health
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.connect_gate import ConnectGate
from gateway.io.metrics import Metrics
from gateway.io.ops_http import OpsServer
from gateway.io.readiness import FeedHealth, Readiness
from gateway.io.resume_wait import ResumeWait
from gateway.io.server import FINAL_CLOSE_TIMEOUT, Server
from gateway.io.token_reload import TokenReloader
from gateway.io.upstream import DEFAULT_CLOSE_TIMEOUT, run_feed
from gateway.io.upstream_health import FeedState
from gateway.metrics_wiring import register_collectors

log = logging.getLogger("gateway.app")


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
        # With NATS (docs/cluster.md) the roles own the feeds and the hub's input.
        self.cluster = (
            ClusterWiring(config, self.hub, self.metrics) if config.cluster.enabled else None
        )
        self.feeds: list[Feed] = (
            self.cluster.feeds if self.cluster is not None else local_feeds(config, self.epoch)
        )
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
        if self.cluster is not None and self.cluster.edge is not None:
            self.server.resume_wait = ResumeWait(
                config.cluster.resume_wait, self.cluster.edge.next_batch
            )
        probe: Callable[[], Iterable[FeedHealth]] = functools.partial(feed_health, self.feeds)
        if self.cluster is not None:
            probe = self.cluster.health
        self.readiness = Readiness(probe, grace=config.metrics.ready_grace)
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
        register_collectors(
            self.metrics, self.hub, self.feeds, config, self.readiness, self.served_epoch
        )

    def served_epoch(self) -> str:
        """The epoch on the records served: this process's own, or in cluster mode the
        cluster's ("" until known; ``ClusterWiring.served_epoch``)."""
        return self.epoch if self.cluster is None else self.cluster.served_epoch()

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
                # In cluster mode the epoch is the cluster's, not known yet here: the
                # "leading" (ingest) and "edge_epoch" (edge) lines give it when it is.
                extra={"event": "started", "epoch": self.served_epoch() or None,
                       "role": None if self.cluster is None else self.config.cluster.role,
                       "version": __version__,
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
                if self.cluster is not None:
                    await self.cluster.run()
                    return
                async with trio.open_nursery() as nursery:
                    # Backfill and market-list hook: started before the feeds connect.
                    await start_backfills(nursery, self.feeds, self.hub, self.config, self.metrics)
                    for feed in self.feeds:
                        await nursery.start(self._run_feed, feed, gate)
        finally:
            done.set()

    async def _run_feed(
        self, feed: Feed, gate: ConnectGate, *, task_status: trio.TaskStatus[FeedState]
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


def local_feeds(config: Config, epoch: str) -> list[Feed]:
    """The single process's feeds: one normalizer per configured feed, for its whole life."""
    return [
        Feed(
            spec=spec,
            required=feed_config.required,
            session=FeedNormalizer(
                spec,
                epoch,
                dedup_capacity=config.upstream.dedup_capacity,
                tape=tape_for(spec, config),  # backfill hook
            ),
            state=FeedState(spec.name),
        )
        for spec, feed_config in zip(config.feed_specs(), config.feeds, strict=True)
    ]


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
