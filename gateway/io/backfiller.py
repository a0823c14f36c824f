"""The backfill's I/O edge: after every (re)connect of an executions feed, fetch what it missed.

One task per executions feed (in the upstream nursery, next to the feed's ``run_feed``). It
sleeps until the feed's ``TradeTape`` reports a connect (the normalizer calls
``tape.connected`` as the connection opens, so live executions are held from the first
frame on), then runs one *round*, bounded by ``backfill.timeout``:

1. on the all-markets feed, ``GET /markets`` names the markets to backfill (``tape.listed``);
2. per held market, ``GET /markets/{m}/recent-executions``, merged by ``tape.backfill``;
3. whatever each step releases is sequenced by the normalizer (``session.release``) and
   published at once, synchronously, like a socket read's records in ``run_feed``.

A request that fails is retried within the round (a 429 waits out its ``Retry-After`` in the
shared ``RequestBudget``; 5xx, timeouts and network errors back off from 0.5 s, doubling, up
to 5 s); a 404 or a bad answer gives up that market at once. A market given up, and every
market still held when the round's time is over, is released with a ``backfill_failed``
status: late, never silent. A reconnect during a round makes the answers already in flight
stale (the tape keeps those markets held) and starts another round right after.

Retries are bounded by the round's deadline, the round by ``timeout``, the number of rounds
by the number of connects: nothing here loops unbounded.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

import trio

from gateway.config import BackfillConfig
from gateway.contract.records import Record
from gateway.ingest.backfill import Notice, Release, TradeTape
from gateway.io.market_watch import WatchedFeed, run_market_watch
from gateway.io.metrics import Metrics
from gateway.io.rest_client import PaxosRestClient, RequestBudget, RestError, open_http_client

__all__ = ["BackfillFeed", "run_backfill", "run_backfills"]

log = logging.getLogger("gateway.backfill")

_RETRY_INITIAL = 0.5
_RETRY_MAX = 5.0
_GIVE_UP_AT_ONCE = frozenset({"not_found", "bad_answer", "http_error"})
_T = TypeVar("_T")


class ReleasingSession(Protocol):
    """What the backfill needs of ``FeedNormalizer``: sequencing what the tape releases."""

    def release(self, release: Release, now_ns: int) -> list[Record]: ...


@dataclass(slots=True)
class BackfillFeed:
    name: str
    tape: TradeTape
    session: ReleasingSession
    publish: Callable[[list[Record], int], None]


async def run_backfill(
    feed: BackfillFeed,
    client: PaxosRestClient,
    *,
    round_timeout: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Backfill ``feed`` after each of its connects, until cancelled."""
    wake = trio.Event()

    def connected() -> None:
        wake.set()

    feed.tape.on_connected = connected
    if feed.tape.generation:  # connected before this task started
        wake.set()
    task_status.started()
    try:
        while True:
            await wake.wait()
            wake = trio.Event()
            try:
                await _round(feed, client, round_timeout)
            except Exception as exc:
                # A bug below must not take the gateway down: what was held is released
                # and the failure announced, like any backfill that gave up.
                log.error(
                    "feed %s: internal error in the backfill", feed.name, exc_info=exc,
                    extra={"feed": feed.name, "event": "error", "reason": "internal_error"},
                )  # fmt: skip
                release = feed.tape.fail(None, "backfill failed: internal error")
                # What the tape released before the error may be lost: say so feed-wide.
                release.notices.append(
                    Notice("backfill_failed", None, "backfill failed: internal error")
                )
                _publish(feed, release)
    finally:
        feed.tape.on_connected = None


async def _round(feed: BackfillFeed, client: PaxosRestClient, round_timeout: float) -> None:
    tape = feed.tape
    generation = tape.generation
    started = trio.current_time()
    with trio.move_on_after(round_timeout) as scope:
        if tape.market is None:
            try:
                markets = await _retrying(feed, "the market list", client.markets)
            except RestError as exc:
                _publish(feed, tape.fail(None, f"backfill failed: {exc.detail}"))
                return
            _publish(feed, tape.listed(m.market for m in markets))
        for market in tape.pending():
            try:
                items = await _retrying(
                    feed, market, functools.partial(client.recent_executions, market)
                )
            except RestError as exc:
                _publish(feed, tape.fail(market, f"{market}: backfill failed: {exc.detail}"))
                continue
            _publish(
                feed,
                tape.backfill(market, items, now_ns=time.time_ns(), generation=generation),
            )
    if scope.cancelled_caught:
        _publish(feed, tape.fail(None, f"backfill timed out after {round_timeout:g} s"))
    log.info(
        "feed %s: backfill round done in %.2f s (%d executions backfilled so far)",
        feed.name, trio.current_time() - started, tape.stats.backfilled,
        extra={"feed": feed.name, "event": "backfill_round"},
    )  # fmt: skip


async def _retrying(feed: BackfillFeed, what: str, request: Callable[[], Awaitable[_T]]) -> _T:
    """``request()`` until it answers; gives up on an answer no retry can change. Bounded by
    the caller's deadline."""
    delay = _RETRY_INITIAL
    while True:
        try:
            return await request()
        except RestError as exc:
            if exc.outcome in _GIVE_UP_AT_ONCE:
                raise
            log.warning(
                "feed %s: backfill of %s: %s; retrying", feed.name, what, exc.detail,
                extra={"feed": feed.name, "event": "backfill_retry", "reason": exc.outcome},
            )  # fmt: skip
            if exc.outcome != "rate_limited":  # the budget itself waits out Retry-After
                await trio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)


def _publish(feed: BackfillFeed, release: Release) -> None:
    if release:
        records = feed.session.release(release, time.time_ns())
        if records:
            feed.publish(records, time.monotonic_ns())


async def run_backfills(
    feeds: list[BackfillFeed],
    watched: Sequence[WatchedFeed],
    settings: BackfillConfig,
    rest_url: str,
    metrics: Metrics,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Every feed's backfill task and the market-list refresh (``market_watch``), sharing one
    HTTP client and one ``RequestBudget`` (the limit is per IP: per process). Reports started
    once every backfill task waits for its connects."""
    budget = RequestBudget(settings.requests_per_second, settings.burst)
    async with open_http_client(settings.request_timeout) as http:
        client = PaxosRestClient(
            rest_url,
            http,
            budget,
            on_outcome=lambda endpoint, outcome: metrics.backfill_requests.labels(
                endpoint, outcome
            ).inc(),
        )
        async with trio.open_nursery() as nursery:
            for feed in feeds:
                await nursery.start(
                    functools.partial(run_backfill, feed, client, round_timeout=settings.timeout)
                )
            await nursery.start(run_market_watch, watched, client, settings.markets_refresh)
            task_status.started()
            await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
