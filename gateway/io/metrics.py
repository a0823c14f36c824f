"""Prometheus metrics of the gateway, on a registry of their own.

One ``Metrics`` object per running gateway (tests start several in one
process, so nothing is registered on the global default registry). The
sans-IO layers never touch Prometheus: they keep plain integer counters
(``ingest.stats.FeedStats``, ``fanout.stats.HubStats``) that collectors read
at scrape time, which costs nothing on the per-message path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import get_args

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.contract.protocol import STREAM_KINDS, ErrorCode
from gateway.fanout.stats import HubStats
from gateway.ingest.backfill import BackfillStats
from gateway.ingest.stats import FeedStats

PREFIX = "paxos_gateway"

# Upstream lag can be large (exchange clocks, reconnect replays); publish latency is tiny.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = PREFIX
        # Registered first so that it runs before every other collector of a scrape (a registry
        # collects in registration order): see ``before_collect``.
        self._hooks: list[Callable[[], None]] = []
        r.register(_HookCollector(self._hooks))
        # The standard process_* (memory, CPU, open fds, start time; Linux /proc) and python_*
        # (version, garbage collections) families, on this registry rather than the global one.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:  # None where the interpreter has no gc.get_stats
            GCCollector(registry=r)
        # -- upstream
        self.upstream_lag = Histogram(
            f"{p}_upstream_lag_seconds",
            "Gateway receive time minus the exchange timestamp, for feeds that carry one.",
            ["feed"], buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_connected = Gauge(
            f"{p}_upstream_connected",
            "1 while the feed's upstream WebSocket is open, else 0.",
            ["feed"], registry=r,
        )  # fmt: skip
        self.upstream_reconnects = Counter(
            f"{p}_upstream_reconnects",
            "Upstream connections lost or given up, by the reason.",
            ["feed", "reason"], registry=r,
        )  # fmt: skip
        self.upstream_connect_failures = Counter(
            f"{p}_upstream_connect_failures",
            "Upstream connection attempts that failed before the handshake completed.",
            ["feed", "reason"], registry=r,
        )  # fmt: skip
        self.upstream_disconnected_seconds = Counter(
            f"{p}_upstream_disconnected_seconds",
            "Time the feed spent without an open upstream connection.",
            ["feed"], registry=r,
        )  # fmt: skip
        self.upstream_bytes = Counter(
            f"{p}_upstream_received_bytes",
            "Bytes of upstream message payload received.",
            ["feed"], registry=r,
        )  # fmt: skip
        # -- backfill (REST)
        self.backfill_requests = Counter(
            f"{p}_backfill_requests",
            "Paxos REST requests of the backfill and market list, by endpoint and outcome.",
            ["endpoint", "outcome"], registry=r,
        )  # fmt: skip
        # -- fan-out
        self.publish_latency = Histogram(
            f"{p}_publish_latency_seconds",
            "From the upstream frame's receipt to its records sitting in subscriber buffers.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.sent_bytes = Counter(
            f"{p}_sent_bytes", "Bytes handed to subscriber sockets.", registry=r
        )
        # -- subscribers
        self.subscribers = Gauge(f"{p}_subscribers", "Connected subscriber WebSockets.", registry=r)
        self.subscriber_disconnects = Counter(
            f"{p}_subscriber_disconnects",
            "Subscriber connections ended, by the reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.connection_task_failures = Counter(
            f"{p}_connection_task_failures",
            "Subscriber connection tasks that failed inside the WebSocket library; each ended "
            "its own connection only (logged as connection_task_failed).",
            registry=r,
        )
        self.rejected_connections = Counter(
            f"{p}_rejected_connections",
            "Subscriber connections refused before or at the handshake, by the reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.auth_enabled = Gauge(
            f"{p}_auth_enabled",
            "1 if subscribers must present a bearer token, else 0.",
            registry=r,
        )
        self.config_errors = Counter(
            f"{p}_config_errors",
            "Configuration problems found at start that the gateway runs despite (each logged "
            "with event config_problem); a fatal one stops it before it serves (exit 2).",
            registry=r,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def before_collect(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` at the start of every scrape; returns the function that removes it.

        For counters that grow continuously but are incremented at events: the time a feed
        spends disconnected is added when an attempt ends, which with a 60 s backoff would
        make the counter move in 70 s steps; the hook adds the time up to the scrape.
        """
        self._hooks.append(hook)

        def remove() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return remove


class _HookCollector(Collector):
    """Exports nothing; runs the ``before_collect`` hooks at the start of a scrape."""

    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self._hooks = hooks

    def collect(self) -> Iterator[CounterMetricFamily]:
        for hook in list(self._hooks):
            hook()
        return iter(())


class FeedStatsCollector(Collector):
    """Exports the sans-IO ``FeedStats`` of every feed at scrape time."""

    def __init__(self, feeds: Callable[[], Iterable[tuple[str, FeedStats]]]) -> None:
        self._feeds = feeds

    def collect(self) -> Iterator[CounterMetricFamily]:
        p = PREFIX
        messages = CounterMetricFamily(
            f"{p}_upstream_messages",
            "Upstream messages received, by kind.",
            labels=["feed", "kind"],
        )
        errors = CounterMetricFamily(
            f"{p}_decode_errors", "Upstream frames that could not be decoded.", labels=["feed"]
        )
        dups = CounterMetricFamily(
            f"{p}_duplicates_suppressed",
            "Executions dropped because their match_number was already published.",
            labels=["feed"],
        )
        resnaps = CounterMetricFamily(
            f"{p}_book_resnapshots", "Book snapshots that replaced a book.", labels=["feed"]
        )
        crossed = CounterMetricFamily(
            f"{p}_crossed_books", "Crossed books detected (and repaired).", labels=["feed"]
        )
        error_frames = CounterMetricFamily(
            f"{p}_upstream_error_frames", 'Upstream {"error": ...} frames.', labels=["feed"]
        )
        for feed, stats in self._feeds():
            for kind, n in stats.messages.items():
                messages.add_metric([feed, kind], n)
            errors.add_metric([feed], stats.decode_errors)
            dups.add_metric([feed], stats.duplicates_suppressed)
            resnaps.add_metric([feed], stats.resnapshots)
            crossed.add_metric([feed], stats.crossed_books)
            error_frames.add_metric([feed], stats.error_frames)
        yield from (messages, errors, dups, resnaps, crossed, error_frames)


class HubStatsCollector(Collector):
    """Exports the sans-IO ``HubStats`` of the hub at scrape time: publish and delivery counts,
    subscriptions, conflations, resumes and request errors. Every value of these small fixed
    label sets is exposed from the start (at 0): a series that only appears on its first event
    breaks rate() and "absent" alerts."""

    def __init__(self, stats: HubStats) -> None:
        self._stats = stats
        # What prometheus_client's own counters export as <name>_created.
        self._created = time.time()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p, s, created = PREFIX, self._stats, self._created
        published = CounterMetricFamily(
            f"{p}_records_published",
            "Sequenced records published, by stream kind.",
            labels=["stream_kind"],
        )
        for kind in _with_extra(STREAM_KINDS, s.records_published):
            published.add_metric([kind], s.records_published.get(kind, 0), created=created)
        deliveries = CounterMetricFamily(f"{p}_deliveries", "Records handed to subscriber buffers.")
        deliveries.add_metric([], s.deliveries, created=created)
        subscriptions = GaugeMetricFamily(
            f"{p}_subscriptions", "Active subscriptions, by stream kind.", labels=["stream_kind"]
        )
        for kind in _with_extra(STREAM_KINDS, s.subscriptions):
            subscriptions.add_metric([kind], s.subscriptions.get(kind, 0))
        conflations = CounterMetricFamily(
            f"{p}_conflations",
            "Book backlogs dropped and replaced by a fresh snapshot for a slow subscriber.",
        )
        conflations.add_metric([], s.conflations, created=created)
        resumes = CounterMetricFamily(
            f"{p}_resumes", "Resume requests, by result (served, refused).", labels=["result"]
        )
        resumes.add_metric(["served"], s.resumes_served, created=created)
        resumes.add_metric(["refused"], s.resumes_refused, created=created)
        errors = CounterMetricFamily(
            f"{p}_request_errors",
            "Subscriber requests answered with an error, by error code.",
            labels=["code"],
        )
        by_code = s.request_errors_by_code
        for code in _with_extra(get_args(ErrorCode), by_code):
            errors.add_metric([code], by_code.get(code, 0), created=created)
        yield from (published, deliveries, subscriptions, conflations, resumes, errors)


def _with_extra(fixed: Iterable[str], seen: Iterable[str]) -> list[str]:
    """The fixed label values, then any other value that has been counted."""
    values = list(fixed)
    return values + sorted(set(seen) - set(values))


class BackfillStatsCollector(Collector):
    """Exports every executions feed's ``backfill.BackfillStats`` at scrape time."""

    def __init__(self, feeds: Callable[[], Iterable[tuple[str, BackfillStats]]]) -> None:
        self._feeds = feeds

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = PREFIX
        backfilled = CounterMetricFamily(
            f"{p}_backfilled_executions",
            "Executions missed during an upstream outage and published from Paxos's REST API.",
            labels=["feed"],
        )
        gaps = CounterMetricFamily(
            f"{p}_backfill_known_gaps",
            "Outages longer than Paxos's REST window, announced as a known gap (per market).",
            labels=["feed"],
        )
        failures = CounterMetricFamily(
            f"{p}_backfill_failures",
            "Market backfills given up (error, timeout, hold bound), each announced.",
            labels=["feed"],
        )
        duplicates = CounterMetricFamily(
            f"{p}_backfill_duplicates",
            "Live executions dropped because a backfill had already published them.",
            labels=["feed"],
        )
        held = GaugeMetricFamily(
            f"{p}_backfill_held_executions",
            "Live executions held back right now until their market's backfill is in.",
            labels=["feed"],
        )
        for feed, stats in self._feeds():
            backfilled.add_metric([feed], stats.backfilled)
            gaps.add_metric([feed], stats.gaps)
            failures.add_metric([feed], stats.failures)
            duplicates.add_metric([feed], stats.duplicates)
            held.add_metric([feed], stats.held)
        yield from (backfilled, gaps, failures, duplicates, held)


class GaugeCallbackCollector(Collector):
    """A labelled gauge whose samples are computed at scrape time."""

    def __init__(
        self, name: str, doc: str, labels: list[str],
        samples: Callable[[], Iterable[tuple[list[str], float]]],
    ) -> None:  # fmt: skip
        self._name, self._doc, self._labels, self._samples = name, doc, labels, samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        for labels, value in self._samples():
            family.add_metric(labels, value)
        yield family


class BufferDepthCollector(Collector):
    """Gauges of the subscriber buffers as they are at scrape time.

    Not a histogram: one built afresh at every scrape has counts that go down, which
    ``rate()`` and ``increase()`` read as resets. The largest buffer tells whether anyone is
    near ``limit_bytes`` (overflow: conflation or disconnect); the totals how much is queued.
    """

    def __init__(self, limit_bytes: int, depths: Callable[[], Iterable[tuple[int, int]]]) -> None:
        """``depths``: (bytes, records) queued per connected subscriber."""
        self._limit, self._depths = limit_bytes, depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        max_bytes = max_records = total_bytes = total_records = 0
        for n_bytes, n_records in self._depths():
            max_bytes, max_records = max(max_bytes, n_bytes), max(max_records, n_records)
            total_bytes += n_bytes
            total_records += n_records
        p = PREFIX
        yield GaugeMetricFamily(
            f"{p}_subscriber_buffer_max_bytes",
            "Bytes queued or in flight of the fullest subscriber buffer (0: no subscriber).",
            value=max_bytes,
        )
        yield GaugeMetricFamily(
            f"{p}_subscriber_buffered_bytes",
            "Bytes queued or in flight over all subscriber buffers.",
            value=total_bytes,
        )
        yield GaugeMetricFamily(
            f"{p}_subscriber_buffer_limit_bytes",
            "Each subscriber's buffer limit (server.buffer_bytes): overflowing it conflates or "
            "disconnects.",
            value=self._limit,
        )
        yield GaugeMetricFamily(
            f"{p}_subscriber_buffer_max_records",
            "Records queued in the subscriber buffer that holds the most records.",
            value=max_records,
        )
        yield GaugeMetricFamily(
            f"{p}_subscriber_buffered_records",
            "Records queued over all subscriber buffers.",
            value=total_records,
        )
