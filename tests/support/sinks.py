"""A sink for ``run_feed`` in tests that only look at what was published (the gateway's sink is
the hub)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.contract.records import Record
from gateway.ingest.book import OrderBook


class CallbackSink:
    """Hands every published batch to ``on_publish``; books are not kept."""

    def __init__(self, on_publish: Callable[[list[Record]], None]) -> None:
        self._on_publish = on_publish

    def register_book(self, stream: str, book: OrderBook) -> None:
        pass

    def publish(self, records: Sequence[Record]) -> None:
        self._on_publish(list(records))
