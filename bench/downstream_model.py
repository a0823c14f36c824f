"""A checking subscriber model: what a careful client of the gateway does with its messages.

``Model.feed(msg)`` takes each decoded JSON message: it follows ``subscribed`` / ``resumed``
answers, applies book snapshots and updates, and records every sequence problem instead of
raising, so a caller can assert there were none. Pure (no I/O, nothing of the gateway): the
soak benchmark and the test suite both check subscribers with it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# Trades remembered per model for the duplicate check when records are not kept: a duplicate
# comes from a replay after a reconnect, so it is among the recent ones (the soak's gateway
# remembers 4,096 executions per feed for its own dedup).
RECENT_TRADES = 8192

RESPONSE_TYPES = {
    "hello", "subscribed", "unsubscribed", "resumed", "resume_failed", "pong", "streams", "error",
}  # fmt: skip


@dataclass
class Model:
    """A checking client. ``feed(msg)`` for each decoded message.

    ``keep_records=False`` keeps counts, positions and the recent trades instead of every record,
    snapshot and answer: a soak's 300 subscribers over 30 minutes otherwise hold gigabytes
    (measured: two worker processes at 12 GB each after 23 minutes, one killed by the OOM killer).
    """

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
    keep_records: bool = True
    record_count: int = 0
    positions: dict[str, tuple[int | str, int]] = field(default_factory=dict)  # (epoch, seq)
    answers: Counter[str] = field(default_factory=Counter)  # response type -> count
    snapshot_reasons: Counter[str] = field(default_factory=Counter)
    duplicate_trades: list[str] = field(default_factory=list)
    _recent_trades: OrderedDict[str, tuple[str, int | str, int]] = field(
        default_factory=OrderedDict
    )

    def feed(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind in RESPONSE_TYPES:
            self.answers[kind] += 1
            if self.keep_records or kind == "subscribed":
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
        stream, seq = msg["stream"], msg["seq"]
        self.record_count += 1
        if self.keep_records:
            self.records.append(msg)
        self.positions[stream] = (msg["epoch"], seq)
        self.held[stream] = seq
        if kind == "trade":
            self._check_trade(msg)
        if kind == "book_snapshot":
            self.snapshot_reasons[msg["reason"]] += 1
            if self.keep_records:
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

    def _check_trade(self, msg: dict[str, Any]) -> None:
        """The same execution under another (stream, epoch, seq) is a duplicate."""
        where = (msg["stream"], msg["epoch"], msg["seq"])
        seen = self._recent_trades.setdefault(msg["match_number"], where)
        if seen != where:
            self.duplicate_trades.append(msg["match_number"])
        elif len(self._recent_trades) > RECENT_TRADES:
            self._recent_trades.popitem(last=False)

    def book(self, stream: str) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        return self.bids.get(stream, {}), self.asks.get(stream, {})

    def seqs(self, stream: str, kind: str | None = None) -> list[int]:
        return [
            r["seq"] for r in self.records
            if r["stream"] == stream and (kind is None or r["type"] == kind)
        ]  # fmt: skip
