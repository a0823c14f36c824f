"""The gateway's scrape-time metrics, for ``app.Gateway``: collectors that read the hub's and
the feeds' own counters when Prometheus scrapes, so the hot path never calls prometheus_client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import get_args

import trio

from gateway import __version__
from gateway.backfill_wiring import register_backfill_metrics
from gateway.config import Config
from gateway.fanout.hub import Hub
from gateway.feed_readiness import Feed
from gateway.io.delivery import DisconnectReason
from gateway.io.handshake import RejectReason
from gateway.io.metrics import (
    PREFIX,
    BufferDepthCollector,
    FeedStatsCollector,
    GaugeCallbackCollector,
    HubStatsCollector,
    Metrics,
)
from gateway.io.readiness import Readiness


def register_collectors(
    m: Metrics,
    hub: Hub,
    feeds: Sequence[Feed],
    config: Config,
    readiness: Readiness,
    epoch: Callable[[], str],
) -> None:
    """``epoch``: the epoch served, read at each scrape (in cluster mode it is the cluster's,
    known only once a record has been read or a term begun)."""
    # Every value of a small fixed label set is exposed from the start (at 0): a series
    # that only appears on its first event breaks rate() and "absent" alerts.
    for reason in get_args(DisconnectReason):
        m.subscriber_disconnects.labels(reason)
    for why in get_args(RejectReason):
        m.rejected_connections.labels(why)
    m.add_collector(HubStatsCollector(hub.stats))
    m.add_collector(FeedStatsCollector(lambda: ((f.spec.name, f.session.stats) for f in feeds)))
    register_backfill_metrics(m, feeds, config)
    m.add_collector(
        GaugeCallbackCollector(
            f"{PREFIX}_upstream_last_message_age_seconds",
            "Seconds since the feed's last upstream frame (idle markets are silent: alert "
            "on this together with upstream_connected, never alone).",
            ["feed"],
            lambda: _last_message_ages(feeds),
        )
    )
    m.add_collector(
        GaugeCallbackCollector(
            f"{PREFIX}_ready",
            "1 if /readyz would answer 200 now, else 0.",
            [],
            lambda: [([], 1.0 if readiness.check(trio.current_time()).ready else 0.0)],
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
            "Constant 1, labelled with the version and the epoch served (in cluster mode "
            "the cluster's; empty until known).",
            ["version", "epoch"],
            lambda: [([__version__, epoch()], 1.0)],
        )
    )
    m.add_collector(
        BufferDepthCollector(
            config.server.buffer_bytes,
            lambda: ((s.queued_bytes, len(s.queue)) for s in hub.subscribers),
        )
    )


def _last_message_ages(feeds: Sequence[Feed]) -> Iterator[tuple[list[str], float]]:
    # FeedState keeps a time.monotonic_ns copy of the receive time for exactly this.
    now = time.monotonic_ns()
    for feed in feeds:
        last = feed.state.last_message_monotonic_ns
        if last is not None:
            yield [feed.spec.name], max(0.0, (now - last) / 1e9)


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
