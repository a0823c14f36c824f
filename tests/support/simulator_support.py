"""Helpers (no tests): reading Paxos wire text independently of the simulator and gateway."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import trio
import trio_websocket

from gateway.simulator import Simulator, SimulatorConfig

TRIMMED = re.compile(r"^(0|[1-9]\d*)(\.\d*[1-9])?$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.(\d{0,8}[1-9]))?Z$")


def parse(text: str) -> dict[str, Any]:
    obj = json.loads(text)
    assert isinstance(obj, dict), text
    return obj


def assert_compact_all_strings(text: str) -> dict[str, Any]:
    """One compact JSON object whose values are all strings (final_snapshot aside)."""
    obj = parse(text)
    assert json.dumps(obj, separators=(",", ":")) == text
    for key, value in obj.items():
        if key in ("bids", "asks"):
            for level in value:
                assert set(level) == {"price", "amount"}
                assert all(isinstance(v, str) for v in level.values()), text
        elif key == "final_snapshot":
            assert value in (True, False, "true", "false"), text
        else:
            assert isinstance(value, str), text
    return obj


def final_flag(obj: dict[str, Any]) -> bool:
    value = obj.get("final_snapshot", True)
    return value is True or value == "true"


class Replica:
    """A book rebuilt from SNAPSHOT fragments and UPDATEs: what a correct client holds."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.complete = False
        self._fragment = False

    def apply(self, obj: dict[str, Any]) -> None:
        if obj["type"] == "SNAPSHOT":
            if not self._fragment:
                self.bids, self.asks = {}, {}
            for level in obj["bids"]:
                self.bids[Decimal(level["price"])] = Decimal(level["amount"])
            for level in obj["asks"]:
                self.asks[Decimal(level["price"])] = Decimal(level["amount"])
            self._fragment = not final_flag(obj)
            self.complete = not self._fragment
            return
        assert obj["type"] == "UPDATE", obj
        assert self.complete, "UPDATE before the snapshot was complete"
        side = self.bids if obj["side"] == "BUY" else self.asks
        price, amount = Decimal(obj["price"]), Decimal(obj["amount"])
        if amount == 0:
            assert price in side, f"removal of a level that does not exist: {obj}"
            del side[price]
        else:
            side[price] = amount

    def levels(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        return (
            sorted(self.bids.items(), reverse=True),
            sorted(self.asks.items()),
        )


class Client:
    """Reads a WebSocket in the background, so the server is never blocked by the test."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[str] = []
        self.close_code: int | None = None
        self._changed = trio.Event()

    async def run(self) -> None:
        try:
            while True:
                self.messages.append(await self.ws.get_message())
                self._notify()
        except trio_websocket.ConnectionClosed as exc:
            self.close_code = exc.reason.code if exc.reason else -1
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Until ``count`` messages arrived; fails if the connection closes first."""
        while len(self.messages) < count:
            assert self.close_code is None, f"closed ({self.close_code}) at {len(self.messages)}"
            await self._changed.wait()

    async def wait_closed(self) -> int:
        while self.close_code is None:
            await self._changed.wait()
        return self.close_code


def unthrottled(**kw: Any) -> SimulatorConfig:
    """A simulator config generating as fast as clients read; ``kw`` overrides anything."""
    return SimulatorConfig(**{"rate": 0.0, **kw})


@asynccontextmanager
async def serving(config: SimulatorConfig, *, paused: bool = False) -> AsyncIterator[Simulator]:
    sim = Simulator(config)
    if paused:
        sim.pause()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        yield sim
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def client(url: str, **kw: Any) -> AsyncIterator[Client]:
    """A connected ``Client``. Closing a stalled server connection cannot complete the close
    handshake: that ``DisconnectionTimeout`` (after ``disconnect_timeout``) is expected."""
    try:
        async with (
            trio_websocket.open_websocket_url(url, **kw) as ws,
            trio.open_nursery() as nursery,
        ):
            reader = Client(ws)
            nursery.start_soon(reader.run)
            yield reader
            nursery.cancel_scope.cancel()
    except trio_websocket.DisconnectionTimeout:
        pass
