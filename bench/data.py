"""Deterministic test data: Paxos upstream frames and the gateway's records for the same events.

The gateway is fed Paxos messages (it decodes and normalizes them, that is its job); the peers
are fed the gateway's own JSON encoding of the corresponding records and only relay them. Both
sides thus fan out the same events as records of the same size.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

import msgspec

from gateway.contract.records import BookSnapshot, Trade

MARKET = "BTCUSD"
TICK = Decimal("0.25")
MID = Decimal("60000")
EPOCH = "1700000000000000000"
# 19 digits like any time.time_ns() of this century: the feeder overwrites it in place.
PLACEHOLDER_NS = 1_700_000_000_123_456_789
TIME_DIGITS = 19
RFC3339_LEN = len("2024-11-04T18:11:09.042391267Z")

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def match_number(i: int) -> str:
    """A unique 12-character upper-case alphanumeric id, like Paxos's."""
    out = []
    n = i
    for _ in range(11):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "B" + "".join(reversed(out))


def rfc3339_ns(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def _trade_fields(i: int, rng: random.Random) -> tuple[str, str]:
    price = MID + TICK * rng.randint(-400, 400)
    amount = Decimal(rng.randint(1, 500_000_000)).scaleb(-8).normalize()
    return f"{price.normalize():f}", f"{amount:f}"


def paxos_execution(i: int, rng: random.Random) -> bytes:
    price, amount = _trade_fields(i, rng)
    return (
        f'{{"market":"{MARKET}","price":"{price}","amount":"{amount}",'
        f'"executed_at":"{rfc3339_ns(PLACEHOLDER_NS)}","match_number":"{match_number(i)}"}}'
    ).encode()


def trade_record(i: int, rng: random.Random) -> bytes:
    price, amount = _trade_fields(i, rng)
    record = Trade(
        stream=f"trades.{MARKET}",
        seq=i + 1,
        epoch=EPOCH,
        receive_time=str(PLACEHOLDER_NS),
        market=MARKET,
        price=Decimal(price),
        amount=Decimal(amount),
        match_number=match_number(i),
        exchange_time=str(PLACEHOLDER_NS),
    )
    return msgspec.json.encode(record)


def trades(kind: str, count: int, seed: int = 1) -> list[bytes]:
    """``count`` execution payloads: ``paxos`` (upstream format) or ``record`` (gateway format)."""
    rng = random.Random(seed)
    make = paxos_execution if kind == "paxos" else trade_record
    return [make(i, rng) for i in range(count)]


def time_slot(payload: bytes, kind: str) -> tuple[int, int]:
    """(offset, length) of the timestamp the feeder overwrites with its send time."""
    if kind == "paxos":
        start = payload.index(b'"executed_at":"') + len(b'"executed_at":"')
        return start, RFC3339_LEN
    start = payload.index(b'"exchange_time":"') + len(b'"exchange_time":"')
    return start, TIME_DIGITS


def book_levels(levels: int, seed: int = 2) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``levels`` price levels, half bids (best first) and half asks (best first)."""
    rng = random.Random(seed)
    half = levels // 2

    def amount() -> str:
        return f"{Decimal(rng.randint(1, 900_000_000)).scaleb(-8).normalize():f}"

    bids = [(f"{(MID - TICK * (k + 1)).normalize():f}", amount()) for k in range(half)]
    asks = [(f"{(MID + TICK * (k + 1)).normalize():f}", amount()) for k in range(levels - half)]
    return bids, asks


def paxos_snapshot(levels: int) -> bytes:
    bids, asks = book_levels(levels)
    body = {
        "type": "SNAPSHOT",
        "market": MARKET,
        "bids": [{"price": p, "amount": a} for p, a in bids],
        "asks": [{"price": p, "amount": a} for p, a in asks],
        "final_snapshot": True,
    }
    return msgspec.json.encode(body)


def snapshot_record(levels: int) -> bytes:
    bids, asks = book_levels(levels)
    record = BookSnapshot(
        stream=f"book.{MARKET}",
        seq=1,
        epoch=EPOCH,
        receive_time=str(PLACEHOLDER_NS),
        market=MARKET,
        bids=[(Decimal(p), Decimal(a)) for p, a in bids],
        asks=[(Decimal(p), Decimal(a)) for p, a in asks],
        resync=False,
        reason="initial",
    )
    return msgspec.json.encode(record)


def paxos_book_stream(updates: int, levels: int = 400, seed: int = 3) -> list[bytes]:
    """A SNAPSHOT and then ``updates`` UPDATE messages that never cross the book."""
    rng = random.Random(seed)
    out = [paxos_snapshot(levels)]
    depth = levels // 2 + 50
    for _ in range(updates):
        ticks = rng.randint(1, depth)
        if rng.random() < 0.5:
            side, price = "BUY", MID - TICK * ticks
        else:
            side, price = "SELL", MID + TICK * ticks
        amount = "0" if rng.random() < 0.2 else f"{Decimal(rng.randint(1, 10**9)).scaleb(-8):f}"
        out.append(
            f'{{"type":"UPDATE","market":"{MARKET}","side":"{side}",'
            f'"price":"{price.normalize():f}","amount":"{amount}"}}'.encode()
        )
    return out
