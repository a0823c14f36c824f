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
from typing import Final, get_args

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.contract.protocol import STREAM_KINDS, ErrorCode
from gateway.fanout.stats import HubStats
from gateway.ingest.backfill import BackfillStats
from gateway.ingest.stats import FeedStats
from gateway.io.plain_metrics import PlainCounter, PlainHistogram

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
        d = _Declare(r)
        # -- upstream
        # The per-message metrics are plain numbers exported at scrape time (plain_metrics).
        self.upstream_lag = d.plain_histogram(
            "upstream_lag_seconds",
            "Gateway receive time minus the exchange timestamp, for feeds that carry one.",
            "feed", buckets=LAG_BUCKETS,
        )  # fmt: skip
        self.upstream_connected = d.gauge(
            "upstream_connected", "1 while the feed's upstream WebSocket is open, else 0.", "feed"
        )
        self.upstream_reconnects = d.counter(
            "upstream_reconnects",
            "Upstream connections lost or given up, by the reason.",
            "feed", "reason",
        )  # fmt: skip
        self.upstream_connect_failures = d.counter(
            "upstream_connect_failures",
            "Upstream connection attempts that failed before the handshake completed.",
            "feed", "reason",
        )  # fmt: skip
        self.upstream_disconnected_seconds = d.counter(
            "upstream_disconnected_seconds",
            "Time the feed spent without an open upstream connection.",
            "feed",
        )
        self.upstream_bytes = d.plain_counter(
            "upstream_received_bytes", "Bytes of upstream message payload received.", "feed"
        )
        # -- backfill (REST)
        self.backfill_requests = d.counter(
            "backfill_requests",
            "Paxos REST requests of the backfill and market list, by endpoint and outcome.",
            "endpoint", "outcome",
        )  # fmt: skip
        # -- fan-out
        self.publish_latency = d.plain_histogram(
            "publish_latency_seconds",
            "From the upstream frame's receipt to its records sitting in subscriber buffers.",
            buckets=LATENCY_BUCKETS,
        )
        self.sent_bytes = d.plain_counter("sent_bytes", "Bytes handed to subscriber sockets.")
        # -- subscribers
        self.subscribers = d.gauge("subscribers", "Connected subscriber WebSockets.")
        self.subscriber_disconnects = d.counter(
            "subscriber_disconnects", "Subscriber connections ended, by the reason.", "reason"
        )
        self.connection_task_failures = d.counter(
            "connection_task_failures",
            "Subscriber connection tasks that failed inside the WebSocket library; each ended "
            "its own connection only (logged as connection_task_failed).",
        )
        self.rejected_connections = d.counter(
            "rejected_connections",
            "Subscriber connections refused before or at the handshake, by the reason.",
            "reason",
        )
        self.auth_enabled = d.gauge(
            "auth_enabled", "1 if subscribers must present a bearer token, else 0."
        )
        self.config_errors = d.counter(
            "config_errors",
            "Configuration problems found at start that the gateway runs despite (each logged "
            "with event config_problem); a fatal one stops it before it serves (exit 2).",
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


class _Declare:
    """The registry's metrics, each declared once: ``PREFIX`` + name, help, label names."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=self._registry)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", doc, labels, registry=self._registry)

    def plain_counter(self, name: str, doc: str, *labels: str) -> PlainCounter:
        return PlainCounter(f"{PREFIX}_{name}", doc, labels, self._registry)

    def plain_histogram(
        self, name: str, doc: str, *labels: str, buckets: tuple[float, ...]
    ) -> PlainHistogram:
        return PlainHistogram(f"{PREFIX}_{name}", doc, labels, self._registry, buckets)


class _HookCollector(Collector):
    """Exports nothing; runs the ``before_collect`` hooks at the start of a scrape."""

    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self._hooks = hooks

    def collect(self) -> Iterator[CounterMetricFamily]:
        for hook in list(self._hooks):
            hook()
        return iter(())


# A per-feed family: its type, name after ``PREFIX``, help, and the stats field it exports.
_PerFeed = tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, str]

_FEED_COUNTERS: Final[tuple[_PerFeed, ...]] = (
    (CounterMetricFamily, "decode_errors", "Upstream frames that could not be decoded.",
     "decode_errors"),
    (CounterMetricFamily, "duplicates_suppressed",
     "Executions dropped because their match_number was already published.",
     "duplicates_suppressed"),
    (CounterMetricFamily, "book_resnapshots", "Book snapshots that replaced a book.",
     "resnapshots"),
    (CounterMetricFamily, "crossed_books", "Crossed books detected (and repaired).",
     "crossed_books"),
    (CounterMetricFamily, "upstream_error_frames", 'Upstream {"error": ...} frames.',
     "error_frames"),
)  # fmt: skip

_BACKFILL_FAMILIES: Final[tuple[_PerFeed, ...]] = (
    (CounterMetricFamily, "backfilled_executions",
     "Executions missed during an upstream outage and published from Paxos's REST API.",
     "backfilled"),
    (CounterMetricFamily, "backfill_known_gaps",
     "Outages longer than Paxos's REST window, announced as a known gap (per market).",
     "gaps"),
    (CounterMetricFamily, "backfill_failures",
     "Market backfills given up (error, timeout, hold bound), each announced.",
     "failures"),
    (CounterMetricFamily, "backfill_duplicates",
     "Live executions dropped because a backfill had already published them.",
     "duplicates"),
    (GaugeMetricFamily, "backfill_held_executions",
     "Live executions held back right now until their market's backfill is in.",
     "held"),
)  # fmt: skip


def _per_feed(
    table: Iterable[_PerFeed], feeds: Iterable[tuple[str, object]]
) -> list[CounterMetricFamily | GaugeMetricFamily]:
    """One family per row of ``table``, with one sample per feed."""
    families = [
        (family(f"{PREFIX}_{name}", doc, labels=["feed"]), field)
        for family, name, doc, field in table
    ]
    for feed, stats in feeds:
        for family, field in families:
            family.add_metric([feed], getattr(stats, field))
    return [family for family, _ in families]


class FeedStatsCollector(Collector):
    """Exports the sans-IO ``FeedStats`` of every feed at scrape time."""

    def __init__(self, feeds: Callable[[], Iterable[tuple[str, FeedStats]]]) -> None:
        self._feeds = feeds

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        feeds = list(self._feeds())
        messages = CounterMetricFamily(
            f"{PREFIX}_upstream_messages",
            "Upstream messages received, by kind.",
            labels=["feed", "kind"],
        )
        for feed, stats in feeds:
            for kind, n in stats.messages.items():
                messages.add_metric([feed, kind], n)
        yield messages
        yield from _per_feed(_FEED_COUNTERS, feeds)


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
        yield from _per_feed(_BACKFILL_FAMILIES, self._feeds())


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
        yield from (
            GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)
            for name, doc, value in (
                ("subscriber_buffer_max_bytes",
                 "Bytes queued or in flight of the fullest subscriber buffer (0: no subscriber).",
                 max_bytes),
                ("subscriber_buffered_bytes",
                 "Bytes queued or in flight over all subscriber buffers.", total_bytes),
                ("subscriber_buffer_limit_bytes",
                 "Each subscriber's buffer limit (server.buffer_bytes): overflowing it conflates "
                 "or disconnects.", self._limit),
                ("subscriber_buffer_max_records",
                 "Records queued in the subscriber buffer that holds the most records.",
                 max_records),
                ("subscriber_buffered_records", "Records queued over all subscriber buffers.",
                 total_records),
            )
        )  # fmt: skip
