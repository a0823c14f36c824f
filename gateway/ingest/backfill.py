"""A complete trade tape across upstream outages (sans-IO): the merge of live and REST executions.

Paxos does not replay what was executed while a WebSocket was down (it re-sends only each
market's last execution). After every (re)connect of an executions feed the gateway therefore
asks REST for each market's ``recent-executions`` (its 2,000 most recent) and publishes what
it missed. This module decides *what* and *in which order*; the I/O edge
(``io/backfiller.py``) only fetches and hands the answers in, and the normalizer turns what
comes out into sequenced records.

One ``TradeTape`` per executions feed, living across reconnects:

* ``connected`` (called by the normalizer on every connect) starts holding every market of
  the feed: live executions arriving meanwhile are kept back (``live`` returns nothing for
  them). On the all-markets feed every market is held, known or not, until ``listed`` names
  the markets Paxos lists now (the REST ``/markets``).
* ``backfill(market, items, ...)`` merges one REST answer: an item is *missing* if its
  ``match_number`` was never published or held (dedup) and it is stamped at or after the
  market's lower bound (below). The missing items and the held live ones are released
  together in exchange order, (``executed_at``, ``match_number``), marked backfilled; the
  market is then live again.
* A hold is bounded (``max_held`` executions per feed): past it, or when the I/O edge gives up
  (``fail``: timeout, errors), what is held is released as it is and a ``backfill_failed``
  notice says which executions may be missing. Never silent.
* A known gap: the answer is a whole window (``window`` items, Paxos's 2,000) and does not
  reach back to the last execution published before the outage. The executions stamped
  between that one and the oldest of the answer may be missing; a ``gap`` notice says so
  with both times.

The lower bound of a market is ``max(floor, newest published stamp - slack)``. ``floor`` is
the feed's first connect: the tape starts there; older executions were never the gateway's
to publish (but for the one Paxos replays on connect). ``slack`` (1 s) because Paxos trims
fractional digits of ``executed_at`` (0 to 9 occur), so a stamp may read up to a second
early: an execution stamped more than a second before the newest published one happened
before it, and was published or lies before the floor. Within the bound, dedup by
``match_number`` decides; the per-market memory of published ids holds ``2 * window`` of
them, enough for any answer's window.

A reconnect while a REST request is in flight makes its answer stale (it cannot cover the
newest outage): its missing items are taken into the hold (and count as seen), and the
market stays held until an answer requested after the last connect comes in.

Order: each release is sorted by (``executed_at``, ``match_number``) and the live flow keeps
Paxos's order, so a trades stream's stamps never decrease. Only within one stamp (Paxos's
executions of one matching share one clock reading) may a live execution precede a
backfilled one with a smaller ``match_number``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from gateway.ingest.dedup import RecentIds
from gateway.ingest.paxos_rest import RestExecution

__all__ = [
    "DEFAULT_MAX_HELD",
    "DEFAULT_WINDOW",
    "STAMP_SLACK_NS",
    "BackfillStats",
    "Notice",
    "NoticeState",
    "Release",
    "TapeTrade",
    "TradeTape",
]

DEFAULT_WINDOW = 2000  # Paxos's recent-executions: "the last 2,000"
DEFAULT_MAX_HELD = 10_000
STAMP_SLACK_NS = 1_000_000_000

NoticeState = Literal["backfill_failed", "gap", "market_unavailable", "market_available"]


@dataclass(frozen=True, slots=True)
class TapeTrade:
    """An execution on its way to a trades stream (not yet sequenced)."""

    market: str
    price: Decimal
    amount: Decimal
    match_number: str
    exchange_time: int
    receive_time: int
    backfilled: bool = False

    @property
    def key(self) -> tuple[int, str]:
        """Exchange order: (``executed_at``, ``match_number``)."""
        return self.exchange_time, self.match_number


@dataclass(frozen=True, slots=True)
class Notice:
    """A status to announce: ``market`` None concerns the whole feed. ``gap_from`` /
    ``gap_to``: stamps (ns) of the executions published just before and just after the
    executions that may be missing (None: unknown, e.g. nothing published yet)."""

    state: NoticeState
    market: str | None
    reason: str
    gap_from: int | None = None
    gap_to: int | None = None


@dataclass(slots=True)
class Release:
    """What to publish now: ``notices`` first (they say what is missing before ``trades``),
    then ``trades`` in publication order."""

    trades: list[TapeTrade] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.trades or self.notices)

    def extend(self, other: Release) -> None:
        self.trades += other.trades
        self.notices += other.notices


@dataclass(slots=True)
class BackfillStats:
    """Plain counters (sans-IO); ``io/metrics.BackfillStatsCollector`` exports them."""

    backfilled: int = 0  # executions published from REST
    duplicates: int = 0  # live executions dropped: already published (by a backfill)
    gaps: int = 0  # known gaps announced
    failures: int = 0  # market backfills given up (error, timeout, hold overflow)
    held: int = 0  # live executions held right now


class _Market:
    __slots__ = ("held", "max_time", "ref_id", "seen")

    def __init__(self, capacity: int) -> None:
        self.seen = RecentIds(capacity)  # published or held
        self.ref_id: str | None = None  # the last published execution
        self.max_time: int | None = None  # the newest published stamp
        self.held: list[TapeTrade] | None = None  # None: live, not holding


class TradeTape:
    def __init__(
        self,
        market: str | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        max_held: int = DEFAULT_MAX_HELD,
        slack_ns: int = STAMP_SLACK_NS,
    ) -> None:
        """``market``: the feed's market, None for the all-markets feed."""
        if window < 1 or max_held < 1 or slack_ns < 0:
            raise ValueError("window and max_held must be >= 1, slack_ns >= 0")
        self.market = market
        self.window = window
        self.max_held = max_held
        self.slack_ns = slack_ns
        self.stats = BackfillStats()
        self.floor_ns: int | None = None
        self.generation = 0
        # Called on every connect: the I/O edge starts a backfill round.
        self.on_connected: Callable[[], None] | None = None
        self._hold_all = False
        # The generation whose backfill was given up as a whole: nothing more is held in it,
        # or its late answers would publish the outage after the live executions released.
        self._given_up = 0
        self._markets: dict[str, _Market] = {}
        if market is not None:
            self._state(market)

    # -- queries ---------------------------------------------------------------------------

    def pending(self) -> list[str]:
        """Markets held, waiting for their backfill, sorted."""
        return sorted(m for m, s in self._markets.items() if s.held is not None)

    @property
    def holding_all(self) -> bool:
        """All-markets feed between a connect and ``listed``: every market is held."""
        return self._hold_all

    def markets(self) -> list[str]:
        return sorted(self._markets)

    # -- events ----------------------------------------------------------------------------

    def connected(self, now_ns: int) -> None:
        """A new upstream connection: hold every market until its backfill is in."""
        if self.floor_ns is None:
            self.floor_ns = now_ns
        self.generation += 1
        if self.market is None:
            self._hold_all = True
        for state in self._markets.values():
            if state.held is None:
                state.held = []
        if self.on_connected is not None:
            self.on_connected()

    def live(self, trade: TapeTrade) -> Release:
        """A live execution (already deduplicated by the normalizer's own window)."""
        state = self._markets.get(trade.market)
        if state is None:
            state = self._state(trade.market)
            if self._hold_all:
                state.held = []
        if not state.seen.add(trade.match_number):
            self.stats.duplicates += 1
            return Release()
        if state.held is None:
            self._published(state, [trade])
            return Release([trade])
        if self.stats.held >= self.max_held:
            state.held.append(trade)
            self.stats.held += 1
            return self.fail(
                None, f"more than {self.max_held} live executions arrived during the backfill"
            )
        state.held.append(trade)
        self.stats.held += 1
        return Release()

    def listed(self, markets: Iterable[str]) -> Release:
        """The all-markets feed's markets as Paxos lists them now: those are backfilled; a
        market held but not listed (delisted) has nothing to backfill from and is released."""
        self._hold_all = False
        if self._given_up == self.generation:
            return Release()
        listed = set(markets)
        for market in listed:
            state = self._markets.get(market) or self._state(market)
            if state.held is None:
                state.held = []
        release = Release()
        for market, state in self._markets.items():
            if market not in listed and state.held is not None:
                release.extend(self._release(market, state, []))
        return release

    def backfill(
        self,
        market: str,
        items: Sequence[RestExecution],
        *,
        now_ns: int,
        generation: int,
    ) -> Release:
        """Merge one ``recent-executions`` answer for ``market``, requested while
        ``self.generation`` was ``generation``."""
        state = self._markets.get(market)
        if state is None or state.held is None:
            return Release()  # not held (given up meanwhile, or unknown): nothing to merge
        lower = self._lower_bound(state)
        missing: list[TapeTrade] = []
        for item in items:
            if item.executed_at_ns < lower or item.match_number in state.seen:
                continue
            state.seen.add(item.match_number)
            missing.append(
                TapeTrade(
                    market, item.price, item.amount, item.match_number,
                    item.executed_at_ns, now_ns, backfilled=True,
                )
            )  # fmt: skip
        notices: list[Notice] = []
        gap = self._gap(market, state, items)
        if gap is not None:
            self.stats.gaps += 1
            notices.append(gap)
        if generation != self.generation:
            # Stale: a reconnect came after the request; keep holding what it brought.
            state.held += missing
            self.stats.held += len(missing)
            return Release(notices=notices)
        release = self._release(market, state, missing)
        release.notices[:0] = notices
        return release

    def fail(self, market: str | None, reason: str) -> Release:
        """Give up the backfill of ``market`` (None: of every held market): release what is
        held and announce that executions of the outage may be missing."""
        if market is None:
            self._hold_all = False
            self._given_up = self.generation
        release = Release()
        for name in [market] if market is not None else self.pending():
            state = self._markets.get(name)
            if state is None or state.held is None:
                continue
            self.stats.failures += 1
            gap_from = self._last_published_time(state)
            first = min((t.key for t in state.held), default=None)
            release.notices.append(
                Notice(
                    "backfill_failed", name, reason, gap_from,
                    first[0] if first is not None else None,
                )
            )  # fmt: skip
            release.extend(self._release(name, state, []))
        return release

    # -- helpers ---------------------------------------------------------------------------

    def _state(self, market: str) -> _Market:
        state = self._markets[market] = _Market(2 * self.window)
        return state

    def _lower_bound(self, state: _Market) -> int:
        floor = self.floor_ns if self.floor_ns is not None else 0
        if state.max_time is None:
            return floor
        return max(floor, state.max_time - self.slack_ns)

    def _last_published_time(self, state: _Market) -> int | None:
        if state.max_time is not None:
            return state.max_time
        return self.floor_ns

    def _gap(self, market: str, state: _Market, items: Sequence[RestExecution]) -> Notice | None:
        """A known gap: the answer does not reach back to the last execution published.

        With one published: it is not in the answer, and the answer is a whole window or
        starts after it (a window smaller than configured; an answer that starts earlier
        and lacks it is REST lagging behind the feed, not a hole). With none published yet:
        a whole window that starts after the floor (a market listed after it has a short
        tape of its own that starts after the floor, and no hole)."""
        if not items:
            return None
        full = len(items) >= self.window
        oldest = min(i.executed_at_ns for i in items)
        since = self._last_published_time(state)
        if state.ref_id is not None:
            if any(i.match_number == state.ref_id for i in items):
                return None  # the window reaches back to the last execution published
            if not full and since is not None and oldest <= since:
                return None
        elif not full or since is None or oldest <= since:
            return None
        return Notice(
            "gap",
            market,
            f"{market}: the outage outlasted Paxos's {self.window} most recent executions; "
            "executions between the two stamps may be missing",
            since,
            oldest,
        )

    def _release(self, market: str, state: _Market, missing: list[TapeTrade]) -> Release:
        held = state.held or []
        state.held = None
        self.stats.held -= len(held)
        trades = sorted([*held, *missing], key=lambda t: t.key)
        self.stats.backfilled += sum(t.backfilled for t in trades)
        self._published(state, trades)
        return Release(trades)

    @staticmethod
    def _published(state: _Market, trades: list[TapeTrade]) -> None:
        if not trades:
            return
        state.ref_id = trades[-1].match_number
        newest = max(t.exchange_time for t in trades)
        if state.max_time is None or newest > state.max_time:
            state.max_time = newest
