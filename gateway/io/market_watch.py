"""Markets come and go: refresh Paxos's REST market list and tell the feeds what changed.

One task per process (next to the backfill tasks, sharing their HTTP client and request
budget): every ``backfill.markets_refresh`` seconds ``GET /v2/markets``, then
``MarketDirectory.update`` (sans-IO, ``ingest/markets.py``) says which markets halted, were
delisted or came back, and each book and executions feed that knows such a market announces it
and stops (or starts again) waiting for it (``FeedNormalizer.market_changed``), its records
published at once like any other batch. Stablecoin feeds are left alone: their index markets
(``USDCUSD``) are not on that list.

A failed refresh is logged and counted (``backfill_requests_total{endpoint="markets"}``) and
simply waits for the next one: the previous list stays in force. At the default 60 s this is
one request a minute, nothing against the budget of 10/s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

import trio

from gateway.contract.records import Record
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.markets import MarketDirectory
from gateway.ingest.paxos_rest import MarketInfo
from gateway.io.rest_client import PaxosRestClient, RestError

__all__ = ["WatchedFeed", "run_market_watch"]

log = logging.getLogger("gateway.markets")


class MarketSession(Protocol):
    def market_changed(
        self, market: str, *, available: bool, listed: bool, reason: str, now_ns: int
    ) -> list[Record]: ...


@dataclass(slots=True)
class WatchedFeed:
    spec: FeedSpec
    session: MarketSession
    publish: Callable[[list[Record], int], None]


async def run_market_watch(
    feeds: Sequence[WatchedFeed],
    client: PaxosRestClient,
    interval: float,
    *,
    directory: MarketDirectory | None = None,
    task_status: trio.TaskStatus[MarketDirectory] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Refresh the market list every ``interval`` seconds until cancelled."""
    directory = directory if directory is not None else MarketDirectory()
    watched = [f for f in feeds if f.spec.kind in ("book", "executions")]
    task_status.started(directory)
    while True:
        try:
            markets = await client.markets()
        except RestError as exc:
            log.warning(
                "market list refresh failed: %s; keeping the previous list", exc.detail,
                extra={"event": "markets_refresh_failed", "reason": exc.outcome},
            )  # fmt: skip
        else:
            try:
                _apply(directory, markets, watched)
            except Exception as exc:  # a bug below must not take the gateway down
                log.error(
                    "applying the market list failed", exc_info=exc,
                    extra={"event": "error", "reason": "internal_error"},
                )  # fmt: skip
        await trio.sleep(interval)


def _apply(
    directory: MarketDirectory, markets: list[MarketInfo], watched: Sequence[WatchedFeed]
) -> None:
    """Tell every feed that knows a market what changed, and publish what it says."""
    for change in directory.update(markets):
        log.info(
            "market %s: %s", change.market, change.reason,
            extra={"event": "market_changed", "market": change.market, "reason": change.reason},
        )  # fmt: skip
        for feed in watched:
            if not feed.spec.covers(change.market):
                continue
            records = feed.session.market_changed(
                change.market,
                available=change.available,
                listed=change.listed,
                reason=change.reason,
                now_ns=time.time_ns(),
            )
            if records:
                feed.publish(records, time.monotonic_ns())
