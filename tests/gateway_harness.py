"""Shared harness for end-to-end tests: simulator + gateway in-process, and subscribers
that use a WebSocket library other than the server's own (``websockets``, asyncio) running on
an event loop in a thread of its own, so they cannot share scheduling with the gateway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import trio
from websockets.asyncio.client import ClientConnection, connect

from gateway.app import Gateway
from gateway.config import Config, load_config
from gateway.simulator import Simulator
from tests.downstream_model import Model


def gateway_config(sim_url: str, **sets: str) -> Config:
    """A gateway for tests: every port ephemeral, fast retries against the local simulator."""
    overrides = {
        "upstream.base_url": sim_url,
        "upstream.allow_fast_retry": "true",
        "upstream.backoff_initial": "0.05",
        "upstream.backoff_max": "0.3",
        "upstream.connect_interval": "0",
        "server.port": "0",
        "metrics.host": '"127.0.0.1"',
        "metrics.port": "0",
        "shutdown.drain_timeout": "2",
        **sets,
    }
    return load_config(None, {}, [f"{k}={v}" for k, v in overrides.items()])


def book_levels(gateway: Gateway, market: str) -> tuple[list[Any], list[Any]] | None:
    for feed in gateway.feeds:
        book = feed.session.books.get(market)
        if book is not None:
            return book.bids(), book.asks()
    return None


async def wait_books_equal_truth(
    sim: Simulator, gateway: Gateway, markets: Iterable[str], timeout: float = 30
) -> None:
    """After ``sim.pause()``: the gateway catches up (and finishes any reconnect) by itself."""
    markets = list(markets)
    with trio.fail_after(timeout):
        while True:
            if all(book_levels(gateway, m) == sim.truth(m) for m in markets) and all(
                f.session.ready for f in gateway.feeds
            ):
                return
            await trio.sleep(0.02)


def as_levels(side: dict[Decimal, Decimal], best_first_descending: bool) -> list[Any]:
    return sorted(side.items(), reverse=best_first_descending)


@dataclass
class Subscriber:
    """One ``websockets`` client checking everything it receives with ``Model``."""

    name: str
    streams: list[str]
    model: Model = field(default_factory=Model)
    ws: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    closed_code: int | None = None

    async def open(self, base_url: str, resume: dict[str, dict[str, int]] | None = None) -> None:
        self.ws = await connect(f"{base_url}/v1/stream", max_queue=None, open_timeout=10)
        request: dict[str, Any] = {"op": "subscribe", "id": self.name, "streams": self.streams}
        if resume:
            request["resume"] = resume
        await self.ws.send(json.dumps(request))
        self.reader = asyncio.get_running_loop().create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                msg = json.loads(message)
                if msg.get("type") != "hello":
                    self.model.feed(msg)
        except Exception as exc:  # the model records it; the test asserts no problems
            self.model.problems.append(f"{self.name}: reader failed: {exc!r}")
        finally:
            if ws.close_code is not None and ws.close_code != 1000:
                self.closed_code = ws.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader
        self.ws = None

    def resume_positions(self) -> dict[str, dict[str, int]]:
        return {
            s: {"epoch": rec_epoch, "seq": seq}
            for s, (rec_epoch, seq) in self._positions().items()
            if s in self.streams
        }

    def _positions(self) -> dict[str, tuple[int, int]]:
        positions: dict[str, tuple[int, int]] = {}
        for r in self.model.records:
            positions[r["stream"]] = (r["epoch"], r["seq"])
        return positions

    def reached(self, heads: dict[str, int]) -> bool:
        return all(self.model.held.get(s, 0) >= h for s, h in heads.items())


class AsyncioClients:
    """An asyncio event loop in a thread, driven from trio through futures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)

        def wait() -> Any:
            try:
                return future.result(timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise

        return await trio.to_thread.run_sync(wait)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def wait_all_reached(subs: Iterable[Subscriber], heads_of: Any, timeout: float = 60) -> None:
    """Poll (from asyncio) until each subscriber holds its streams' heads."""
    subs = list(subs)
    deadline = asyncio.get_running_loop().time() + timeout
    while not all(s.reached(heads_of(s)) for s in subs):
        if asyncio.get_running_loop().time() > deadline:
            late = [s.name for s in subs if not s.reached(heads_of(s))][:5]
            raise TimeoutError(f"subscribers never reached the heads: {late}")
        await asyncio.sleep(0.02)
