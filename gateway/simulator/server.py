"""The simulator's WebSocket server: the model's events fanned out to Paxos paths, with faults.

One generator task advances the model (``rate`` events per second, or as fast as the
clients read) and appends each event's pre-formatted text to the queue of every connection
whose path covers it; one sender task per connection copies its queue to the socket. A new
connection's snapshot (or replayed execution / current price) is taken and the connection
subscribed with no checkpoint in between, so what it receives is exactly the truth at that
moment followed by every later change, gap- and overlap-free.

Generation does not depend on connections: executions happen (and are recorded in the
model's tape) during an outage of every feed just as with clients connected, and the REST
API (``rest_server``, a listener of its own) serves the same model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from gateway.simulator import faults as faults_mod
from gateway.simulator import formatting
from gateway.simulator.config import RestConfig, SimulatorConfig
from gateway.simulator.faults import FaultConfig
from gateway.simulator.framing import text_frame
from gateway.simulator.markets import MarketSpec, resolve_markets
from gateway.simulator.model import Execution, Feed, Level, MarketModel, PriceTick
from gateway.simulator.rest_server import RestServer
from gateway.simulator.stream import StallableStream

log = logging.getLogger("gateway.simulator")

_SNAPSHOT_PREFIX = '{"type":"SNAPSHOT"'
_CONNECTION_ERRORS = (
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    # trio-websocket's reader task raises this when a client's ping crosses our close frame;
    # one confused connection must never take the whole simulator down.
    LocalProtocolError,
)
_CLOSE_TIMEOUT = 1.0
_WRITE_BYTES = 65536  # frames gathered into one socket write


class Connection:
    """One client connection, as tests see it. Counters are updated live."""

    def __init__(
        self, sim: Simulator, ident: int, path: str, feed: Feed, market: str | None,
        stream: StallableStream, rng: random.Random,
    ) -> None:  # fmt: skip
        self.id = ident
        self.path = path
        self.feed: Feed = feed
        self.market = market
        self.messages_sent = 0
        """Real messages handed to the socket (snapshots, events, replays, injected UPDATEs)."""
        self.bad_frames_sent = 0
        self.streaming = False
        """False while the connection waits out the connect-rate delay."""
        self.drop_reason: str | None = None
        self._sim = sim
        self._stream = stream
        self._rng = rng
        self._queue: deque[str] = deque()
        self._wake = trio.Event()
        self._scope = trio.CancelScope()
        self._graceful = False
        self._dead = False
        self._sending = False
        self._books: set[str] = set()  # markets whose SNAPSHOT a book connection has had

    def __repr__(self) -> str:
        return (
            f"<Connection {self.id} {self.path} sent={self.messages_sent} "
            f"queued={len(self._queue)} stalled={self.stalled}>"
        )

    @property
    def stalled(self) -> bool:
        return self._stream.stalled

    @property
    def queued(self) -> int:
        return len(self._queue)

    def drop(self, *, graceful: bool = False, reason: str = "command") -> None:
        """Close now: abruptly (TCP only, the client sees 1006) or with a 1001 close frame."""
        if self.drop_reason is None:
            self.drop_reason = reason
        self._dead = True
        if graceful and self.streaming:
            # A write cut short would put half a frame before the close frame: let the one
            # under way finish (the sender stops before the next), unless it is stuck.
            self._graceful = True
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + _CLOSE_TIMEOUT)
            self._wake.set()
        else:
            self._graceful = False
            self._scope.cancel()

    def stall(self) -> None:
        self._stream.stall()
        self._sim._release_space()

    def unstall(self) -> None:
        self._stream.unstall()

    def _push(self, text: str) -> None:
        if self._dead:
            return
        if len(self._queue) >= self._sim.config.send_buffer:
            log.info("simulator: connection %d %s fell behind, dropping it", self.id, self.path)
            self.drop(reason="overflow")
            self._sim._release_space()
            return
        self._queue.append(text)
        self._wake.set()

    def _push_initial(self, text: str) -> None:
        # a snapshot may be split into more fragments than the buffer holds: never a reason
        # to drop a connection that has not even started
        self._queue.append(text)
        self._wake.set()


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
        self.events_generated = 0
        """UPDATE and execution messages generated so far (initial state not counted)."""
        self.sent_prices: list[PriceTick] = [
            self.model.last_price(m) for m in self.model.stablecoins
        ]
        self.crossed_injected = 0
        self.finished = trio.Event()
        """Set when ``max_events`` has been reached and generation stopped."""
        self._url: str | None = None
        self._paused = False
        self._resumed = trio.Event()
        self._changed = trio.Event()
        self._space = trio.Event()
        self._space_needed = False
        self._high_water = config.send_buffer // 2
        # with backpressure, one batch must fit in what is left above the high-water mark
        # (a step yields up to 8 events), so a reading client is never dropped for overflow
        self._batch = (
            min(config.batch, config.send_buffer - self._high_water - 8)
            if config.backpressure
            else config.batch
        )
        self._connections: dict[int, Connection] = {}
        self._routes: dict[tuple[Feed, str | None], set[Connection]] = {}
        self._ids = itertools.count(1)
        self._refuse_status: int | None = None
        self._next_connect_slot = 0.0
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
            await nursery.start(trio.serve_listeners, self._handle_tcp, listeners)
            await nursery.start(trio.serve_listeners, self._rest.handle, rest_listeners)
            nursery.start_soon(self._generate)
            nursery.start_soon(self._tick_stablecoins)
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
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop generating events (book, executions, stablecoin) until ``resume``."""
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._resumed.set()
            self._resumed = trio.Event()

    async def wait_for_events(self, total: int) -> None:
        """Until ``events_generated >= total`` (e.g. ``sim.events_generated + 100``)."""
        await self.wait_until(lambda: self.events_generated >= total or self.finished.is_set())
        if self.events_generated < total:
            raise RuntimeError(f"max_events reached at {self.events_generated} < {total}")

    async def wait_for_connections(self, count: int, path: str | None = None) -> None:
        """Until at least ``count`` streaming connections (on ``path``, if given) exist."""
        await self.wait_until(lambda: len(self._select(path, streaming=True)) >= count)

    async def wait_idle(self) -> None:
        """Until every streaming, unstalled connection has handed its whole queue to the
        socket: with ``pause()`` first, the clients then have everything there is."""
        await self.wait_until(
            lambda: all(
                not c._queue and not c._sending
                for c in self._connections.values()
                if c.streaming and not c.stalled
            )
        )

    # -- connections and faults ------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        """Live connections, oldest first."""
        return list(self._connections.values())

    def drop_all(self, path: str | None = None, *, graceful: bool = False) -> int:
        """Drop every live connection (on ``path``); returns how many."""
        chosen = self._select(path)
        for conn in chosen:
            conn.drop(graceful=graceful)
        return len(chosen)

    def stall(self, path: str | None = None) -> int:
        """Stall every live connection (on ``path``): no data, no pongs, still open."""
        chosen = self._select(path)
        for conn in chosen:
            conn.stall()
        return len(chosen)

    def unstall(self, path: str | None = None) -> int:
        chosen = self._select(path)
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
        for conn in self._subscribers("book", market):
            conn._push(text)
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
            self._dispatch("executions", symbol, opening.text)
        f = self.faults
        for conn in list(self._routes.get(("book", None), ())):
            if symbol not in conn._books:
                conn._books.add(symbol)
                for text in self.model.snapshot_texts(
                    symbol, split=f.snapshot_split, style=f.final_snapshot
                ):
                    conn._push(text)
        self._notify()

    def refuse_upgrades(self, status: int | None) -> None:
        """Answer every new handshake with this HTTP status (e.g. 503); None to stop."""
        if status is not None and not 300 <= status <= 599:
            raise ValueError("status must be an HTTP error status (300..599)")
        self._refuse_status = status

    # -- internals: bookkeeping --------------------------------------------------------------

    def _select(self, path: str | None, *, streaming: bool = False) -> list[Connection]:
        wanted = None if path is None else "/" + path.strip("/")
        return [
            c
            for c in self._connections.values()
            if (wanted is None or c.path == wanted) and (c.streaming or not streaming)
        ]

    def _subscribers(self, feed: Feed, market: str) -> Iterable[Connection]:
        yield from self._routes.get((feed, market), ())
        yield from self._routes.get((feed, None), ())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds; re-checked whenever connections open, close or drain,
        and after every batch of events."""
        while not predicate():
            await self._changed.wait()

    def _release_space(self) -> None:
        if self._space_needed:
            self._space_needed = False
            self._space.set()

    def _busy(self) -> bool:
        high = self._high_water
        return any(
            len(c._queue) >= high and not c.stalled and not c._dead
            for c in self._connections.values()
        )

    # -- internals: generation ---------------------------------------------------------------

    def _dispatch(self, feed: Feed, market: str, text: str) -> None:
        routes = self._routes
        conns = routes.get((feed, market))
        if conns:
            for conn in conns:
                conn._push(text)
        conns = routes.get((feed, None))
        if conns:
            for conn in conns:
                conn._push(text)

    def _produce(self, budget: int) -> int:
        limit = self.config.max_events
        if limit is not None:
            budget = min(budget, limit - self.events_generated)
        now_ns = self.config.clock_ns()
        step = self.model.step
        dispatch = self._dispatch
        made = 0
        while made < budget:
            for event in step(now_ns):
                dispatch(event.FEED, event.market, event.text)
                made += 1
        self.events_generated += made
        return made

    async def _generate(self) -> None:
        cfg = self.config
        rate = cfg.rate
        start = trio.current_time()
        done = 0  # events since ``start``
        while True:
            if cfg.max_events is not None and self.events_generated >= cfg.max_events:
                self.finished.set()
                self._notify()
                return
            if self._paused:
                await self._resumed.wait()
                start, done = trio.current_time(), 0
                continue
            if cfg.backpressure and self._busy():
                self._space = trio.Event()
                self._space_needed = True
                await self._space.wait()
                continue
            budget = self._batch
            if rate > 0:
                now = trio.current_time()
                # the epsilon: float error must not leave ``due`` at 0 at the very deadline
                # slept until (a busy loop under a mock clock, whose time then never moves)
                due = int((now - start) * rate + 1e-6) - done
                if due <= 0:
                    await trio.sleep_until(start + (done + 1) / rate)
                    continue
                if due > max(rate, self._batch):
                    # more than a second behind (e.g. after backpressure): no catch-up burst
                    start, done, due = now, 0, 1
                budget = min(due, budget)
            done += self._produce(budget)
            self._notify()
            await trio.lowlevel.checkpoint()

    async def _tick_stablecoins(self) -> None:
        interval = self.config.stablecoin_interval
        if not self.model.stablecoins:
            return
        next_at = trio.current_time() + interval
        while not self.finished.is_set():
            await trio.sleep_until(next_at)
            if self._paused:
                await self._resumed.wait()  # no idle wake-ups while paused
            next_at = max(next_at + interval, trio.current_time())
            if self.finished.is_set():
                return
            for tick in self.model.stablecoin_tick(self.config.clock_ns()):
                self.sent_prices.append(tick)
                self._dispatch("stablecoin", tick.market, tick.text)
            self._notify()

    # -- internals: connections ------------------------------------------------------------

    def _route(self, path: str) -> tuple[Feed, str | None] | None:
        markets, stablecoins = self.model.markets, self.model.stablecoins
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

    async def _handle_tcp(self, raw: trio.SocketStream) -> None:
        stream = StallableStream(raw)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._handle_websocket(nursery, stream)
                except _CONNECTION_ERRORS:
                    pass
                finally:
                    nursery.cancel_scope.cancel()  # the WebSocket reader task
        except* _CONNECTION_ERRORS:
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
        if self._refuse_status is not None:
            await request.reject(self._refuse_status, body=b"refused by simulator")
            return
        route = self._route(path)
        if route is None:
            await self._not_found(request)
            return
        ws = await request.accept()
        feed, market = route
        ident = next(self._ids)
        rng = random.Random(f"paxos-sim-connection:{self.config.seed}:{ident}")
        conn = Connection(self, ident, path, feed, market, stream, rng)
        self._connections[ident] = conn
        self._notify()
        try:
            with conn._scope:
                await self._delay_start()
                self._subscribe(conn)
                await self._stream_to(conn, ws)
        finally:
            conn._dead = True
            self._routes.get((feed, market), set()).discard(conn)
            del self._connections[ident]
            self._release_space()
            self._notify()
        # a write cut short by the drop leaves half a frame on the wire: no close frame then
        if conn._graceful and not conn.stalled and not conn._sending:
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await ws.aclose(1001, "simulated drop")

    async def _not_found(self, request: trio_websocket.WebSocketRequest) -> None:
        how = self.faults.unknown_market
        if how == "error_frame":
            ws = await request.accept()
            await ws.send_message(formatting.NOT_FOUND)
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await ws.aclose(1000, "Not Found")
        else:
            status = 404 if how == "http_404" else 503
            await request.reject(status, body=b"Not Found" if status == 404 else b"Unavailable")

    async def _delay_start(self) -> None:
        # Paxos: one new connection per second per IP; excess ones are delayed, not refused.
        interval = self.faults.connect_interval
        if interval > 0:
            slot = max(trio.current_time(), self._next_connect_slot)
            self._next_connect_slot = slot + interval
            await trio.sleep_until(slot)

    def _subscribe(self, conn: Connection) -> None:
        """Initial messages and the subscription, with no checkpoint in between."""
        model, f = self.model, self.faults
        if conn.feed == "book":
            for market in (conn.market,) if conn.market else model.markets:
                conn._books.add(market)
                texts = model.snapshot_texts(market, split=f.snapshot_split, style=f.final_snapshot)
                for text in texts:
                    conn._push_initial(text)
        elif conn.feed == "executions":
            for market in (conn.market,) if conn.market else model.markets:
                conn._push_initial(model.last_execution(market).text)
        else:
            for market in (conn.market,) if conn.market else model.stablecoins:
                conn._push_initial(model.last_price(market).text)
        self._routes.setdefault((conn.feed, conn.market), set()).add(conn)
        conn.streaming = True
        self._notify()

    async def _stream_to(self, conn: Connection, ws: trio_websocket.WebSocketConnection) -> None:
        async with trio.open_nursery() as nursery:

            async def watch_peer() -> None:
                # Clients send nothing; reading just notices the peer closing.
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_peer)
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._send_loop(conn, ws)
            nursery.cancel_scope.cancel()

    async def _send_loop(self, conn: Connection, ws: trio_websocket.WebSocketConnection) -> None:
        queue, rng, f, stream = conn._queue, conn._rng, self.faults, conn._stream
        low_water = self._high_water // 2
        while not conn._dead:
            if not queue:
                conn._wake = trio.Event()
                self._notify()  # wait_idle may be waiting for this
                await conn._wake.wait()
                continue
            if ws.closed is not None:
                return
            frames: list[bytes] = []
            size = count = 0
            fault: Literal["drop", "stall"] | None = None
            while queue and size < _WRITE_BYTES:
                text = queue[0]
                # faults are drawn per message, and act at that message: what came before
                # it in this write still goes out
                if f.drop_probability and rng.random() < f.drop_probability:
                    fault = "drop"
                    break
                if (
                    f.stall_probability
                    and not stream.stalled
                    and rng.random() < f.stall_probability
                ):
                    fault = "stall"
                    break
                if (
                    f.bad_frame_probability
                    and rng.random() < f.bad_frame_probability
                    and not text.startswith(_SNAPSHOT_PREFIX)
                ):
                    kind = rng.choice(f.bad_frame_kinds)
                    frames.append(
                        text_frame(faults_mod.bad_frame(kind, text, rng, f.oversized_bytes))
                    )
                    conn.bad_frames_sent += 1
                if f.extra_field_probability and rng.random() < f.extra_field_probability:
                    text = faults_mod.with_extra_field(text, rng)
                queue.popleft()
                frame = text_frame(text)
                frames.append(frame)
                size += len(frame)
                count += 1
            if frames and ws.closed is None:  # no data after a close frame
                conn._sending = True
                await stream.send_all(b"".join(frames))
                conn._sending = False
                conn.messages_sent += count
            if fault == "drop":
                conn.drop(graceful=f.drop_graceful, reason="random")
            if fault == "stall":
                conn.stall()  # the message whose turn it was now waits with the rest
            if self._space_needed and len(queue) <= low_water:
                self._release_space()


def _address(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
