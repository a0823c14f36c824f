"""Peer 2: the naive trio-websocket design — one task per subscriber, one send_message per record.

The upstream task puts every message on each subscriber's memory channel; each subscriber's
task takes them off one by one and awaits ``send_message`` for each (one WebSocket frame and
one socket write per record per subscriber). A ``/book`` path gets a dict-book snapshot first.
The upstream is re-dialled 50 ms after it closes. Prints ``LISTENING <port>`` once ready; exits
after ``--max-seconds``.
"""

from __future__ import annotations

import contextlib

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

from bench.peers.book import DictBook
from bench.procs import server_arguments

# Deep enough that a burst never blocks the upstream task in practice, like broadcast().
QUEUE = 1_000_000


async def run(upstream: str, max_seconds: float) -> None:
    subscribers: set[trio.MemorySendChannel[str]] = set()
    book = DictBook()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        send, receive = trio.open_memory_channel[str](QUEUE)
        with contextlib.suppress(ConnectionClosed):
            if "/book" in request.path:
                await ws.send_message(book.snapshot())
            subscribers.add(send)
            try:
                async with receive:
                    async for message in receive:
                        await ws.send_message(message)
            finally:
                subscribers.discard(send)

    with trio.move_on_after(max_seconds):
        async with trio.open_nursery() as nursery:
            server: WebSocketServer = await nursery.start(
                serve_websocket, handler, "127.0.0.1", 0, None
            )
            print(f"LISTENING {server.port}", flush=True)
            while True:  # re-dialled 50 ms after the upstream closes (the drain phase drops it)
                try:
                    async with open_websocket_url(upstream, max_message_size=2**24) as up:
                        while True:
                            message = await up.get_message()
                            assert isinstance(message, str)
                            if message.startswith('{"type":"book_'):
                                book.feed(message.encode())
                            for send in list(subscribers):
                                with contextlib.suppress(
                                    trio.BrokenResourceError, trio.ClosedResourceError
                                ):
                                    await send.send(message)
                except (ConnectionClosed, HandshakeError, OSError):
                    await trio.sleep(0.05)


def main() -> None:
    args = server_arguments()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run, args.upstream, args.max_seconds)


if __name__ == "__main__":
    main()
