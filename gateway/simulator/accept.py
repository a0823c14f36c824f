"""From TCP accept to a streaming simulator connection: the WebSocket handshake, the path's
route, refusals (``refuse_upgrades``, unknown markets the way ``faults.unknown_market`` says),
Paxos's connect-rate delay, and the subscription.

A new connection's snapshot (or replayed execution / current price) is queued and the
connection subscribed with no checkpoint in between, so what it receives is exactly the truth
at that moment followed by every later change, gap- and overlap-free.
"""

from __future__ import annotations

import itertools
import random

import trio
import trio_websocket

from gateway.simulator import formatting
from gateway.simulator.config import SimulatorConfig
from gateway.simulator.connection import CLOSE_TIMEOUT, CONNECTION_ERRORS, Connection
from gateway.simulator.events import Feed
from gateway.simulator.model import MarketModel
from gateway.simulator.registry import Registry
from gateway.simulator.stream import StallableStream

__all__ = ["Acceptor", "route"]


def route(path: str, markets: tuple[str, ...], stablecoins: tuple[str, ...]) -> (
    tuple[Feed, str | None] | None
):  # fmt: skip
    """The feed and market (None: all) a Paxos path serves; None: not a path Paxos serves."""
    match [p for p in path.split("/") if p]:
        case ["executiondata"]:
            return "executions", None
        case ["executiondata", market] if market in markets:
            return "executions", market
        case ["marketdata"]:
            return "book", None
        case ["marketdata", "stablecoin"]:
            return "stablecoin", None
        case ["marketdata", "stablecoin", market] if market in stablecoins:
            return "stablecoin", market
        case ["marketdata", market] if market in markets:
            return "book", market
    return None


class Acceptor:
    """Runs each accepted TCP connection (``handle_tcp``, for ``trio.serve_listeners``)."""

    def __init__(self, model: MarketModel, config: SimulatorConfig, registry: Registry) -> None:
        self.model = model
        self.config = config
        self.registry = registry
        self.refuse_status: int | None = None
        """Answer every new handshake with this HTTP status; None: accept."""
        self._ids = itertools.count(1)
        self._next_connect_slot = 0.0

    async def handle_tcp(self, raw: trio.SocketStream) -> None:
        stream = StallableStream(raw)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._handle_websocket(nursery, stream)
                except CONNECTION_ERRORS:
                    pass
                finally:
                    nursery.cancel_scope.cancel()  # the WebSocket reader task
        except* CONNECTION_ERRORS:
            pass  # raised in the reader task: this connection is over, the others are not
        finally:
            await trio.aclose_forcefully(raw)

    async def _handle_websocket(self, nursery: trio.Nursery, stream: StallableStream) -> None:
        request: trio_websocket.WebSocketRequest | None = None
        with trio.move_on_after(self.config.handshake_timeout):
            request = await trio_websocket.wrap_server_stream(nursery, stream)
        if request is None:
            return
        path = "/" + request.path.split("?", 1)[0].strip("/")
        if self.refuse_status is not None:
            await request.reject(self.refuse_status, body=b"refused by simulator")
            return
        routed = route(path, self.model.markets, self.model.stablecoins)
        if routed is None:
            await self._not_found(request)
            return
        ws = await request.accept()
        feed, market = routed
        ident = next(self._ids)
        rng = random.Random(f"paxos-sim-connection:{self.config.seed}:{ident}")
        conn = Connection(self.registry, self.config, ident, path, feed, market, stream, rng)
        self.registry.add(conn)
        try:
            with conn.scope:
                await self._delay_start()
                self._subscribe(conn)
                await conn.stream_to(ws)
        finally:
            conn.dead = True
            self.registry.remove(conn)
        # a write cut short by the drop leaves half a frame on the wire: no close frame then
        if conn.graceful and not conn.stalled and not conn.sending:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1001, "simulated drop")

    async def _not_found(self, request: trio_websocket.WebSocketRequest) -> None:
        how = self.config.faults.unknown_market
        if how == "error_frame":
            ws = await request.accept()
            await ws.send_message(formatting.NOT_FOUND)
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1000, "Not Found")
        else:
            status = 404 if how == "http_404" else 503
            await request.reject(status, body=b"Not Found" if status == 404 else b"Unavailable")

    async def _delay_start(self) -> None:
        # Paxos: one new connection per second per IP; excess ones are delayed, not refused.
        interval = self.config.faults.connect_interval
        if interval > 0:
            slot = max(trio.current_time(), self._next_connect_slot)
            self._next_connect_slot = slot + interval
            await trio.sleep_until(slot)

    def _subscribe(self, conn: Connection) -> None:
        """Initial messages and the subscription, with no checkpoint in between."""
        model, f = self.model, self.config.faults
        if conn.feed == "book":
            for market in (conn.market,) if conn.market else model.markets:
                conn.books.add(market)
                texts = model.snapshot_texts(market, split=f.snapshot_split, style=f.final_snapshot)
                for text in texts:
                    conn.push_initial(text)
        elif conn.feed == "executions":
            for market in (conn.market,) if conn.market else model.markets:
                conn.push_initial(model.last_execution(market).text)
        else:
            for market in (conn.market,) if conn.market else model.stablecoins:
                conn.push_initial(model.last_price(market).text)
        self.registry.route(conn)
        conn.streaming = True
        self.registry.notify()
