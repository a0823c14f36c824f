"""Ingest alone, on one core: upstream book messages decoded, normalized and applied to books.

The gateway figure is ``FeedNormalizer.receive`` over a SNAPSHOT and then UPDATE messages of one
market (``bench.data.paxos_book_stream``); the reference is what a Python team would write:
``json.loads``, ``Decimal``, a dict per side, a record dict per update. Run as
``python -m bench.ingest --updates N`` (pinned to one CPU); prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bench import data
from bench.procs import die_with_parent


def gateway_ingest(frames: list[bytes]) -> Callable[[], int]:
    from gateway.ingest.feeds import feed_from_url
    from gateway.ingest.normalizer import FeedNormalizer

    def run() -> int:
        session = FeedNormalizer(feed_from_url(f"ws://127.0.0.1/marketdata/{data.MARKET}"), "1")
        session.connected(0)
        records = 0
        now = time.time_ns()
        for frame in frames:
            now += 1000
            records += len(session.receive(frame, now))
        if session.stats.decode_errors or session.resync_reason is not None:
            raise RuntimeError(f"gateway session unhappy: {session.stats}, {session.resync_reason}")
        return records

    return run


def naive_ingest(frames: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        seq = 0
        records = 0
        now = time.time_ns()
        for frame in frames:
            now += 1000
            message = json.loads(frame)
            market = message["market"]
            if message["type"] == "UPDATE":
                side = "bid" if message["side"] == "BUY" else "ask"
                price, amount = Decimal(message["price"]), Decimal(message["amount"])
                levels = books[market][side]
                if amount == 0:
                    levels.pop(price, None)
                else:
                    levels[price] = amount
                seq += 1
                record: dict[str, Any] = {
                    "type": "book_update",
                    "stream": f"book.{market}",
                    "seq": seq,
                    "receive_time": now,
                    "market": market,
                    "side": side,
                    "price": price,
                    "amount": amount,
                }
            else:
                books[market] = {
                    "bid": {Decimal(x["price"]): Decimal(x["amount"]) for x in message["bids"]},
                    "ask": {Decimal(x["price"]): Decimal(x["amount"]) for x in message["asks"]},
                }
                seq += 1
                record = {"type": "book_snapshot", "seq": seq, "receive_time": now}
            records += bool(record)
        return records

    return run


def measure(run: Callable[[], int], messages: int, repeats: int) -> dict[str, float]:
    rates = []
    for _ in range(repeats):
        t0 = time.process_time()
        run()
        rates.append(messages / (time.process_time() - t0))
    return {"median": statistics.median(rates), "best": max(rates)}


def main() -> None:
    die_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    frames = data.paxos_book_stream(args.updates)
    result: dict[str, Any] = {"messages": len(frames)}
    try:
        result["gateway"] = measure(gateway_ingest(frames), len(frames), args.repeats)
    except Exception as exc:  # the gateway is under construction; report, don't crash
        result["gateway_error"] = repr(exc)
    result["naive"] = measure(naive_ingest(frames), len(frames), args.repeats)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
