"""The simulator's WebSocket server: ``Simulator``, the model's events fanned out to Paxos paths,
with faults, and the API tests drive it with.

The parts: ``generator`` (the pace: model steps, stablecoin ticks, pause, backpressure),
``registry`` (which connections get which events; the changed and space signals), ``accept``
(handshake → route → subscription, refusals, the connect-rate delay), ``connection`` (one
client's queue, sender and per-message faults). The REST API (``rest_server``, a listener of its
own) serves the same model.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence

import trio

from gateway.simulator.accept import Acceptor
from gateway.simulator.config import RestConfig, SimulatorConfig
from gateway.simulator.connection import Connection
from gateway.simulator.events import Execution, Level, PriceTick
from gateway.simulator.faults import FaultConfig
from gateway.simulator.generator import Generator
from gateway.simulator.markets import MarketSpec, resolve_markets
from gateway.simulator.model import MarketModel
from gateway.simulator.registry import Registry
from gateway.simulator.rest_server import RestServer

__all__ = ["Simulator"]

log = logging.getLogger("gateway.simulator")


class Simulator:
    """A faithful Paxos public-feed server. See the package docstring for the API."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        config = config if config is not None else SimulatorConfig()
        config.check()
        self.config = config
        self.model = MarketModel(
            resolve_markets(list(config.markets)),
            seed=config.seed,
            now_ns=config.clock_ns(),
            levels=config.levels,
            stablecoins=tuple(config.stablecoins),
            execution_ratio=config.execution_ratio,
            number_style=config.number_style,
            timestamp_digits=config.timestamp_digits,
        )
        self._registry = Registry(config.send_buffer)
        self._generator = Generator(self.model, config, self._registry)
        self._acceptor = Acceptor(self.model, config, self._registry)
        self.crossed_injected = 0
        self._url: str | None = None
        self._fault_rng = random.Random(f"paxos-sim-faults:{config.seed}")
        self._rest = RestServer(
            self.model, config.rest, config.faults, config.clock_ns, config.seed
        )
        self._rest_url: str | None = None

    # -- running ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, generate and serve until cancelled; ``nursery.start`` returns the URL."""
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        rest_listeners = await trio.open_tcp_listeners(self.config.rest_port, host=self.config.host)
        self._url = "ws://" + _address(listeners[0])
        self._rest_url = "http://" + _address(rest_listeners[0]) + "/v2"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._acceptor.handle_tcp, listeners)
            await nursery.start(trio.serve_listeners, self._rest.handle, rest_listeners)
            nursery.start_soon(self._generator.run)
            nursery.start_soon(self._generator.tick_stablecoins)
            log.info("simulator: serving Paxos feeds on %s, REST on %s", self._url, self._rest_url)
            task_status.started(self._url)

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` once ``serve`` has started."""
        if self._url is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._url

    @property
    def faults(self) -> FaultConfig:
        """Mutable at runtime (change its fields; the object itself stays): every connection
        reads it per message, the REST server per request."""
        return self.config.faults

    @property
    def rest(self) -> RestConfig:
        """REST behaviour, mutable at runtime like ``faults``: read per request."""
        return self.config.rest

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT/v2`` (Paxos: ``https://api.paxos.com/v2``) once serving."""
        if self._rest_url is None:
            raise RuntimeError("the simulator is not serving yet")
        return self._rest_url

    @property
    def rest_responses(self) -> Counter[int]:
        """REST responses sent so far, by status."""
        return self._rest.responses

    # -- the truth -------------------------------------------------------------------------

    @property
    def markets(self) -> tuple[str, ...]:
        return self.model.markets

    @property
    def stablecoins(self) -> tuple[str, ...]:
        return self.model.stablecoins

    def truth(self, market: str) -> tuple[list[Level], list[Level]]:
        """The true book now: (bids best first, asks best first) of (price, amount)."""
        return self.model.truth(market)

    def executions(self, market: str | None = None) -> Sequence[Execution]:
        """The ground truth: every execution generated (of ``market``), oldest first, whether
        or not a connection was there to send it on. Read-only."""
        return self.model.executions if market is None else self.model.executions_of(market)

    @property
    def sent_executions(self) -> list[Execution]:
        """Every execution ever generated, oldest first, starting with one initial execution
        per market (what the first replay shows): ``executions()`` under its first name. Not
        only those sent; an outage does not stop generation. Read-only: do not mutate."""
        return self.model.executions

    # -- generation control ----------------------------------------------------------------

    @property
    def events_generated(self) -> int:
        """UPDATE and execution messages generated so far (initial state not counted)."""
        return self._generator.events_generated

    @property
    def finished(self) -> trio.Event:
        """Set when ``max_events`` has been reached and generation stopped."""
        return self._generator.finished

    @property
    def sent_prices(self) -> list[PriceTick]:
        """Every stablecoin price so far, starting with the initial ones. Read-only."""
        return self._generator.sent_prices

    @property
    def paused(self) -> bool:
        return self._generator.paused

    def pause(self) -> None:
        """Stop generating events (book, executions, stablecoin) until ``resume``."""
        self._generator.pause()

    def resume(self) -> None:
        self._generator.resume()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds; re-checked whenever connections open, close or drain,
        and after every batch of events."""
        await self._registry.wait_until(predicate)

    async def wait_for_events(self, total: int) -> None:
        """Until ``events_generated >= total`` (e.g. ``sim.events_generated + 100``)."""
        await self.wait_until(lambda: self.events_generated >= total or self.finished.is_set())
        if self.events_generated < total:
            raise RuntimeError(f"max_events reached at {self.events_generated} < {total}")

    async def wait_for_connections(self, count: int, path: str | None = None) -> None:
        """Until at least ``count`` streaming connections (on ``path``, if given) exist."""
        await self.wait_until(lambda: len(self._registry.select(path, streaming=True)) >= count)

    async def wait_idle(self) -> None:
        """Until every streaming, unstalled connection has handed its whole queue to the
        socket: with ``pause()`` first, the clients then have everything there is."""
        await self.wait_until(
            lambda: all(
                not c.queued and not c.sending
                for c in self._registry.connections.values()
                if c.streaming and not c.stalled
            )
        )

    # -- connections and faults ------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        """Live connections, oldest first."""
        return list(self._registry.connections.values())

    def drop_all(self, path: str | None = None, *, graceful: bool = False) -> int:
        """Drop every live connection (on ``path``); returns how many."""
        chosen = self._registry.select(path)
        for conn in chosen:
            conn.drop(graceful=graceful)
        return len(chosen)

    def stall(self, path: str | None = None) -> int:
        """Stall every live connection (on ``path``): no data, no pongs, still open."""
        chosen = self._registry.select(path)
        for conn in chosen:
            conn.stall()
        return len(chosen)

    def unstall(self, path: str | None = None) -> int:
        chosen = self._registry.select(path)
        for conn in chosen:
            conn.unstall()
        return len(chosen)

    def inject_crossed(self, market: str) -> int:
        """Send every book connection covering ``market`` an UPDATE that crosses the book.

        It is not applied to the truth: the next snapshot (after a reconnect) is the truth.
        Returns the number of connections it was queued on."""
        if market not in self.model.markets:
            raise KeyError(market)
        text = self.model.crossing_update_text(market, self._fault_rng)
        if text is None:
            return 0
        count = 0
        for conn in self._registry.subscribers("book", market):
            conn.push(text)
            count += 1
        self.crossed_injected += 1
        return count

    def halt(self, market: str) -> None:
        """Stop trading ``market``: still listed (``UNAVAILABLE``), its book frozen, no events.
        ValueError for the last open market (something must trade)."""
        self.model.set_status(market, "halted", self.config.clock_ns())

    def delist(self, market: str) -> None:
        """Stop trading ``market`` and stop listing it: REST 404s, new feed connections get
        Not Found; connections already on it stay open and silent."""
        self.model.set_status(market, "delisted", self.config.clock_ns())

    def list_market(self, market: str | MarketSpec) -> None:
        """Open a halted or delisted market again, or list a new one (a name from
        ``DEFAULT_MARKETS`` or a ``MarketSpec``), which opens with one execution.

        All-markets book connections that lack the market's book get its SNAPSHOT first,
        so its UPDATEs never arrive before a snapshot."""
        symbol = market.symbol if isinstance(market, MarketSpec) else market
        now_ns = self.config.clock_ns()
        if symbol in self.model.known_markets:
            self.model.set_status(symbol, "open", now_ns)
        else:
            (spec,) = resolve_markets([market])
            opening = self.model.add_market(spec, now_ns)
            self._registry.dispatch("executions", symbol, opening.text)
        f = self.faults
        for conn in list(self._registry.routes.get(("book", None), ())):
            if symbol not in conn.books:
                conn.books.add(symbol)
                for text in self.model.snapshot_texts(
                    symbol, split=f.snapshot_split, style=f.final_snapshot
                ):
                    conn.push(text)
        self._registry.notify()

    def refuse_upgrades(self, status: int | None) -> None:
        """Answer every new handshake with this HTTP status (e.g. 503); None to stop."""
        if status is not None and not 300 <= status <= 599:
            raise ValueError("status must be an HTTP error status (300..599)")
        self._acceptor.refuse_status = status


def _address(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
