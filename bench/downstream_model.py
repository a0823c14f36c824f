"""A checking subscriber model: what a careful client of the gateway does with its messages.

``Model.feed(msg)`` takes each decoded JSON message: it follows ``subscribed`` / ``resumed``
answers, applies book snapshots and updates, and records every sequence problem instead of
raising, so a caller can assert there were none. Pure (no I/O, nothing of the gateway): the
soak benchmark and the test suite both check subscribers with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

RESPONSE_TYPES = {
    "hello", "subscribed", "unsubscribed", "resumed", "resume_failed", "pong", "streams", "error",
}  # fmt: skip


@dataclass
class Model:
    """A checking client. ``feed(msg)`` for each decoded message."""

    expected: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)  # last seq applied, per stream
    initial_head: dict[str, int] = field(default_factory=dict)
    last_initial: dict[str, int] = field(default_factory=dict)
    bids: dict[str, dict[Decimal, Decimal]] = field(default_factory=dict)
    asks: dict[str, dict[Decimal, Decimal]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind in RESPONSE_TYPES:
            self.responses.append(msg)
            if kind == "error":
                self.problems.append(f"error answer: {msg}")
            elif kind == "subscribed":
                for state in msg["streams"]:
                    self.initial_head[state["stream"]] = state["seq"]
                    self.expected[state["stream"]] = state["seq"] + 1
            elif kind == "resumed":
                held = self.held.get(msg["stream"])
                if held is not None and held + 1 != msg["from_seq"]:
                    self.problems.append(f"resumed from {msg['from_seq']}, holding {held}")
                self.expected[msg["stream"]] = msg["from_seq"]
                self.initial_head.pop(msg["stream"], None)
            return
        self.records.append(msg)
        stream, seq = msg["stream"], msg["seq"]
        self.held[stream] = seq
        if kind == "book_snapshot":
            self.snapshots.append(msg)
            self.bids[stream] = {Decimal(p): Decimal(a) for p, a in msg["bids"]}
            self.asks[stream] = {Decimal(p): Decimal(a) for p, a in msg["asks"]}
            self.expected[stream] = seq + 1
            self.initial_head.pop(stream, None)
            return
        head = self.initial_head.get(stream)
        if head is not None and seq <= head:
            if seq <= self.last_initial.get(stream, 0):
                self.problems.append(f"{stream}: initial values out of order at {seq}")
            self.last_initial[stream] = seq
            return
        self.initial_head.pop(stream, None)
        want = self.expected.get(stream)
        if want is not None and seq != want:
            self.problems.append(f"{stream}: expected seq {want}, got {seq}")
        self.expected[stream] = seq + 1
        if kind == "book_update":
            side = self.bids if msg["side"] == "bid" else self.asks
            levels = side.setdefault(stream, {})
            price, amount = Decimal(msg["price"]), Decimal(msg["amount"])
            if amount:
                levels[price] = amount
            else:
                levels.pop(price, None)

    def book(self, stream: str) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        return self.bids.get(stream, {}), self.asks.get(stream, {})

    def seqs(self, stream: str, kind: str | None = None) -> list[int]:
        return [
            r["seq"] for r in self.records
            if r["stream"] == stream and (kind is None or r["type"] == kind)
        ]  # fmt: skip
