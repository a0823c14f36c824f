"""Peers 4 and 5: raw uvloop protocols, no WebSocket library, no parsing beyond frame lengths.

* ``--mode floor``: every upstream frame, as received (the feeder sends unmasked server frames:
  they are already what a subscriber must get), is written to every subscriber with its own
  ``transport.write``: one send per delivery and nothing else. The physical limit of "one send
  per delivery" on this machine; what any relay that writes per message can at best approach.
* ``--mode batched``: all complete frames of one upstream read (one read per loop iteration)
  are written to every subscriber as one chunk: one joined write per subscriber per loop
  iteration, the like-for-like answer to the gateway's coalescing. At paced input (one message
  per read) it is the floor; under load it batches as the gateway does.

The upgrade request is answered without validation beyond the key; whatever a subscriber sends
afterwards is ignored. The upstream is re-dialled 50 ms after it closes (the drain phase drops
it). Prints ``LISTENING <port>``; exits after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast

import uvloop

from bench import wsframes
from bench.procs import server_arguments

RETRY = 0.05


class Subscriber(asyncio.Protocol):
    def __init__(self, subscribers: set[asyncio.Transport]) -> None:
        self.subscribers = subscribers
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport in self.subscribers:
            return  # a streaming subscriber's frames are not read
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        try:
            self.transport.write(wsframes.server_handshake_response(self.head))
        except ValueError:
            self.transport.close()
            return
        self.subscribers.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.subscribers.discard(self.transport)


class Upstream(asyncio.Protocol):
    """The feeder's frames: each one (floor) or each read's complete ones (batched) relayed."""

    def __init__(self, subscribers: set[asyncio.Transport], batched: bool, host: str) -> None:
        self.subscribers = subscribers
        self.batched = batched
        self.request, self.accept = wsframes.client_handshake(host, 0, "/records")
        self.streaming = False
        self.buf = b""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.streaming:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.streaming = True
            buf = buf[end + 4 :]
        # Frame lengths only (the feeder's frames are small, unmasked and final).
        pos, size, starts = 0, len(buf), []
        while size - pos >= 2:
            n = buf[pos + 1]
            head = pos + 2
            if n == 126:
                if size - head < 2:
                    break
                n = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif n == 127:
                if size - head < 8:
                    break
                n = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if head + n > size:
                break
            starts.append(pos)
            pos = head + n
        self.buf = buf[pos:]
        if not starts:
            return
        subscribers = list(self.subscribers)
        if self.batched:
            chunk = buf[:pos]
            for t in subscribers:
                t.write(chunk)
            return
        starts.append(pos)
        for i in range(len(starts) - 1):
            frame = buf[starts[i] : starts[i + 1]]
            for t in subscribers:
                t.write(frame)


async def run(upstream: str, max_seconds: float, batched: bool) -> None:
    loop = asyncio.get_running_loop()
    subscribers: set[asyncio.Transport] = set()
    server = await loop.create_server(lambda: Subscriber(subscribers), "127.0.0.1", 0)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    host, _, port = upstream.split("/")[2].partition(":")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max_seconds):
            while True:
                try:
                    transport, protocol = await loop.create_connection(
                        lambda: Upstream(subscribers, batched, host), host, int(port)
                    )
                except OSError:
                    await asyncio.sleep(RETRY)
                    continue
                await cast(Upstream, protocol).lost
                transport.close()
                await asyncio.sleep(RETRY)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("floor", "batched"), default="floor")
    args = server_arguments(parser)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run(args.upstream, args.max_seconds, args.mode == "batched"))


if __name__ == "__main__":
    main()
