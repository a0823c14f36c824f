"""Paxos-format frames for the mirror paths (sans-IO).

An existing Paxos client becomes a local client by changing only its URL: ``/executiondata``,
``/marketdata``, ``/marketdata/stablecoin`` (each optionally ``/{market}``) serve the upstream's
own message format, built from the gateway's normalized records and books.

The translation is a pure function of one record, so the hub encodes each record once for all
mirror subscribers, exactly like its JSON and MessagePack encodings. What a Paxos client needs
from state is supplied by the hub, not by this module: on connect a SNAPSHOT built from the
gateway's book (or the last execution / last price), then the stream's records. A book resync
(``BookSnapshot`` published into the stream after an upstream reconnect or a crossed book) becomes
a fresh SNAPSHOT that replaces the client's book — what Paxos itself sends after a reconnect.
``Status`` records have no Paxos form (Paxos has no status messages) and are not sent.

Format (PROTOCOL.md): compact JSON, every value a string except ``final_snapshot``; prices and
amounts trimmed of trailing zeros, the stablecoin price fixed at 4 decimals, times RFC 3339 UTC
with the fraction trimmed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

import msgspec

from gateway.contract.records import BookSnapshot, BookUpdate, Level, Price, Record, Trade
from gateway.ingest import feeds
from gateway.ingest.decimals import to_str
from gateway.ingest.timestamps import format_ns

__all__ = [
    "MirrorRoute",
    "encode_record",
    "execution_frame",
    "mirror_route",
    "price_frame",
    "snapshot_frame",
    "update_frame",
]


class _Level(msgspec.Struct, array_like=False):
    price: str
    amount: str


class _Snapshot(msgspec.Struct, tag_field="type", tag="SNAPSHOT"):
    market: str
    bids: list[_Level]
    asks: list[_Level]
    final_snapshot: bool


class _Update(msgspec.Struct, tag_field="type", tag="UPDATE"):
    market: str
    side: Literal["BUY", "SELL"]
    price: str
    amount: str


class _Execution(msgspec.Struct):
    market: str
    price: str
    amount: str
    executed_at: str
    match_number: str


class _Price(msgspec.Struct):
    market: str
    price: str
    timestamp: str


_encoder: Final = msgspec.json.Encoder()
_SIDE: Final[dict[str, Literal["BUY", "SELL"]]] = {"bid": "BUY", "ask": "SELL"}
_FOUR_PLACES: Final = Decimal("0.0001")


def _levels(levels: Iterable[Level]) -> list[_Level]:
    return [_Level(to_str(price), to_str(amount)) for price, amount in levels]


def snapshot_frame(market: str, bids: Iterable[Level], asks: Iterable[Level]) -> str:
    """A complete book as one SNAPSHOT (bids best first, asks best first)."""
    msg = _Snapshot(market, _levels(bids), _levels(asks), True)
    return _encoder.encode(msg).decode()


def update_frame(update: BookUpdate) -> str:
    msg = _Update(update.market, _SIDE[update.side], to_str(update.price), to_str(update.amount))
    return _encoder.encode(msg).decode()


def execution_frame(trade: Trade) -> str:
    msg = _Execution(
        trade.market,
        to_str(trade.price),
        to_str(trade.amount),
        format_ns(int(trade.exchange_time)),
        trade.match_number,
    )
    return _encoder.encode(msg).decode()


def price_frame(price: Price) -> str:
    # Paxos keeps exactly four decimals ("1.0000"); quantize is exact for 4-decimal prices.
    text = format(price.price.quantize(_FOUR_PLACES), "f")
    return _encoder.encode(_Price(price.market, text, format_ns(int(price.exchange_time)))).decode()


def encode_record(record: Record | object) -> str | None:
    """The Paxos frame for one record, or None when Paxos has no such message (``Status``,
    or anything that is not a record)."""
    match record:
        case BookUpdate():
            return update_frame(record)
        case Trade():
            return execution_frame(record)
        case BookSnapshot():
            return snapshot_frame(record.market, record.bids, record.asks)
        case Price():
            return price_frame(record)
    return None


@dataclass(frozen=True, slots=True)
class MirrorRoute:
    """What a mirror path serves: the gateway stream (or ``kind.*`` pattern) behind it."""

    kind: feeds.FeedKind
    market: str | None

    @property
    def stream(self) -> str:
        return f"{feeds.STREAM_KIND_OF_FEED[self.kind]}.{self.market or '*'}"


def mirror_route(path: str) -> MirrorRoute | None:
    """Map a Paxos feed path to its route; None if the path is not one (or a bad market)."""
    try:
        kind, market = feeds.parse_feed_path(path)
    except feeds.FeedPathError:
        return None
    return MirrorRoute(kind, market)
