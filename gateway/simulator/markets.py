"""The markets the simulator trades: symbol, tick and where the price walk starts.

Prices are kept as integer tick counts and amounts as integer units of 1e-8, so the
per-event path never touches ``Decimal``; a ``MarketSpec`` carries what is needed to
turn those integers back into exact decimal strings (``scale``, ``tick_units``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

AMOUNT_SCALE = 8  # Paxos amounts go to 8 decimals
STABLECOIN_SCALE = 4  # stablecoin prices are fixed at 4 decimals ("1.0000")

_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


class MarketError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """An order-book market. ``reference_price`` is where the random walk starts."""

    symbol: str
    tick: Decimal
    reference_price: Decimal

    def __post_init__(self) -> None:
        if not _SYMBOL.match(self.symbol):
            raise MarketError(f"market {self.symbol!r}: upper-case letters and digits only")
        if not self.tick.is_finite() or self.tick <= 0:
            raise MarketError(f"market {self.symbol}: tick must be a positive decimal")
        if self.reference_price < self.tick * 10:
            raise MarketError(f"market {self.symbol}: reference price must be >= 10 ticks")

    @property
    def scale(self) -> int:
        """Decimal places of the tick (0.25 -> 2): prices are formatted at this scale."""
        exponent = self.tick.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        return max(0, -exponent)

    @property
    def tick_units(self) -> int:
        """The tick as an integer at ``scale`` (0.25 -> 25)."""
        return int(self.tick.scaleb(self.scale))

    @property
    def reference_ticks(self) -> int:
        return int(self.reference_price / self.tick)


DEFAULT_MARKETS: dict[str, MarketSpec] = {
    spec.symbol: spec
    for spec in (
        MarketSpec("BTCUSD", Decimal("0.25"), Decimal("65000")),
        MarketSpec("ETHUSD", Decimal("0.05"), Decimal("3200")),
        MarketSpec("PAXGUSD", Decimal("0.01"), Decimal("2400")),
        MarketSpec("BCHUSD", Decimal("0.05"), Decimal("380")),
        MarketSpec("LTCUSD", Decimal("0.01"), Decimal("80")),
        MarketSpec("LINKUSD", Decimal("0.01"), Decimal("14")),
        MarketSpec("AAVEUSD", Decimal("0.01"), Decimal("150")),
        MarketSpec("UNIUSD", Decimal("0.01"), Decimal("8")),
    )
}

DEFAULT_STABLECOINS: tuple[str, ...] = ("USDCUSD",)


def resolve_markets(markets: object) -> tuple[MarketSpec, ...]:
    """Names (from ``DEFAULT_MARKETS``) or ``MarketSpec``s -> specs; unique, at least one."""
    if not isinstance(markets, (list, tuple)):
        raise MarketError("markets must be a list of names or MarketSpec")
    specs: list[MarketSpec] = []
    for item in markets:
        if isinstance(item, MarketSpec):
            specs.append(item)
        elif isinstance(item, str) and item in DEFAULT_MARKETS:
            specs.append(DEFAULT_MARKETS[item])
        else:
            known = ", ".join(DEFAULT_MARKETS)
            raise MarketError(f"unknown market {item!r}; known: {known} (or pass a MarketSpec)")
    if not specs:
        raise MarketError("at least one market is needed")
    symbols = [s.symbol for s in specs]
    if len(set(symbols)) != len(symbols):
        raise MarketError(f"duplicate markets in {symbols}")
    return tuple(specs)


def check_stablecoins(stablecoins: object) -> tuple[str, ...]:
    if not isinstance(stablecoins, (list, tuple)):
        raise MarketError("stablecoins must be a list of names")
    for name in stablecoins:
        if not isinstance(name, str) or not _SYMBOL.match(name):
            raise MarketError(f"stablecoin {name!r}: upper-case letters and digits only")
    if len(set(stablecoins)) != len(stablecoins):
        raise MarketError(f"duplicate stablecoins in {list(stablecoins)}")
    return tuple(stablecoins)
