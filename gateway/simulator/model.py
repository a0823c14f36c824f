"""The market model: a seeded random walk of order books and executions (sans-IO).

``MarketModel`` knows the true book of every market at every moment (``truth``) and turns
each change into the exact wire text Paxos would send, once, when the change happens; the
server then only copies strings to sockets. Prices are integer tick counts and amounts
integer units of 1e-8 inside, so the hot path never builds a ``Decimal``; the event
objects convert on demand for tests.

Book dynamics, per step (one step = one market, chosen uniformly):
- with probability ``execution_ratio`` an execution: a taker hits the best level of one
  side, taking all or part of it; now and then it sweeps a few levels. Every level touched
  yields one ``Execution`` (own match number) and one ``LevelUpdate`` with the new absolute
  size (``0`` when the level is used up);
- otherwise one level changes: a size is modified (mostly near the top), a level is removed,
  or a new price is added (sometimes inside the spread, which is what lets the mid walk).
  Adds and removes are balanced so each side stays near ``levels`` levels.
The book is never crossed: a new bid is always below the best ask and vice versa.

Markets come and go (``set_status``, ``add_market``): an ``open`` market trades, a
``halted`` one is still listed but frozen (no events), a ``delisted`` one is frozen and no
longer listed (``markets`` leaves it out). At least one market is always open, so a step
always has a market to advance.

Every execution is recorded when it is generated, whether or not anyone is connected:
``executions`` (all markets) and ``executions_of(market)`` are the complete tape, the ground
truth a backfilling client is checked against.

Same seed and same sequence of ``now_ns`` arguments (and of market changes) give the same
events and texts. The
stablecoin walk and the snapshots use random generators of their own, so taking snapshots
(which depends on when clients connect) never changes the event sequence.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.simulator import formatting
from gateway.simulator.events import (
    Event,
    Execution,
    Level,
    LevelUpdate,
    MarketStatus,
    NumberStyle,
    PriceTick,
    Side,
)
from gateway.simulator.market_book import MarketBook, round_size
from gateway.simulator.markets import AMOUNT_SCALE, MarketSpec
from gateway.simulator.stablecoins import StablecoinWalk

__all__ = ["MarketModel"]

_MATCH_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MATCH_SPACE = 36**12


class MatchNumbers:
    """Unique 12-character match numbers in a seeded, unordered-looking sequence: an affine
    bijection of a counter over 36**12."""

    __slots__ = ("_a", "_b", "_count")

    def __init__(self, rng: random.Random) -> None:
        self._a = rng.randrange(_MATCH_SPACE) | 1
        while self._a % 3 == 0:  # coprime with 36**12 = 2**24 * 3**24: a bijection
            self._a += 2
        self._b = rng.randrange(_MATCH_SPACE)
        self._count = 0

    def next(self) -> str:
        n = (self._a * self._count + self._b) % _MATCH_SPACE
        self._count += 1
        chars = []
        for _ in range(12):
            n, digit = divmod(n, 36)
            chars.append(_MATCH_ALPHABET[digit])
        return "".join(reversed(chars))


class MarketModel:
    def __init__(
        self,
        markets: Sequence[MarketSpec],
        *,
        seed: int,
        now_ns: int,
        levels: int = 200,
        stablecoins: Sequence[str] = ("USDCUSD",),
        execution_ratio: float = 0.1,
        number_style: NumberStyle = "trim",
        timestamp_digits: int | None = None,
    ) -> None:
        if levels < 1:
            raise ValueError("levels must be >= 1")
        if not 0.0 <= execution_ratio <= 1.0:
            raise ValueError("execution_ratio must be within 0..1")
        if timestamp_digits is not None and not 0 <= timestamp_digits <= 9:
            raise ValueError("timestamp_digits must be 0..9 or None (random per timestamp)")
        self._rng = random.Random(f"paxos-sim-model:{seed}")
        self._snapshot_rng = random.Random(f"paxos-sim-snapshot:{seed}")
        self._levels = levels
        self._execution_ratio = execution_ratio
        self._number_style: NumberStyle = number_style
        self._timestamp_digits = timestamp_digits
        self._timestamps = formatting.TimestampFormatter()
        self._markets = {spec.symbol: MarketBook(spec, now_ns) for spec in markets}
        self._market_list = list(self._markets.values())  # the open ones: what ``step`` picks
        self._match_numbers = MatchNumbers(self._rng)
        self.executions: list[Execution] = []
        """Every execution ever generated, oldest first. Includes one initial execution per
        market (stamped up to a minute before start): what a client's first replay shows."""
        self._last_execution: dict[str, Execution] = {}
        for market in self._market_list:
            market.seed(self._rng, self._levels)
            self._seed_execution(market, now_ns, opening=False)
        self._stablecoins = StablecoinWalk(
            stablecoins, seed=seed, timestamps=self._timestamps, timestamp_digits=timestamp_digits
        )
        self.stablecoin_tick(now_ns)

    # -- what the model knows ------------------------------------------------------------

    @property
    def markets(self) -> tuple[str, ...]:
        """The listed markets (open or halted), in listing order."""
        return tuple(s for s, m in self._markets.items() if m.status != "delisted")

    @property
    def known_markets(self) -> tuple[str, ...]:
        """Every market ever listed, delisted ones included."""
        return tuple(self._markets)

    def status(self, market: str) -> MarketStatus:
        return self._markets[market].status

    def status_since_ns(self, market: str) -> int:
        """When ``market`` was listed or last changed status (ns since the Unix epoch)."""
        return self._markets[market].status_since_ns

    def executions_of(self, market: str) -> Sequence[Execution]:
        """Every execution of ``market`` ever generated, oldest first. Read-only."""
        return self._markets[market].executions

    @property
    def stablecoins(self) -> tuple[str, ...]:
        return self._stablecoins.stablecoins

    def spec(self, market: str) -> MarketSpec:
        return self._markets[market].spec

    def truth(self, market: str) -> tuple[list[Level], list[Level]]:
        """The true book now: (bids best=highest first, asks best=lowest first)."""
        return self._markets[market].truth()

    def book_units(self, market: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``truth`` as integers: (price * 10**scale, amount * 10**8), best first."""
        return self._markets[market].units()

    def is_crossed(self, market: str) -> bool:
        m = self._markets[market]
        bid, ask = m.best_bid(), m.best_ask()
        return bid is not None and ask is not None and bid >= ask

    def last_execution(self, market: str) -> Execution:
        return self._last_execution[market]

    def last_price(self, stablecoin: str) -> PriceTick:
        return self._stablecoins.last_price(stablecoin)

    # -- markets coming and going ---------------------------------------------------------

    def set_status(self, market: str, status: MarketStatus, now_ns: int) -> None:
        """Open, halt or delist a known market. ValueError if no market would stay open."""
        m = self._markets[market]
        if status != "open" and m.status == "open" and len(self._market_list) == 1:
            raise ValueError(f"{market} is the last open market: at least one must trade")
        if status != m.status:
            m.status, m.status_since_ns = status, now_ns
            self._market_list = [x for x in self._markets.values() if x.status == "open"]

    def add_market(self, spec: MarketSpec, now_ns: int) -> Execution:
        """List a new, open market: a seeded book and an opening execution at ``now_ns``
        (returned: it is news for the executions feeds, unlike the initial ones)."""
        if spec.symbol in self._markets:
            raise ValueError(f"market {spec.symbol} exists already")
        m = MarketBook(spec, now_ns)
        m.seed(self._rng, self._levels)
        self._markets[spec.symbol] = m
        self._market_list.append(m)
        return self._seed_execution(m, now_ns, opening=True)

    # -- wire text of the current state --------------------------------------------------

    def snapshot_texts(
        self,
        market: str,
        *,
        split: int = 0,
        style: formatting.FinalSnapshotStyle = "bool",
    ) -> list[str]:
        """The book now as SNAPSHOT messages: one, or fragments of at most ``split`` levels
        per side with ``final_snapshot`` false until the last."""
        m = self._markets[market]
        pad = self._pad(self._snapshot_rng)
        fmt = formatting.format_units
        bids = [
            (fmt(p * m.tick_units, m.scale, pad=pad), fmt(a, AMOUNT_SCALE, pad=pad))
            for p, a in reversed(m.bids.items())
        ]
        asks = [
            (fmt(p * m.tick_units, m.scale, pad=pad), fmt(a, AMOUNT_SCALE, pad=pad))
            for p, a in m.asks.items()
        ]
        if split <= 0 or max(len(bids), len(asks)) <= split:
            return [formatting.snapshot_text(market, bids, asks, final=True, style=style)]
        count = -(-max(len(bids), len(asks)) // split)
        return [
            formatting.snapshot_text(
                market,
                bids[i * split : (i + 1) * split],
                asks[i * split : (i + 1) * split],
                final=i == count - 1,
                style=style,
            )
            for i in range(count)
        ]

    def crossing_update_text(self, market: str, rng: random.Random) -> str | None:
        """An UPDATE that would cross the book, NOT applied to the truth (fault injection).

        None if the book has no level to cross."""
        m = self._markets[market]
        bid, ask = m.best_bid(), m.best_ask()
        amount = formatting.format_units(m.size(rng), AMOUNT_SCALE)
        if ask is not None:
            price, side = ask + rng.randint(0, 2), "BUY"
        elif bid is not None:
            price, side = max(1, bid - rng.randint(0, 2)), "SELL"
        else:
            return None
        text = formatting.format_units(price * m.tick_units, m.scale)
        return formatting.update_text(market, side, text, amount)

    # -- evolution -----------------------------------------------------------------------

    def step(self, now_ns: int) -> list[Event]:
        """Advance one market by one change; returns the resulting events in wire order."""
        rng = self._rng
        m = self._market_list[rng.randrange(len(self._market_list))]
        if rng.random() < self._execution_ratio:
            events = self._execute(m, now_ns)
            if events:
                return events
        return [self._change_level(m)]

    def stablecoin_tick(self, now_ns: int) -> list[PriceTick]:
        """One index price per stablecoin (``stablecoins.StablecoinWalk``)."""
        return self._stablecoins.tick(now_ns)

    # -- internals -----------------------------------------------------------------------

    def _pad(self, rng: random.Random) -> bool:
        style = self._number_style
        return style == "pad" or (style == "mixed" and rng.random() < 0.5)

    def _seed_execution(self, m: MarketBook, now_ns: int, *, opening: bool) -> Execution:
        """The last execution before start (up to a minute back), or a new market's first."""
        rng = self._rng
        best = m.best_bid() if rng.random() < 0.5 else m.best_ask()
        price = best if best is not None else m.spec.reference_ticks
        amount = m.size(rng)
        at_ns = now_ns if opening else now_ns - rng.randint(1, 60 * 10**9)
        return self._record_execution(m, price, amount, at_ns, pad=False)

    def _record_execution(
        self, m: MarketBook, price_ticks: int, amount: int, now_ns: int, *, pad: bool
    ) -> Execution:
        rng = self._rng
        digits = rng.randint(0, 9) if self._timestamp_digits is None else self._timestamp_digits
        stamp = self._timestamps.format(now_ns, digits)
        match = self._match_numbers.next()
        price_units = price_ticks * m.tick_units
        execution = Execution(
            market=m.symbol,
            price_units=price_units,
            scale=m.scale,
            amount_units=amount,
            executed_at_ns=formatting.truncate_ns(now_ns, digits),
            executed_at=stamp,
            match_number=match,
            text=formatting.execution_text(
                m.symbol,
                formatting.format_units(price_units, m.scale, pad=pad),
                formatting.format_units(amount, AMOUNT_SCALE, pad=pad),
                stamp,
                match,
            ),
        )
        self.executions.append(execution)
        m.executions.append(execution)
        self._last_execution[m.symbol] = execution
        return execution

    def _update(self, m: MarketBook, buy: bool, price_ticks: int, amount: int) -> LevelUpdate:
        book = m.bids if buy else m.asks
        if amount:
            book[price_ticks] = amount
        else:
            del book[price_ticks]
        pad = self._pad(self._rng)
        price_units = price_ticks * m.tick_units
        side: Side = "BUY" if buy else "SELL"
        return LevelUpdate(
            market=m.symbol,
            side=side,
            price_units=price_units,
            scale=m.scale,
            amount_units=amount,
            text=formatting.update_text(
                m.symbol,
                side,
                formatting.format_units(price_units, m.scale, pad=pad),
                formatting.format_units(amount, AMOUNT_SCALE, pad=pad),
            ),
        )

    def _change_level(self, m: MarketBook) -> LevelUpdate:
        rng = self._rng
        buy = rng.random() < 0.5
        book = m.bids if buy else m.asks
        count = len(book)
        balance = max(-1.0, min(1.0, (count - self._levels) / self._levels))
        roll = rng.random()
        if count == 0 or roll < 0.3 - 0.25 * balance:
            price = m.new_price(rng, buy)
            if price is not None:
                return self._update(m, buy, price, m.size(rng))
            if count == 0:  # nowhere to add on this side: change the other one instead
                buy = not buy
                book = m.bids if buy else m.asks
                count = len(book)
        elif roll < 0.6:
            index = rng.randrange(count)
            price = int(book.peekitem(index)[0])
            return self._update(m, buy, price, 0)
        # modify a size, mostly near the top of the book where activity is
        depth = min(count - 1, int(rng.expovariate(1 / 8)))
        index = count - 1 - depth if buy else depth
        price, old = book.peekitem(index)
        new = round_size(max(1, int(old * rng.uniform(0.2, 1.8))), rng)
        return self._update(m, buy, int(price), new)

    def _execute(self, m: MarketBook, now_ns: int) -> list[Event]:
        rng = self._rng
        taker_buys = rng.random() < 0.5
        book = m.asks if taker_buys else m.bids
        levels = 1 + (rng.randint(1, 3) if rng.random() < 0.05 else 0)
        pad = self._pad(rng)
        events: list[Event] = []
        for i in range(levels):
            if not book:
                break
            price, size = book.peekitem(0 if taker_buys else -1)
            take = size
            if i == levels - 1 and rng.random() < 0.7:
                part = round_size(max(1, int(size * rng.uniform(0.02, 0.9))), rng)
                if part < size:
                    take = part
            events.append(self._record_execution(m, int(price), take, now_ns, pad=pad))
            events.append(self._update(m, not taker_buys, int(price), size - take))
        return events
