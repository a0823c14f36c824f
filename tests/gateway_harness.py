"""Shared harness for end-to-end tests: simulator + gateway in-process, and subscribers
that use a WebSocket library other than the server's own (``websockets``, asyncio) running on
an event loop in a thread of its own, so they cannot share scheduling with the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import trio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.app import Gateway
from gateway.config import Config, load_config
from gateway.simulator import Simulator, SimulatorConfig
from tests.downstream_model import Model


def gateway_config(sim_url: str, *, feeds: Sequence[str] | None = None, **sets: str) -> Config:
    """A gateway for tests: every port ephemeral, fast retries against the local simulator.

    ``feeds`` (paths joined to the simulator's URL, or full URLs) replaces the default feeds."""
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
        # Every test client connects from 127.0.0.1: storms of hundreds of subscribers must
        # not trip the per-address limit (tests/test_limits.py tests that limit).
        "server.connections_per_ip_per_second": "100000",
        "server.connection_burst_per_ip": "100000",
        **sets,
    }
    return load_config(None, {}, [f"{k}={v}" for k, v in overrides.items()], feeds=feeds)


def book_levels(gateway: Gateway, market: str) -> tuple[list[Any], list[Any]] | None:
    for feed in gateway.feeds:
        book = feed.session.books.get(market)
        if book is not None:
            return book.bids(), book.asks()
    return None


async def wait_books_equal_truth(
    sim: Simulator,
    gateway: Gateway,
    markets: Iterable[str],
    timeout: float = 30,
    *,
    ready_feeds: Iterable[str] | None = None,
) -> None:
    """After ``sim.pause()``: the gateway catches up (and finishes any reconnect) by itself.

    ``ready_feeds``: names of the feeds that must be ready too (default: every feed)."""
    markets = list(markets)
    names = None if ready_feeds is None else set(ready_feeds)
    with trio.fail_after(timeout):
        while True:
            if all(book_levels(gateway, m) == sim.truth(m) for m in markets) and all(
                f.session.ready for f in gateway.feeds if names is None or f.spec.name in names
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
    read_delay: float = 0.0
    """Seconds to sleep after each message: a slow reader."""
    rcvbuf: int | None = None
    """SO_RCVBUF for the socket (set before connecting): a small one makes a subscriber that
    stops reading push back on the gateway at once instead of after megabytes of kernel buffer."""
    opens: int = 0
    _aborting: bool = False

    async def open(self, base_url: str, resume: dict[str, dict[str, int]] | None = None) -> None:
        url = f"{base_url}/v1/stream"
        extra: dict[str, Any] = {}
        if self.rcvbuf is not None:
            extra["sock"] = await _small_buffer_socket(url, self.rcvbuf)
        self.ws = await connect(url, max_queue=None, open_timeout=10, **extra)
        self.opens += 1
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
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
        except ConnectionClosed:
            pass  # an abnormal close is kept in ``closed_code``, which tests check
        except Exception as exc:  # the model records it; the test asserts no problems
            self.model.problems.append(f"{self.name}: reader failed: {exc!r}")
        finally:
            if ws.close_code is not None and ws.close_code != 1000 and not self._aborting:
                self.closed_code = ws.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader
        self.ws = None

    async def abort(self) -> None:
        """Vanish: drop the TCP connection (RST) without a closing handshake."""
        self._aborting = True
        if self.ws is not None:
            sock = self.ws.transport.get_extra_info("socket")
            if sock is not None:  # linger 0: close sends RST, as a crashed host's kernel would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.ws.transport.abort()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader
        self.ws = None
        self._aborting = False

    def pause_reading(self) -> None:
        """Stop reading the socket (the gateway's writes back up); pings go unanswered too."""
        if self.ws is not None:
            self.ws.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.ws is not None:
            self.ws.transport.resume_reading()

    async def churn(self, streams: list[str], cycles: int) -> None:
        """Unsubscribe and subscribe ``streams`` again ``cycles`` times without waiting for the
        answers: each subscribe queues a fresh book snapshot. A subscriber that also stops
        reading fills the kernel's socket buffers (megabytes on loopback) in moments."""
        assert self.ws is not None
        for i in range(cycles):
            await self.ws.send(json.dumps({"op": "unsubscribe", "id": f"u{i}", "streams": streams}))
            await self.ws.send(json.dumps({"op": "subscribe", "id": f"c{i}", "streams": streams}))

    def trade_ids(self) -> list[str]:
        return [r["match_number"] for r in self.model.records if r["type"] == "trade"]

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


async def _small_buffer_socket(url: str, rcvbuf: int) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return sock


class RawSubscriber:
    """A WebSocket client made by hand on a raw trio socket, for clients that misbehave below
    the WebSocket layer: one that never reads (nor answers pings) and one that vanishes
    without a closing handshake (FIN or RST)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    @classmethod
    async def connect(cls, base_url: str, path: str, *, rcvbuf: int | None = None) -> RawSubscriber:
        parts = urlsplit(base_url)
        assert parts.hostname is not None and parts.port is not None
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((parts.hostname, parts.port))
        stream = trio.SocketStream(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:  # bounded by the caller's fail_after
            chunk = await stream.receive_some(1)  # byte by byte: leave frames in the socket
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head[:80]!r}")
        return cls(stream)

    async def send_text(self, text: str) -> None:
        """One masked text frame (clients must mask)."""
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.stream.send_all(header + mask + masked)

    async def vanish(self, *, reset: bool) -> None:
        """Close the socket without a WebSocket close: FIN, or RST if ``reset``."""
        if reset:
            self.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        await trio.aclose_forcefully(self.stream)


def bounded_problems(gateway: Gateway) -> list[str]:
    """Every structure that must stay bounded, checked against its limit (after a run)."""
    problems: list[str] = []
    server = gateway.config.server
    hub = gateway.hub
    for name, st in hub._streams.items():
        if len(st.history) > server.history:
            problems.append(f"{name}: history {len(st.history)} > {server.history}")
    for sub in hub.subscribers:
        if not sub.closed and sub.queued_bytes > sub.buffer_bytes:
            problems.append(f"subscriber {sub.id}: {sub.queued_bytes} B > {sub.buffer_bytes} B")
    for feed in gateway.feeds:
        session = feed.session
        dedup = session._dedup
        if len(dedup) > dedup.capacity or len(dedup._order) != len(dedup):
            problems.append(f"{feed.spec.name}: dedup {len(dedup)} > {dedup.capacity}")
        for market, held in session._held.items():
            if len(held) > session._max_held:
                problems.append(f"{feed.spec.name}: {len(held)} updates held for {market}")
        for market, (bids, asks) in session._fragments.items():
            if len(bids) + len(asks) > session._max_snapshot_levels:
                problems.append(f"{feed.spec.name}: snapshot fragments of {market} too big")
    return problems


def leaked_subscribers(gateway: Gateway) -> list[str]:
    """After every client is gone: anything the gateway still holds for a subscriber."""
    hub = gateway.hub
    leaks = [f"hub subscriber {s.id}" for s in hub.subscribers]
    if gateway.server.subscriber_count:
        leaks.append(f"server connections: {gateway.server.subscriber_count}")
    leaks += [f"{name}: {len(st.subscribers)} attached" for name, st in hub._streams.items()
              if st.subscribers]  # fmt: skip
    leaks += [f"pattern {p}: {len(subs)}" for p, (_, subs) in hub._patterns.items() if subs]
    return leaks


# -- the fault-injection suite's rig: simulator + gateway + checking subscribers -----------------

# Quick enough to notice a stall in a test, slack enough that a gateway busy catching up (the
# pong waits behind the data sent before it) on a 2-core CI runner is not judged dead.
FAST_UPSTREAM_PINGS = {"upstream.ping_interval": "0.2", "upstream.ping_timeout": "2"}


@dataclass
class Rig:
    """A running simulator and gateway, an asyncio thread for subscribers, and a sampler that
    checks the gateway's bounded structures all along the run (not only at the end)."""

    sim: Simulator
    gateway: Gateway
    clients: AsyncioClients
    subs: list[Subscriber] = field(default_factory=list)
    bound_violations: list[str] = field(default_factory=list)
    max_queued_bytes: int = 0

    @property
    def base(self) -> str:
        return self.gateway.subscriber_url

    async def open(self, subs: Iterable[Subscriber]) -> None:
        subs = list(subs)
        self.subs += [s for s in subs if s not in self.subs]
        await self.clients.run(_open_many(subs, self.base))

    async def reopen(self, subs: Iterable[Subscriber], *, resume: bool = True) -> None:
        """Connect ``subs`` again, resuming every concrete stream from the last record held."""
        await self.clients.run(_open_many(list(subs), self.base, resume=resume))

    async def close(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.run(_close_many(list(subs)))

    async def abort(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.run(_abort_many(list(subs)))

    async def churn(self, subs: Iterable[Subscriber], streams: list[str], cycles: int) -> None:
        await self.clients.run(_churn_many(list(subs), streams, cycles))

    def heads(self) -> dict[str, int]:
        return {info.stream: info.seq for info in self.gateway.hub.stream_list()}

    async def settle(
        self,
        markets: Iterable[str],
        subs: Iterable[Subscriber] | None = None,
        *,
        ready_feeds: Iterable[str] | None = None,
        timeout: float = 30,
    ) -> None:
        """Pause the market, let the gateway repair its books, and every subscriber in ``subs``
        (default: all) receive everything up to each stream's head."""
        self.sim.pause()
        with trio.fail_after(timeout):
            await self.sim.wait_idle()
        await wait_books_equal_truth(
            self.sim, self.gateway, markets, timeout, ready_feeds=ready_feeds
        )
        chosen = self.subs if subs is None else list(subs)
        await self.clients.run(_wait_reached(chosen, self.heads(), timeout), timeout + 5)

    async def start(
        self,
        subs: Iterable[Subscriber],
        markets: Iterable[str],
        *,
        ready_feeds: Iterable[str] | None = None,
    ) -> int:
        """With the market paused: wait for the gateway's books, subscribe ``subs`` (concrete
        streams exist by then), wait until they hold everything, resume. Returns the index in
        ``sim.sent_executions`` from which subscribers of a trades stream must hold all."""
        markets = list(markets)
        self.sim.pause()
        await wait_books_equal_truth(self.sim, self.gateway, markets, ready_feeds=ready_feeds)
        await self.open(subs)
        await self.settle(markets, ready_feeds=ready_feeds)
        since = len(self.sim.sent_executions)
        self.sim.resume()
        return since

    async def reconnect_closed(
        self, subs: Iterable[Subscriber], markets: Iterable[str], timeout: float = 30
    ) -> list[tuple[str, int | None]]:
        """With the market paused, let each of ``subs`` either catch up or see its connection
        end; reconnect (resuming) those whose connection ended, as a client would. Returns
        (name, close code) of each reconnected one. The market stays paused."""
        subs = list(subs)
        self.sim.pause()
        with trio.fail_after(timeout):
            await self.sim.wait_idle()
        await wait_books_equal_truth(self.sim, self.gateway, markets, timeout)
        heads = self.heads()
        await self.clients.run(_wait_reached_or_ended(subs, heads, timeout), timeout + 5)
        ended = [s for s in subs if s.reader is None or s.reader.done()]
        codes = [(s.name, s.closed_code) for s in ended]
        for sub in ended:
            sub.closed_code = None
        await self.reopen(ended)
        return codes

    async def sample_bounds(self) -> None:
        """Run in the rig's nursery: check the bounded structures every 20 ms."""
        while True:
            problems = bounded_problems(self.gateway)
            if problems and len(self.bound_violations) < 20:
                self.bound_violations += problems
            for sub in self.gateway.hub.subscribers:
                self.max_queued_bytes = max(self.max_queued_bytes, sub.queued_bytes)
            await trio.sleep(0.02)

    async def wait_no_subscribers(self, timeout: float = 20) -> None:
        with trio.fail_after(timeout):
            while leaked_subscribers(self.gateway):
                await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_rig(
    sim_config: SimulatorConfig,
    *,
    feeds: Sequence[str] | None = None,
    **sets: str,
) -> AsyncIterator[Rig]:
    """Simulator, gateway (fast upstream pings unless overridden) and a subscriber thread; on
    exit the subscribers are closed, the gateway shut down and everything cancelled."""
    async with trio.open_nursery() as nursery:
        sim = Simulator(sim_config)
        sim_url = await nursery.start(sim.serve)
        config = gateway_config(sim_url, feeds=feeds, **{**FAST_UPSTREAM_PINGS, **sets})
        gateway = Gateway(config, handle_signals=False)
        await nursery.start(gateway.serve)
        rig = Rig(sim, gateway, AsyncioClients())
        nursery.start_soon(rig.sample_bounds)
        try:
            yield rig
        finally:
            with trio.move_on_after(10):
                await rig.close([s for s in rig.subs if s.ws is not None])
            rig.clients.close()
            gateway.request_shutdown()
            with trio.move_on_after(10):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


async def _open_many(subs: list[Subscriber], base: str, *, resume: bool = False) -> None:
    await asyncio.gather(
        *(s.open(base, resume=(s.resume_positions() or None) if resume else None) for s in subs)
    )


async def _close_many(subs: list[Subscriber]) -> None:
    await asyncio.gather(*(s.close() for s in subs))


async def _churn_many(subs: list[Subscriber], streams: list[str], cycles: int) -> None:
    await asyncio.gather(*(s.churn(streams, cycles) for s in subs))


async def _abort_many(subs: list[Subscriber]) -> None:
    await asyncio.gather(*(s.abort() for s in subs))


def subscribed_streams(sub: Subscriber) -> set[str]:
    """Every concrete stream a ``subscribed`` answer (or pattern announcement) gave ``sub``."""
    answers = [r for r in sub.model.responses if r["type"] == "subscribed"]
    return {st["stream"] for r in answers for st in r["streams"]}


async def _wait_reached(subs: list[Subscriber], heads: dict[str, int], timeout: float) -> None:
    def heads_of(sub: Subscriber) -> dict[str, int]:
        return {n: heads[n] for n in subscribed_streams(sub) if heads.get(n, 0) > 0}

    await wait_all_reached(subs, heads_of, timeout)


async def _wait_reached_or_ended(
    subs: list[Subscriber], heads: dict[str, int], timeout: float
) -> None:
    def done(sub: Subscriber) -> bool:
        if sub.reader is None or sub.reader.done():
            return True
        return sub.reached({n: heads[n] for n in subscribed_streams(sub) if heads.get(n, 0)})

    deadline = asyncio.get_running_loop().time() + timeout
    while not all(done(s) for s in subs):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"neither caught up nor closed: {[s.name for s in subs][:5]}")
        await asyncio.sleep(0.02)


def pattern_matches(pattern: str, stream: str) -> bool:
    p_kind, _, p_key = pattern.partition(".")
    kind, _, key = stream.partition(".")
    return p_kind in ("*", kind) and p_key in ("*", key)


def subscriber_problems(sub: Subscriber, sim: Simulator, markets: Iterable[str]) -> list[str]:
    """What a checking client would complain about: sequence problems (``Model``), books that
    differ from the simulator's truth, executions published twice or never sent."""
    problems = [f"{sub.name}: {p}" for p in sub.model.problems[:5]]
    for market in markets:
        stream = f"book.{market}"
        if stream in sub.model.bids:
            bids, asks = sub.model.book(stream)
            if (as_levels(bids, True), as_levels(asks, False)) != sim.truth(market):
                problems.append(f"{sub.name}: {stream} differs from the truth")
    problems += [f"{sub.name}: {p}" for p in trade_problems(sub, sim)]
    return problems


def trade_problems(sub: Subscriber, sim: Simulator) -> list[str]:
    """The same execution under two different positions is a duplicate; a resent initial
    value (same stream, epoch and seq, after a reconnect) is not."""
    positions: dict[str, set[tuple[str, int, int]]] = {}
    for r in sub.model.records:
        if r["type"] == "trade":
            positions.setdefault(r["match_number"], set()).add((r["stream"], r["epoch"], r["seq"]))
    sent = {e.match_number for e in sim.sent_executions}
    dups = [m for m, where in positions.items() if len(where) > 1]
    unknown = [m for m in positions if m not in sent]
    return [f"execution {m} published twice: {sorted(positions[m])}" for m in dups[:3]] + [
        f"execution {m} was never sent" for m in unknown[:3]
    ]


def missing_trades(sub: Subscriber, sim: Simulator, since: int) -> list[str]:
    """Executions generated from ``sim.sent_executions[since]`` on that ``sub`` subscribed to
    but does not hold (for phases in which the executions feed was never interrupted)."""
    held = set(sub.trade_ids())
    return [
        e.match_number
        for e in sim.sent_executions[since:]
        if any(pattern_matches(p, f"trades.{e.market}") for p in sub.streams)
        and e.match_number not in held
    ]


def statuses(sub: Subscriber, stream: str | None = None) -> list[tuple[str, str]]:
    """(state, reason) of every status record ``sub`` received (on ``stream``)."""
    return [
        (r["state"], r["reason"])
        for r in sub.model.records
        if r["type"] == "status" and (stream is None or r["stream"] == stream)
    ]


def snapshot_reasons(sub: Subscriber) -> list[str]:
    return [s["reason"] for s in sub.model.snapshots]
