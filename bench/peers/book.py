"""The book a Python team would keep beside a broadcast server: dicts of decimal strings."""

from __future__ import annotations

import json
from decimal import Decimal


class DictBook:
    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq = 0
        self.stream = ""
        self.market = ""

    def feed(self, message: bytes) -> None:
        """Keep the book from the records relayed (only book records are looked at)."""
        if message.startswith(b'{"type":"book_snapshot"'):
            record = json.loads(message)
            self.bids = {p: a for p, a in record["bids"]}
            self.asks = {p: a for p, a in record["asks"]}
            self.seq, self.stream, self.market = record["seq"], record["stream"], record["market"]
        elif message.startswith(b'{"type":"book_update"'):
            record = json.loads(message)
            side = self.bids if record["side"] == "bid" else self.asks
            if Decimal(record["amount"]) == 0:
                side.pop(record["price"], None)
            else:
                side[record["price"]] = record["amount"]
            self.seq = record["seq"]

    def snapshot(self) -> str:
        """A late joiner's snapshot, in the gateway's record format."""
        bids = sorted(self.bids.items(), key=lambda level: Decimal(level[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda level: Decimal(level[0]))
        return json.dumps(
            {
                "type": "book_snapshot",
                "stream": self.stream,
                "seq": self.seq,
                "market": self.market,
                "bids": bids,
                "asks": asks,
                "resync": False,
                "reason": "subscribe",
            },
            separators=(",", ":"),
        )
