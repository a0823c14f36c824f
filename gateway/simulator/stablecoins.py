"""The stablecoin index prices: a walk around 1.0000 in steps of 0.0001 (sans-IO).

A random generator of its own (seeded from the simulator's seed), so the stablecoin ticks never
change the book and execution events, and the other way round.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.simulator import formatting
from gateway.simulator.events import PriceTick
from gateway.simulator.markets import STABLECOIN_SCALE

__all__ = ["StablecoinWalk"]

_STABLE_PAR = 10**STABLECOIN_SCALE


class StablecoinWalk:
    def __init__(
        self,
        stablecoins: Sequence[str],
        *,
        seed: int,
        timestamps: formatting.TimestampFormatter,
        timestamp_digits: int | None,
    ) -> None:
        """``timestamp_digits`` None: a random number of fractional digits per timestamp."""
        self._rng = random.Random(f"paxos-sim-stablecoin:{seed}")
        self._timestamps = timestamps
        self._timestamp_digits = timestamp_digits
        self._units = dict.fromkeys(stablecoins, _STABLE_PAR)
        self._last: dict[str, PriceTick] = {}

    @property
    def stablecoins(self) -> tuple[str, ...]:
        return tuple(self._units)

    def last_price(self, stablecoin: str) -> PriceTick:
        return self._last[stablecoin]

    def tick(self, now_ns: int) -> list[PriceTick]:
        """One index price per stablecoin."""
        rng = self._rng
        ticks: list[PriceTick] = []
        for market, units in self._units.items():
            if rng.random() < 0.3:
                drift = -1 if units > _STABLE_PAR else 1 if units < _STABLE_PAR else 0
                units += rng.choice((-1, 1, drift, drift))
                units = min(_STABLE_PAR + 20, max(_STABLE_PAR - 20, units))
                self._units[market] = units
            digits = rng.randint(0, 9) if self._timestamp_digits is None else self._timestamp_digits
            stamp = self._timestamps.format(now_ns, digits)
            price = formatting.format_units(units, STABLECOIN_SCALE, pad=True)
            tick = PriceTick(
                market=market,
                price_units=units,
                timestamp_ns=formatting.truncate_ns(now_ns, digits),
                timestamp=stamp,
                text=formatting.price_text(market, price, stamp),
            )
            self._last[market] = tick
            ticks.append(tick)
        return ticks
