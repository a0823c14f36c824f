"""Consume the gateway from asyncio: keep every book, print trades, never miss a gap.

    pip install 'paxos-gateway[client]'
    python consume.py ws://127.0.0.1:8765 [--token TOKEN] [--idle-exit SECONDS]

Prints one line per trade and per snapshot, problems on stderr, and, when the market has been
idle for ``--idle-exit`` seconds, every book as a JSON line and a summary, then exits
(0 if there was no gap).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from gateway.client import Gap, RecordReceived, ResumeFailed, Snapshot
from gateway.client.asyncio_client import connect
from gateway.contract.records import Trade
from gateway.ingest.decimals import to_str


async def consume(url: str, token: str | None, idle_exit: float | None) -> int:
    async with connect(url, ["book.*", "trades.*"], token=token) as client:
        print(f"# connecting to {client.url}", flush=True)
        events = aiter(client)
        while True:
            try:
                event = await asyncio.wait_for(anext(events), idle_exit)
            except TimeoutError:
                break  # the market is idle: show what we hold
            match event:
                case RecordReceived(record=Trade() as t):
                    print(f"{t.stream} #{t.seq} trade {to_str(t.amount)} @ {to_str(t.price)}")
                case Snapshot(stream=stream, reason=reason, record=snap):
                    print(f"{stream} #{snap.seq} snapshot ({reason}) {len(snap.bids)} bids")
                case Gap() | ResumeFailed():
                    print(f"# {event}", file=sys.stderr)  # the client already resubscribed
        for stream, book in sorted(client.books.items()):
            bids = [[to_str(p), to_str(a)] for p, a in book.bids()]
            asks = [[to_str(p), to_str(a)] for p, a in book.asks()]
            print(json.dumps({"book": stream, "bids": bids, "asks": asks}))
        stats = client.session.stats
        print(f"# {stats.records} records, {stats.gaps} gaps, epoch {client.session.epoch}")
        return 1 if stats.gaps else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="gateway URL, e.g. ws://127.0.0.1:8765")
    parser.add_argument("--token", help="bearer token, if the gateway requires one")
    parser.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    args = parser.parse_args()
    return asyncio.run(consume(args.url, args.token, args.idle_exit))


if __name__ == "__main__":
    sys.exit(main())
