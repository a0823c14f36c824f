"""Paxos wire text, built by hand: compact JSON, one object per frame, every value a string.

Independent of the gateway's own encoders on purpose (a shared bug would cancel out).
Market symbols and sides are ``[A-Z0-9]`` only (checked in ``markets``), and numbers and
timestamps are produced here, so no JSON escaping is ever needed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

FinalSnapshotStyle = Literal["bool", "string", "missing"]
"""How ``final_snapshot`` is written: ``true``/``false``, ``"true"``/``"false"``, or left out
(only on the last fragment: a non-final fragment must say ``false`` somehow)."""

NOT_FOUND = '{"error":"Not Found"}'

_POW10: tuple[int, ...] = tuple(10**i for i in range(19))


def format_units(units: int, scale: int, *, pad: bool = False) -> str:
    """``units * 10**-scale`` as a decimal string.

    Trimmed (``19996``, ``19994.5``, ``0``) as current Paxos feeds send it, or padded to
    ``scale`` decimals (``9248.00``) as older feeds and REST do.
    """
    if units < 0:
        raise ValueError(f"negative quantity {units}")
    if scale == 0:
        return str(units)
    whole, frac = divmod(units, _POW10[scale])
    if pad:
        return f"{whole}.{frac:0{scale}d}"
    if frac == 0:
        return str(whole)
    return f"{whole}.{f'{frac:0{scale}d}'.rstrip('0')}"


def truncate_ns(ns: int, digits: int) -> int:
    """Drop the sub-second digits beyond ``digits`` (0..9): the time a formatted stamp says."""
    step = _POW10[9 - digits]
    return ns - ns % step


class TimestampFormatter:
    """RFC 3339 UTC with trailing fractional zeros trimmed, so 0 to 9 digits occur.

    Caches the date-time prefix of the last second: consecutive events share it.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, ns: int, digits: int = 9) -> str:
        """``ns`` is cut to ``digits`` fractional digits first (see ``truncate_ns``)."""
        if not 0 <= digits <= 9:
            raise ValueError(f"digits must be 0..9, got {digits}")
        second, frac = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        frac //= _POW10[9 - digits]
        if frac == 0:
            return f"{self._prefix}Z"
        return f"{self._prefix}.{f'{frac:0{digits}d}'.rstrip('0')}Z"


def update_text(market: str, side: str, price: str, amount: str) -> str:
    return (
        f'{{"type":"UPDATE","market":"{market}","side":"{side}",'
        f'"price":"{price}","amount":"{amount}"}}'
    )


def execution_text(market: str, price: str, amount: str, executed_at: str, match: str) -> str:
    return (
        f'{{"market":"{market}","price":"{price}","amount":"{amount}",'
        f'"executed_at":"{executed_at}","match_number":"{match}"}}'
    )


def price_text(market: str, price: str, timestamp: str) -> str:
    return f'{{"market":"{market}","price":"{price}","timestamp":"{timestamp}"}}'


def _levels(levels: Sequence[tuple[str, str]]) -> str:
    return ",".join([f'{{"price":"{p}","amount":"{a}"}}' for p, a in levels])


def snapshot_text(
    market: str,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    final: bool,
    style: FinalSnapshotStyle,
) -> str:
    levels = f'"bids":[{_levels(bids)}],"asks":[{_levels(asks)}]'
    head = f'{{"type":"SNAPSHOT","market":"{market}",{levels}'
    if style == "missing" and final:
        return head + "}"
    flag = "true" if final else "false"
    if style == "string":
        flag = f'"{flag}"'
    return f'{head},"final_snapshot":{flag}}}'
