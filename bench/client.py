"""One subscriber client on one core: records/s through ``gateway.client.ClientSession``.

The messages are what the gateway sends: the gateway's own normalizer (``FeedNormalizer``) turns
a recorded-style Paxos book stream (``bench.data.paxos_book_stream``: a 400-level snapshot and
then updates) into records, encoded as the hub encodes them (JSON text or MessagePack), after
a ``hello`` and a ``subscribed``. The client decodes each with the contract's types, checks
its sequence and applies it to its book. Run as ``python -m bench.client [--updates N]``
(pinned to one CPU); prints one JSON line: records/s (median and best of ``--repeats``) per
encoding, with books kept and without.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from typing import Any

import msgspec

from bench import data
from gateway.client import ClientSession
from gateway.contract.protocol import Hello, StreamState, Subscribed
from gateway.ingest.decimals import enc_hook

EPOCH = 1_795_582_622_048_325_592
STREAM = f"book.{data.MARKET}"


def gateway_messages(updates: int, encoding: str) -> list[bytes | str]:
    from gateway.ingest.feeds import feed_from_url
    from gateway.ingest.normalizer import FeedNormalizer

    session = FeedNormalizer(feed_from_url(f"ws://127.0.0.1/marketdata/{data.MARKET}"), EPOCH)
    records = list(session.connected(0))
    now = time.time_ns()
    for frame in data.paxos_book_stream(updates):
        now += 1000
        records += session.receive(frame, now)
    records = [r for r in records if r.stream == STREAM]
    first = records[0].seq
    hello = Hello(
        version=1, server="bench", epoch=EPOCH, encoding="json", max_request_bytes=65536,
        max_subscriptions=1000, buffer_bytes=1 << 22, slow_policy="conflate",
    )  # fmt: skip
    head = Subscribed(id="s1", streams=[StreamState(stream=STREAM, epoch=EPOCH, seq=first - 1)],
                      patterns=[])  # fmt: skip
    if encoding == "msgpack":
        encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
        return [encoder.encode(m) for m in (hello, head, *records)]
    json_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
    return [json_encoder.encode(m).decode() for m in (hello, head, *records)]


def consume(messages: list[bytes | str], encoding: str, keep_books: bool) -> float:
    """Records/s (CPU time) for one client that takes every message."""
    session = ClientSession([STREAM], encoding="msgpack" if encoding == "msgpack" else "json",
                            keep_books=keep_books)  # fmt: skip
    session.connection_made()
    receive = session.receive
    t0 = time.process_time()
    for message in messages:
        receive(message)
    elapsed = time.process_time() - t0
    stats = session.stats
    if stats.gaps or stats.problems or stats.records != len(messages) - 2:
        raise RuntimeError(f"client unhappy: gaps {stats.gaps}, problems {stats.problems}")
    if keep_books and session.book(STREAM) is None:
        raise RuntimeError("the client lost its book")
    return stats.records / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    result: dict[str, Any] = {"records": args.updates + 1}
    for encoding in ("json", "msgpack"):
        messages = gateway_messages(args.updates, encoding)
        for keep_books in (True, False):
            rates = [consume(messages, encoding, keep_books) for _ in range(args.repeats)]
            key = f"{encoding}{'' if keep_books else '_no_books'}"
            result[key] = {"median": round(statistics.median(rates)), "best": round(max(rates))}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
