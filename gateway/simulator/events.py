"""What the simulated market sends, as values: a book level's change, an execution, a stablecoin
price; each with its exact wire text, built once when the change happens (sans-IO).

Prices and amounts are integer units inside (price * 10**scale, amount * 10**8), so the hot path
never builds a ``Decimal``; the properties convert on demand for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal

from gateway.simulator.markets import AMOUNT_SCALE, STABLECOIN_SCALE

__all__ = [
    "Event", "Execution", "Feed", "Level", "LevelUpdate", "MarketStatus", "NumberStyle",
    "PriceTick", "Side", "decimal_of",
]  # fmt: skip

Side = Literal["BUY", "SELL"]
Feed = Literal["book", "executions", "stablecoin"]
NumberStyle = Literal["trim", "pad", "mixed"]
MarketStatus = Literal["open", "halted", "delisted"]
Level = tuple[Decimal, Decimal]


def decimal_of(units: int, scale: int) -> Decimal:
    """``units * 10**-scale``, exactly."""
    return Decimal(units).scaleb(-scale)


class _PriceAndAmount:
    """``price`` and ``amount`` as Decimals, from the integer units (on demand, for tests)."""

    __slots__ = ()
    price_units: int
    scale: int
    amount_units: int

    @property
    def price(self) -> Decimal:
        return decimal_of(self.price_units, self.scale)

    @property
    def amount(self) -> Decimal:
        return decimal_of(self.amount_units, AMOUNT_SCALE)


@dataclass(frozen=True, slots=True)
class LevelUpdate(_PriceAndAmount):
    """One order-book level's new absolute size (``amount_units == 0`` removes it)."""

    FEED: ClassVar[Feed] = "book"
    market: str
    side: Side
    price_units: int  # price * 10**scale
    scale: int
    amount_units: int  # amount * 10**8
    text: str


@dataclass(frozen=True, slots=True)
class Execution(_PriceAndAmount):
    """One execution as sent; ``executed_at_ns`` is the time the text says (truncated)."""

    FEED: ClassVar[Feed] = "executions"
    market: str
    price_units: int
    scale: int
    amount_units: int
    executed_at_ns: int
    executed_at: str
    match_number: str
    text: str

    @property
    def exchange_key(self) -> tuple[int, str]:
        """(``executed_at_ns``, ``match_number``): the order a client that sorts by the
        message fields sees. Not generation order: one batch shares a clock reading, and a
        stamp cut to fewer digits can read earlier than the execution before it."""
        return self.executed_at_ns, self.match_number


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One stablecoin index price message."""

    FEED: ClassVar[Feed] = "stablecoin"
    market: str
    price_units: int  # price * 10**4
    timestamp_ns: int
    timestamp: str
    text: str

    @property
    def price(self) -> Decimal:
        return decimal_of(self.price_units, STABLECOIN_SCALE)


Event = LevelUpdate | Execution
