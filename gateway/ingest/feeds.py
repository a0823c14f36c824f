"""Feed identity: which upstream path a feed reads and which streams it produces."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

FeedKind = Literal["executions", "book", "stablecoin"]
StreamKind = Literal["trades", "book", "price"]

PRODUCTION_URL = "wss://ws.paxos.com"
SANDBOX_URL = "wss://ws.sandbox.paxos.com"

STREAM_KIND_OF_FEED: dict[FeedKind, StreamKind] = {
    "executions": "trades",
    "book": "book",
    "stablecoin": "price",
}

_MARKET = re.compile(r"^[A-Z0-9]{2,20}$")


class FeedPathError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One upstream connection. ``market`` is None for an all-markets path."""

    name: str
    url: str
    kind: FeedKind
    market: str | None

    @property
    def stream_kind(self) -> StreamKind:
        return STREAM_KIND_OF_FEED[self.kind]

    def stream_for(self, market: str) -> str:
        return stream_name(self.stream_kind, market)

    def covers(self, market: str) -> bool:
        return self.market is None or self.market == market


def stream_name(kind: StreamKind, market: str) -> str:
    return f"{kind}.{market}"


def parse_feed_path(path: str) -> tuple[FeedKind, str | None]:
    """Map a Paxos URL path to (kind, market); raise FeedPathError otherwise."""
    parts = [p for p in path.split("/") if p]
    match parts:
        case ["executiondata"]:
            return "executions", None
        case ["executiondata", market]:
            return "executions", _market(market, path)
        case ["marketdata", "stablecoin"]:
            return "stablecoin", None
        case ["marketdata", "stablecoin", market]:
            return "stablecoin", _market(market, path)
        case ["marketdata"]:
            return "book", None
        case ["marketdata", market]:
            return "book", _market(market, path)
    raise FeedPathError(
        f"{path!r} is not a Paxos feed path; expected /executiondata[/MARKET], "
        "/marketdata[/MARKET] or /marketdata/stablecoin[/MARKET]"
    )


def _market(market: str, path: str) -> str:
    if not _MARKET.match(market):
        raise FeedPathError(f"{path!r}: market {market!r} must be upper-case letters and digits")
    return market


def feed_from_url(url: str, name: str | None = None) -> FeedSpec:
    split = urlsplit(url)
    if split.scheme not in ("ws", "wss"):
        raise FeedPathError(f"{url!r}: scheme must be ws or wss")
    if not split.hostname:
        raise FeedPathError(f"{url!r}: no host")
    kind, market = parse_feed_path(split.path)
    return FeedSpec(name=name or split.path.strip("/"), url=url, kind=kind, market=market)
