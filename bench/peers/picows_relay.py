"""Peer 3: picows (WebSocket framing and parsing in C, on uvloop), one send per record per
subscriber.

The upstream client and the subscriber server are both picows; every upstream text frame's
payload is sent to every subscriber with ``WSTransport.send``, which frames it in C and writes
it to the socket at once. The strongest per-message relay a Python program can be built on:
the per-delivery Python left is one loop step and one C call. The upstream is re-dialled
50 ms after it closes (the drain phase drops it). Prints ``LISTENING <port>``; exits after
``--max-seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvloop
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_connect,
    ws_create_server,
)

from bench.procs import server_arguments

RETRY = 0.05


class Subscriber(WSListener):
    def __init__(self, subscribers: set[WSTransport]) -> None:
        self.subscribers = subscribers

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.subscribers.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.subscribers.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class Upstream(WSListener):
    def __init__(self, subscribers: set[WSTransport]) -> None:
        self.subscribers = subscribers

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        for sub in self.subscribers:
            sub.send(WSMsgType.TEXT, payload)


async def run(upstream: str, max_seconds: float) -> None:
    subscribers: set[WSTransport] = set()

    def listener(request: WSUpgradeRequest) -> Subscriber:
        return Subscriber(subscribers)

    server = await ws_create_server(listener, "127.0.0.1", 0)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max_seconds):
            while True:
                try:
                    transport, _ = await ws_connect(
                        lambda: Upstream(subscribers), upstream, max_frame_size=2**24
                    )
                except (TimeoutError, OSError):
                    await asyncio.sleep(RETRY)
                    continue
                except Exception as exc:  # picows's handshake errors
                    if type(exc).__module__.startswith("picows"):
                        await asyncio.sleep(RETRY)
                        continue
                    raise
                await transport.wait_disconnected()
                await asyncio.sleep(RETRY)
    server.close()


def main() -> None:
    args = server_arguments()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run(args.upstream, args.max_seconds))


if __name__ == "__main__":
    main()
