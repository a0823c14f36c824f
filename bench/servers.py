"""The servers under test: how to start each, what it is fed, how a subscriber asks for data."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace

from bench import data


def _subscribe(stream: str) -> bytes:
    return json.dumps({"op": "subscribe", "id": 1, "streams": [stream]}).encode()


@dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    module: str  # run as ``python -m module --upstream URL``
    feed_kind: str  # what the feeder sends it: "paxos" (upstream format) or "record"
    trades_path: str  # upstream path of the trades scenario
    book_path: str  # upstream path of the snapshot scenario
    stream_path: str  # subscriber path
    trades_request: bytes | None  # sent by a subscriber after the handshake
    book_stream_path: str
    book_request: bytes | None
    extra_args: tuple[str, ...] = ()
    snapshot: bool = True  # serves late joiners a book snapshot (the relay floors do not)

    def command(self, upstream: str, max_seconds: float) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.module,
            "--upstream",
            upstream,
            "--max-seconds",
            str(max_seconds),
            *self.extra_args,
        ]


GATEWAY = ServerSpec(
    name="gateway",
    description="paxos-gateway (gateway.app, real upstream path: decode, normalize, sequence)",
    module="bench.gateway_server",
    feed_kind="paxos",
    trades_path=f"/executiondata/{data.MARKET}",
    book_path=f"/marketdata/{data.MARKET}",
    stream_path="/v1/stream",
    trades_request=_subscribe(f"trades.{data.MARKET}"),
    book_stream_path="/v1/stream",
    book_request=_subscribe(f"book.{data.MARKET}"),
)

# The same gateway reading each feed at most every 2 ms (``upstream.coalesce_window``): what
# arrives in between is normalized, published and written together (io.upstream_ws).
GATEWAY_2MS = replace(
    GATEWAY,
    name="gateway-2ms",
    description="paxos-gateway with upstream.coalesce_window = 2 ms (reads at most every 2 ms)",
    extra_args=("--set", "upstream.coalesce_window=0.002"),
)

WEBSOCKETS = ServerSpec(
    name="websockets",
    description="asyncio websockets server, broadcast() of every record (bench/peers)",
    module="bench.peers.ws_broadcast",
    feed_kind="record",
    trades_path="/records",
    book_path="/records",
    stream_path="/stream",
    trades_request=None,
    book_stream_path="/book",
    book_request=None,
)

TRIO_NAIVE = replace(
    WEBSOCKETS,
    name="trio-naive",
    description="trio-websocket, a task per subscriber, send_message per record (bench/peers)",
    module="bench.peers.trio_naive",
)

PICOWS = replace(
    WEBSOCKETS,
    name="picows",
    description="picows (framing in C, on uvloop), send() of every record to every subscriber",
    module="bench.peers.picows_relay",
    snapshot=False,
)

BATCHED = replace(
    PICOWS,
    name="uvloop-batched",
    description="raw uvloop protocol: each upstream read's frames as one write per subscriber",
    module="bench.peers.raw_uvloop",
    extra_args=("--mode", "batched"),
)

FLOOR = replace(
    BATCHED,
    name="floor",
    description="raw uvloop protocol, pre-built frames, no parsing: one write per delivery",
    extra_args=("--mode", "floor"),
)

ALL = {s.name: s for s in (GATEWAY, GATEWAY_2MS, WEBSOCKETS, TRIO_NAIVE, PICOWS, BATCHED, FLOOR)}
# The gateway's configurations under test: the reports compare each with the peers.
GATEWAYS = (GATEWAY.name, GATEWAY_2MS.name)
PEERS = ("websockets", "trio-naive", "picows", "uvloop-batched", "floor")
