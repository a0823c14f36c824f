"""An upstream feed's health bookkeeping: its ``FeedState`` and the metrics and log lines of
its connection state, kept by ``UpstreamHealth`` at the attempt boundaries the retry loop
(``io.upstream``) reports: started, went up, went down, attempt ended.

The time a feed spends disconnected is added to its counter at every boundary and at every
scrape (``Metrics.before_collect``), so the counter's rate shows an outage while it lasts, not
in steps of a whole backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from gateway.ingest.feeds import FeedSpec
from gateway.io.metrics import Metrics
from gateway.io.upstream_reasons import (
    CANCELLED,
    CONNECT_FAILURE_REASONS,
    CROSSED_BOOK,
    RECONNECT_REASONS,
    Ended,
)

__all__ = ["FeedState", "UpstreamHealth"]

# The upstream's log lines, one logger whichever module writes them.
log = logging.getLogger("gateway.upstream")


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


class UpstreamHealth:
    """One feed's ``FeedState``, its ``upstream_connected`` gauge, disconnected-time, reconnect
    and connect-failure counters, and its state-change log lines."""

    def __init__(self, feed: FeedSpec, state: FeedState, metrics: Metrics) -> None:
        self.feed = feed
        self.state = state
        name = feed.name
        self._metrics = metrics
        self._m_connected = metrics.upstream_connected.labels(feed=name)
        self._m_down_seconds = metrics.upstream_disconnected_seconds.labels(feed=name)
        # Every reason at 0 from the start, so that increase() sees the first event.
        for reason in RECONNECT_REASONS:
            metrics.upstream_reconnects.labels(feed=name, reason=reason)
        for reason in CONNECT_FAILURE_REASONS:
            metrics.upstream_connect_failures.labels(feed=name, reason=reason)
        self._down_accounted_at = 0.0
        self._trio_token: trio.lowlevel.TrioToken | None = None

    def started(self) -> Callable[[], None]:
        """The feed's task starts, disconnected. Returns the function that stops the
        accounting (call it when the task ends)."""
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

        def stop() -> None:
            remove_hook()
            self.account_down()

        return stop

    def went_up(self) -> None:
        """A connection's handshake completed."""
        now = trio.current_time()
        state = self.state
        down_for = state.down_for(now)
        attempts = state.failed_attempts
        self.account_down()
        state.connected = True
        state.since = now
        state.disconnected_since = None
        state.connections += 1
        state.failed_attempts = 0
        self._m_connected.set(1)
        log.info(
            "feed %s: connected to %s (down %.1f s, %d failed attempts before)",
            self.feed.name, self.feed.url, down_for, attempts,
            extra={"feed": self.feed.name, "event": "connected", "reason": None},
        )  # fmt: skip

    def went_down(self, ended: Ended) -> bool:
        """A connection (or the attempt, at shutdown) ended; True if the feed was connected
        until now (the caller publishes the session's disconnected status then)."""
        now = trio.current_time()
        state = self.state
        was_connected = state.connected
        if was_connected:
            state.connected = False
            state.since = now
            state.disconnected_since = now
            self._down_accounted_at = now
            self._m_connected.set(0)
        state.last_reason = ended.reason
        if ended.reason == CANCELLED:
            log.info(
                "feed %s: upstream closed for shutdown",
                self.feed.name,
                extra={"feed": self.feed.name, "event": "disconnected", "reason": CANCELLED},
            )
        return was_connected

    def attempt_ended(self, ended: Ended, delay: float) -> None:
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
            self.account_down()
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
            self.account_down()

    def account_down(self) -> None:
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
