"""The composition of issue 17's gateway-side REST backfill and markets come and go
(docs/upstream.md), for ``app.Gateway``: kept apart so the composition root stays readable.

* ``tape_for``: the ``TradeTape`` of an executions feed (handed to its ``FeedNormalizer``).
* ``hub_publisher``: how a backfill release or a market-list change reaches the hub, the same
  way as a socket read's records (``ingest.batch.publish_records``: new books registered
  first, one synchronous publish). A delisted market's book is retired by the normalizer;
  a relisting creates a fresh book, which is registered like any new market's.
* ``start_backfills``: the backfill tasks and the market-list refresh, started before the feeds.
* ``register_backfill_metrics``: request labels at 0 and the ``BackfillStatsCollector``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from gateway.config import Config
from gateway.contract.records import Record
from gateway.ingest.backfill import TradeTape
from gateway.ingest.batch import RecordSink, publish_records
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.backfiller import BackfillFeed, run_backfills
from gateway.io.market_watch import WatchedFeed
from gateway.io.metrics import BackfillStatsCollector, Metrics
from gateway.io.rest_client import ENDPOINTS, OUTCOMES
from gateway.io.upstream_conn import observe_publish_latency

__all__ = ["hub_publisher", "register_backfill_metrics", "start_backfills", "tape_for"]


class _Feed(Protocol):
    @property
    def spec(self) -> FeedSpec: ...
    @property
    def session(self) -> FeedNormalizer: ...


def tape_for(spec: FeedSpec, config: Config) -> TradeTape | None:
    """The backfill's trade tape of an executions feed, if backfill is on."""
    backfill = config.backfill
    if spec.kind != "executions" or not backfill.enabled:
        return None
    return TradeTape(spec.market, window=backfill.window, max_held=backfill.max_held)


def hub_publisher(
    session: FeedNormalizer, sink: RecordSink, metrics: Metrics
) -> Callable[[list[Record], int], None]:
    """``publish`` for the backfill and the market watch: registers the session's new books,
    publishes, and observes the publish latency like ``run_feed`` does."""

    def publish(records: list[Record], received_monotonic_ns: int) -> None:
        publish_records(session, sink, records)
        observe_publish_latency(metrics.publish_latency, received_monotonic_ns)

    return publish


async def start_backfills(
    nursery: trio.Nursery,
    feeds: Sequence[_Feed],
    sink: RecordSink,
    config: Config,
    metrics: Metrics,
) -> None:
    """Start every executions feed's backfill task and the market-list refresh in
    ``nursery`` (returns once they wait for their feeds' connects); nothing if backfill is
    off."""
    if not config.backfill.enabled:
        return
    backfills = [
        BackfillFeed(
            f.spec.name, f.session.tape, f.session, hub_publisher(f.session, sink, metrics)
        )
        for f in feeds
        if f.session.tape is not None
    ]
    watched = [
        WatchedFeed(f.spec, f.session, hub_publisher(f.session, sink, metrics)) for f in feeds
    ]
    await nursery.start(
        functools.partial(
            run_backfills, backfills, watched, config.backfill, config.rest_url(), metrics
        )
    )


def register_backfill_metrics(metrics: Metrics, feeds: Sequence[_Feed], config: Config) -> None:
    """Every REST endpoint and outcome at 0 (when backfill is on), and the per-feed backfill
    counters exported at scrape time."""
    if config.backfill.enabled:
        for endpoint in ENDPOINTS:
            for outcome in OUTCOMES:
                metrics.backfill_requests.labels(endpoint, outcome)
    metrics.add_collector(
        BackfillStatsCollector(
            lambda: ((f.spec.name, f.session.tape.stats) for f in feeds if f.session.tape)
        )
    )
