"""Shared harness for end-to-end tests: simulator + gateway in-process, and checking
subscribers in worker processes (``tests.client_workers``), so they cannot take the gateway's
interpreter or scheduling from it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import trio

from gateway.app import Gateway
from gateway.config import Config, load_config
from gateway.simulator import Simulator, SimulatorConfig
from tests.client_workers import ClientWorkers, Subscriber, client_workers


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
    """A running simulator and gateway, worker processes for subscribers, and a sampler that
    checks the gateway's bounded structures all along the run (not only at the end)."""

    sim: Simulator
    gateway: Gateway
    clients: ClientWorkers
    subs: list[Subscriber] = field(default_factory=list)
    bound_violations: list[str] = field(default_factory=list)
    max_queued_bytes: int = 0

    @property
    def base(self) -> str:
        return self.gateway.subscriber_url

    async def open(self, subs: Iterable[Subscriber]) -> None:
        subs = list(subs)
        self.subs += [s for s in subs if s not in self.subs]
        await self.clients.open(subs, self.base, resume=False)

    async def reopen(self, subs: Iterable[Subscriber], *, resume: bool = True) -> None:
        """Connect ``subs`` again, resuming every concrete stream from the last record held."""
        await self.clients.open(subs, self.base, resume=resume)

    async def close(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.close(subs)

    async def abort(self, subs: Iterable[Subscriber]) -> None:
        await self.clients.abort(subs)

    async def churn(self, subs: Iterable[Subscriber], streams: list[str], cycles: int) -> None:
        await self.clients.churn(subs, streams, cycles)

    def heads(self) -> dict[str, int]:
        return {info.stream: info.seq for info in self.gateway.hub.stream_list()}

    async def settle(
        self,
        markets: Iterable[str],
        subs: Iterable[Subscriber] | None = None,
        *,
        ready_feeds: Iterable[str] | None = None,
        timeout: float = 60,
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
        await self.clients.wait_reached(chosen, self.heads(), timeout)

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
        await self.clients.wait_reached_or_ended(subs, self.heads(), timeout)
        ended = [s for s in subs if not s.connected]
        codes = [(s.name, s.closed_code) for s in ended]
        await self.reopen(ended)  # which forgets each one's close code
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
    """Simulator, gateway (fast upstream pings unless overridden) and subscriber processes; on
    exit the subscribers are closed, the gateway shut down and everything cancelled."""
    async with client_workers() as clients, trio.open_nursery() as nursery:
        sim = Simulator(sim_config)
        sim_url = await nursery.start(sim.serve)
        config = gateway_config(sim_url, feeds=feeds, **{**FAST_UPSTREAM_PINGS, **sets})
        gateway = Gateway(config, handle_signals=False)
        await nursery.start(gateway.serve)
        rig = Rig(sim, gateway, clients)
        nursery.start_soon(rig.sample_bounds)
        try:
            yield rig
        finally:
            with trio.move_on_after(10):
                await rig.close([s for s in rig.subs if s.connected])
            gateway.request_shutdown()
            with trio.move_on_after(10):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


def pattern_matches(pattern: str, stream: str) -> bool:
    p_kind, _, p_key = pattern.partition(".")
    kind, _, key = stream.partition(".")
    return p_kind in ("*", kind) and p_key in ("*", key)


def subscriber_problems(sub: Subscriber, sim: Simulator, markets: Iterable[str]) -> list[str]:
    """What a checking client would complain about: sequence problems (``Model``), books that
    differ from the simulator's truth, executions published twice or never sent."""
    problems = [f"{sub.name}: {p}" for p in sub.view.problems[:5]]
    for market in markets:
        stream = f"book.{market}"
        book = sub.view.books.get(stream)
        if book is not None and book != sim.truth(market):
            problems.append(f"{sub.name}: {stream} differs from the truth")
    problems += [f"{sub.name}: {p}" for p in trade_problems(sub, sim)]
    return problems


def trade_problems(sub: Subscriber, sim: Simulator) -> list[str]:
    """The same execution under two different positions is a duplicate; a resent initial
    value (same stream, epoch and seq, after a reconnect) is not."""
    positions: dict[str, set[tuple[str, int, int]]] = {}
    for match_number, stream, epoch, seq in sub.view.trades:
        positions.setdefault(match_number, set()).add((stream, epoch, seq))
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
    return [(state, reason) for s, state, reason in sub.view.statuses if stream in (None, s)]


def snapshot_reasons(sub: Subscriber) -> list[str]:
    return [s["reason"] for s in sub.view.snapshots]
