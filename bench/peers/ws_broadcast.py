"""Peer 1: what a Python team would write instead — asyncio ``websockets`` and its broadcast(),
on uvloop (as in the reference measurements of the performance issue).

It relays every upstream message (already the gateway's record encoding) to every connected
subscriber with ``websockets.broadcast`` and keeps a dict book for late joiners on a ``/book``
path. Pings are off (as in the gateway under test) because the harness's subscribers do not
answer them. The upstream is re-dialled 50 ms after it closes. Prints ``LISTENING <port>`` once
ready; exits after ``--max-seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.peers.book import DictBook
from bench.procs import server_arguments


async def run(upstream: str, max_seconds: float) -> None:
    clients: set[ServerConnection] = set()
    book = DictBook()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and "/book" in ws.request.path:
            await ws.send(book.snapshot())
        clients.add(ws)
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)

    async with (
        asyncio.timeout(max_seconds),
        serve(
            handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=2**20
        ) as server,
    ):
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"LISTENING {port}", flush=True)
        # Re-dialled 50 ms after the upstream closes (the drain phase drops it).
        while True:
            try:
                async with connect(
                    upstream, compression=None, ping_interval=None, max_size=None
                ) as up:
                    while True:
                        message = await up.recv(decode=False)
                        assert isinstance(message, bytes)
                        if message.startswith(b'{"type":"book_'):
                            book.feed(message)
                        broadcast(clients, message, text=True)
            except (ConnectionClosed, InvalidHandshake, OSError):
                await asyncio.sleep(0.05)


def main() -> None:
    args = server_arguments()
    with contextlib.suppress(KeyboardInterrupt, TimeoutError):
        uvloop.run(run(args.upstream, args.max_seconds))


if __name__ == "__main__":
    main()
