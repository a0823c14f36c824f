"""Markets come and go (sans-IO): Paxos's REST market list → which markets changed state.

Paxos's WebSocket feeds say nothing when a market halts or is delisted: an all-markets
connection simply hears nothing more of it, a new connection does not send its book. A
gateway that kept waiting for that book would never be ready again, and its pods would leave
the Service. So the I/O edge (``io/market_watch.py``) fetches ``GET /v2/markets`` every
``backfill.markets_refresh`` seconds and hands it to ``MarketDirectory.update``, which says
what changed since the last list:

* a market no longer listed: **delisted** (``listed`` false): its streams are retired;
* a listed market ``UNAVAILABLE`` to buy or sell: **halted**; its streams stay, quiet;
* a market available again, or listed anew: **available**.

The first list only reports markets that are not available (what was available before the
gateway knew is no news). Each change becomes a ``market_unavailable`` / ``market_available``
status of every feed that knows the market (``FeedNormalizer.market_changed``), and those
markets stop counting for readiness while unavailable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.ingest.paxos_rest import MarketInfo

__all__ = ["MarketChange", "MarketDirectory"]


@dataclass(frozen=True, slots=True)
class MarketChange:
    market: str
    available: bool
    listed: bool
    reason: str


class MarketDirectory:
    def __init__(self) -> None:
        # market -> (available, reason); None until the first list came in.
        self._known: dict[str, tuple[bool, str]] | None = None

    @property
    def listed(self) -> frozenset[str]:
        return frozenset(self._known or ())

    def update(self, markets: Iterable[MarketInfo]) -> list[MarketChange]:
        """The markets Paxos lists now → the changes since the previous list, sorted."""
        now = {m.market: (m.available, m.reason) for m in markets}
        before, self._known = self._known, now
        changes: list[MarketChange] = []
        for market in sorted(set(now) | set(before or ())):
            state = now.get(market)
            if state is None:
                changes.append(
                    MarketChange(market, False, False, f"{market}: no longer listed by Paxos")
                )
                continue
            available, reason = state
            previous = None if before is None else before.get(market)
            if previous == state or (previous is None and available and before is None):
                continue
            if not available:
                changes.append(MarketChange(market, False, True, f"{market}: halted ({reason})"))
            elif previous is None:
                changes.append(MarketChange(market, True, True, f"{market}: newly listed"))
            else:
                changes.append(MarketChange(market, True, True, f"{market}: trading again"))
        return changes
