"""One simulated market's true order book and its random walk's book-level moves (sans-IO).

Prices are integer tick counts and amounts integer units of 1e-8. The moves here draw from the
random generator they are given (the model's), in the model's order, so the same seed gives the
same books. The book is never crossed: ``new_price`` keeps a new bid below the best ask and a
new ask above the best bid.
"""

from __future__ import annotations

import random

from sortedcontainers import SortedDict

from gateway.simulator.events import Execution, Level, MarketStatus, decimal_of
from gateway.simulator.markets import AMOUNT_SCALE, MarketSpec

__all__ = ["MarketBook"]

_TYPICAL_LEVEL_NOTIONAL = 20_000  # USD; sizes are drawn around this value per level
# rounding steps of a size in 1e-8 units: mostly full 8 decimals, sometimes round lots
_SIZE_STEPS: tuple[int, ...] = (1, 1, 1, 1, 10, 100, 1000, 10**4, 10**5, 10**6, 10**7, 10**8)


class MarketBook:
    __slots__ = (
        "asks", "bids", "executions", "scale", "spec", "status", "status_since_ns", "symbol",
        "tick_units", "typical_units",
    )  # fmt: skip

    def __init__(self, spec: MarketSpec, now_ns: int) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        self.scale = spec.scale
        self.tick_units = spec.tick_units
        # price in ticks -> amount in 1e-8 units; bids best = last key, asks best = first key
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.typical_units = max(
            1, int(_TYPICAL_LEVEL_NOTIONAL / float(spec.reference_price) * 10**AMOUNT_SCALE)
        )
        self.executions: list[Execution] = []
        self.status: MarketStatus = "open"
        self.status_since_ns = now_ns

    def best_bid(self) -> int | None:
        return int(self.bids.peekitem(-1)[0]) if self.bids else None

    def best_ask(self) -> int | None:
        return int(self.asks.peekitem(0)[0]) if self.asks else None

    def truth(self) -> tuple[list[Level], list[Level]]:
        """(bids best=highest first, asks best=lowest first) of (price, amount) Decimals."""
        tick, scale = self.tick_units, self.scale
        bids = [
            (decimal_of(p * tick, scale), decimal_of(a, AMOUNT_SCALE))
            for p, a in reversed(self.bids.items())
        ]
        asks = [
            (decimal_of(p * tick, scale), decimal_of(a, AMOUNT_SCALE)) for p, a in self.asks.items()
        ]
        return bids, asks

    def units(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``truth`` as integers: (price * 10**scale, amount * 10**8), best first."""
        tick = self.tick_units
        bids = [(p * tick, a) for p, a in reversed(self.bids.items())]
        asks = [(p * tick, a) for p, a in self.asks.items()]
        return bids, asks

    def size(self, rng: random.Random) -> int:
        """A level size in 1e-8 units, with 0 to 8 significant decimals like real orders."""
        units = max(1, int(self.typical_units * rng.lognormvariate(0.0, 1.0)))
        return round_size(units, rng)

    def seed(self, rng: random.Random, levels: int) -> None:
        """``levels`` levels a side around the reference price."""
        mid = self.spec.reference_ticks
        bid = mid - rng.randint(0, 1)
        ask = bid + rng.randint(1, 3)
        for _ in range(levels):
            if bid >= 1:
                self.bids[bid] = self.size(rng)
            self.asks[ask] = self.size(rng)
            bid -= rng.randint(1, 3)
            ask += rng.randint(1, 3)

    def new_price(self, rng: random.Random, buy: bool) -> int | None:
        """A free price on this side that keeps the book uncrossed, or None."""
        bid, ask = self.best_bid(), self.best_ask()
        book = self.bids if buy else self.asks
        span = 2 * len(book) + 10
        for _ in range(8):
            if bid is not None and ask is not None and ask - bid > 1 and rng.random() < 0.15:
                price = rng.randint(bid + 1, ask - 1)  # inside the spread: moves the mid
            elif buy:
                anchor = bid if bid is not None else (ask - 1 if ask is not None else 0)
                if anchor < 1:
                    anchor = self.spec.reference_ticks
                price = anchor - rng.randint(0, span)
                if ask is not None:
                    price = min(price, ask - 1)
            else:
                anchor = ask if ask is not None else (bid + 1 if bid is not None else 0)
                if anchor < 1:
                    anchor = self.spec.reference_ticks
                price = anchor + rng.randint(0, span)
                if bid is not None:
                    price = max(price, bid + 1)
            if price >= 1 and price not in book:
                return price
        return None


def round_size(units: int, rng: random.Random) -> int:
    """``units`` rounded down to a random lot (at least one lot)."""
    step = rng.choice(_SIZE_STEPS)
    return max(step, units - units % step)
