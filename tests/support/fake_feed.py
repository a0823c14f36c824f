"""A synthetic upstream for fan-out tests: ``FakeFeed`` plays normalizer + upstream task.

It keeps sequence numbers and a real ``OrderBook``, mutates the book and then publishes, like
``FeedNormalizer.receive`` followed by ``hub.publish``. Subscribers' messages are checked with
``bench.downstream_model.Model``.
"""

from __future__ import annotations

import random
from decimal import Decimal

from gateway.contract.records import (
    BookSnapshot,
    BookUpdate,
    Level,
    Price,
    Record,
    Side,
    Status,
    StatusState,
    Trade,
)  # fmt: skip
from gateway.fanout.hub import Hub
from gateway.ingest.book import OrderBook
from gateway.ingest.decimals import parse as dec

EPOCH = "1700000000000000000"


class FakeFeed:
    def __init__(
        self, hub: Hub, market: str = "BTCUSD", *, seed: int = 1, register: bool = True
    ) -> None:
        self.hub = hub
        self.market = market
        self.book = OrderBook(market)
        self.rng = random.Random(seed)
        self.seqs: dict[str, int] = {}
        self.time = 1_000
        self.trade_no = 0
        if register:
            hub.register_book(self.stream("book"), self.book)
        # As the app does with FeedNormalizer.streams(): subscribers may name them at once.
        hub.declare_stream(self.stream("trades"))
        hub.declare_stream(self.stream("price"))

    def stream(self, kind: str) -> str:
        return f"{kind}.{self.market}"

    def _next(self, stream: str) -> tuple[int, int]:
        self.seqs[stream] = self.seqs.get(stream, 0) + 1
        self.time += 1_000
        return self.seqs[stream], self.time

    def snapshot(self, levels: int = 5, reason: str = "initial") -> BookSnapshot:
        mid = 20000 + self.rng.randrange(100)
        bids: list[Level] = [(dec(str(mid - i)), dec(f"0.{i + 1}")) for i in range(levels)]
        asks: list[Level] = [(dec(str(mid + 1 + i)), dec(f"1.{i}")) for i in range(levels)]
        self.book.replace(bids, asks)
        seq, now = self._next(self.stream("book"))
        return BookSnapshot(
            stream=self.stream("book"), seq=seq, epoch=self.hub.epoch, receive_time=str(now),
            market=self.market, bids=bids, asks=asks, resync=reason != "initial", reason=reason,
        )  # fmt: skip

    def update(self) -> BookUpdate:
        side: Side = self.rng.choice(("bid", "ask"))
        best = self.book.best_bid() if side == "bid" else self.book.best_ask()
        base = best[0] if best else Decimal(20000)
        offset = self.rng.randrange(6)
        price = base - offset if side == "bid" else base + offset
        amount = (
            dec("0") if self.rng.random() < 0.3 else dec(f"0.000000{self.rng.randrange(1, 99)}")
        )
        self.book.apply(side, price, amount)
        seq, now = self._next(self.stream("book"))
        return BookUpdate(
            stream=self.stream("book"), seq=seq, epoch=self.hub.epoch, receive_time=str(now),
            market=self.market, side=side, price=price, amount=amount,
        )  # fmt: skip

    def trade(self) -> Trade:
        self.trade_no += 1
        seq, now = self._next(self.stream("trades"))
        return Trade(
            stream=self.stream("trades"), seq=seq, epoch=self.hub.epoch, receive_time=str(now),
            market=self.market, price=dec("20000.25"), amount=dec("0.5"),
            match_number=f"M{self.trade_no:011d}", exchange_time=str(now - 500),
        )  # fmt: skip

    def price(self, value: str = "1.0001") -> Price:
        seq, now = self._next(self.stream("price"))
        return Price(
            stream=self.stream("price"), seq=seq, epoch=self.hub.epoch, receive_time=str(now),
            market=self.market, price=dec(value), exchange_time=str(now),
        )  # fmt: skip

    def status(self, state: StatusState, kinds: tuple[str, ...] = ("book",)) -> list[Status]:
        out = []
        for kind in kinds:
            seq, now = self._next(self.stream(kind))
            out.append(
                Status(
                    stream=self.stream(kind),
                    seq=seq,
                    epoch=self.hub.epoch,
                    receive_time=str(now),
                    feed="marketdata",
                    state=state,
                    reason="test",
                )
            )
        return out

    def publish(self, *records: Record) -> None:
        self.hub.publish(list(records))

    def book_levels(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        return dict(self.book.bids()), dict(self.book.asks())
