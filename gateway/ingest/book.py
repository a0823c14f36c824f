"""One market's order book: price levels keyed by exact ``Decimal`` value.

Both sides are ``SortedDict``s in ascending price order: the best ask is the
first key, the best bid the last, both O(1) (sortedcontainers special-cases
indexes 0 and -1), and a depth-k slice is O(log n + k) even at thousands of
levels. Keys are compared by value, so ``19958.0`` and ``19958`` are one level
even if a caller forgot to canonicalize.

The book holds no history and does no I/O; the session feeds it and the hub
reads it (``bids``/``asks``) to build a late joiner's snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from sortedcontainers import SortedDict

from gateway.contract.records import Level, Side

__all__ = ["OrderBook"]


class OrderBook:
    __slots__ = ("_ask_prices", "_asks", "_bid_prices", "_bids", "has_snapshot", "market")

    def __init__(self, market: str) -> None:
        self.market = market
        # False until the first ``replace``: an empty book and an unknown book
        # must not look alike to a late joiner.
        self.has_snapshot = False
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()
        # Live key views, kept because indexing one is the cheapest public way
        # to the best price (peekitem also fetches the amount).
        self._bid_prices = self._bids.keys()
        self._ask_prices = self._asks.keys()

    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Make the book exactly these levels. Zero amounts are no level; for a
        price given twice the last amount wins. Negative amounts raise
        ``ValueError`` and leave the book unchanged."""
        new_bids = _side_from(bids)
        new_asks = _side_from(asks)
        # Mutate in place: the hub holds a reference to these objects' owner
        # and must see the new levels, never a stale pair of dicts.
        self._bids.clear()
        self._bids.update(new_bids)
        self._asks.clear()
        self._asks.update(new_asks)
        self.has_snapshot = True

    def apply(self, side: Side, price: Decimal, amount: Decimal) -> None:
        """Set one level to an absolute size; 0 removes it (a missing level is a no-op)."""
        levels = self._bids if side == "bid" else self._asks
        if amount:
            if amount < 0:
                raise ValueError(f"negative amount {amount} at {price} in {self.market}")
            levels[price] = amount
        else:
            levels.pop(price, None)

    def best_bid(self) -> Level | None:
        return self._bids.peekitem(-1) if self._bids else None

    def best_ask(self) -> Level | None:
        return self._asks.peekitem(0) if self._asks else None

    def is_crossed(self) -> bool:
        """Best bid >= best ask: with no sequence numbers, the sign of a missed update."""
        if not self._bids or not self._asks:
            return False
        return bool(self._bid_prices[-1] >= self._ask_prices[0])

    def crosses(self, side: Side, price: Decimal) -> bool:
        """Whether a level at ``price`` on ``side`` reaches the other side's best.

        For a book that is not crossed, after ``apply(side, price, amount)``
        with a non-zero amount this equals ``is_crossed()`` at half the cost,
        and a removal can never cross it.
        """
        if side == "bid":
            return bool(self._asks) and bool(price >= self._ask_prices[0])
        return bool(self._bids) and bool(price <= self._bid_prices[-1])

    def bids(self, depth: int | None = None) -> list[Level]:
        """Bid levels, best (highest price) first, at most ``depth`` of them."""
        items = self._bids.items()
        if depth is None:
            chosen = items[:]
        elif depth <= 0:
            return []
        else:
            chosen = items[-depth:]
        chosen.reverse()
        return chosen  # type: ignore[no-any-return]

    def asks(self, depth: int | None = None) -> list[Level]:
        """Ask levels, best (lowest price) first, at most ``depth`` of them."""
        items = self._asks.items()
        if depth is None:
            return items[:]  # type: ignore[no-any-return]
        if depth <= 0:
            return []
        return items[:depth]  # type: ignore[no-any-return]

    def bid_count(self) -> int:
        return len(self._bids)

    def ask_count(self) -> int:
        return len(self._asks)

    def __len__(self) -> int:
        """Number of levels on both sides."""
        return len(self._bids) + len(self._asks)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.market!r}, bids={len(self._bids)}, asks={len(self._asks)}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()})"
        )


def _side_from(levels: Iterable[Level]) -> dict[Decimal, Decimal]:
    side: dict[Decimal, Decimal] = {}
    for price, amount in levels:
        if amount:
            if amount < 0:
                raise ValueError(f"negative amount {amount} at {price}")
            side[price] = amount
        else:
            # A zero after a non-zero for one price removes it, like an update would.
            side.pop(price, None)
    return side
