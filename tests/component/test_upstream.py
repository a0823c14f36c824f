"""run_feed against the real simulator on 127.0.0.1 (ephemeral ports), under a MockClock.

The clock autojumps only after 50 ms of real idleness, so socket I/O on loopback completes
before virtual time moves, while backoff sleeps, ping intervals and timeouts take no real
time. Waits are event driven (every publish and every connection attempt wakes them) and
bounded in virtual time by ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events

from gateway.config import UpstreamConfig
from gateway.contract.records import BookSnapshot, BookUpdate, Record, Status, Trade
from gateway.ingest.book import OrderBook
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.connect_gate import ConnectGate
from gateway.io.metrics import Metrics
from gateway.io.upstream import run_feed
from gateway.io.upstream_health import FeedState
from gateway.io.upstream_target import verified_tls_context
from gateway.io.upstream_ws import UpstreamWebSocket
from gateway.retry.backoff import Backoff
from gateway.simulator import FaultConfig, SimulatorConfig
from gateway.simulator.server import Simulator

EPOCH = "1700000000000000000"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


def make_settings(**overrides: Any) -> UpstreamConfig:
    values: dict[str, Any] = {
        "backoff_initial": 1.0,
        "backoff_max": 16.0,
        "ping_interval": 5.0,
        "ping_timeout": 5.0,
        "connect_timeout": 5.0,
        "connect_interval": 0.0,
    }
    values.update(overrides)
    return UpstreamConfig(**values)


def sim_config(**overrides: Any) -> SimulatorConfig:
    # As fast as possible and bounded: a rate-limited generator would need an autojump per
    # step. No stablecoin ticker unless asked: its timer would keep virtual time moving.
    values: dict[str, Any] = {
        "seed": 7,
        "markets": ["BTCUSD"],
        "stablecoins": [],
        "levels": 20,
        "rate": 0.0,
        "max_events": 200,
    }
    values.update(overrides)
    return SimulatorConfig(**values)


class Changes:
    """Wakes waiters whenever something they might be waiting for happened."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(
        self, predicate: Callable[[], bool], within: float = 60.0, poll: float = 1.0
    ) -> None:
        with trio.fail_after(within):
            while not predicate():
                # The poll covers changes nobody notifies about (the simulator's side, frames
                # that publish nothing). Each poll of an idle test costs one autojump.
                with trio.move_on_after(poll):
                    await self._event.wait()


class RecordingGate(ConnectGate):
    """The real gate, plus the virtual time of every attempt it let through."""

    def __init__(self, interval: float, changes: Changes) -> None:
        super().__init__(interval)
        self.attempts: list[float] = []
        self._changes = changes

    async def wait(self) -> None:
        await super().wait()
        self.attempts.append(trio.current_time())
        self._changes.notify()


@dataclass
class Feed:
    """One run_feed task and everything it published."""

    name: str
    session: FeedNormalizer
    metrics: Metrics
    changes: Changes
    state: FeedState = field(init=False)
    records: list[Record] = field(default_factory=list)
    publish_monotonic: list[int] = field(default_factory=list)
    books: dict[str, OrderBook] = field(default_factory=dict)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    before_publish: Callable[[list[Record]], None] | None = None

    # The sink run_feed publishes into (what the hub is in the gateway).

    def register_book(self, stream: str, book: OrderBook) -> None:
        self.books[stream] = book

    def publish(self, records: Sequence[Record]) -> None:
        assert records, "empty batches are not published"
        if self.before_publish is not None:
            self.before_publish(list(records))
        self.records.extend(records)
        self.publish_monotonic.append(time.monotonic_ns())
        self.changes.notify()

    def statuses(self) -> list[tuple[str, str]]:
        stream = f"status.{self.name}"
        return [
            (r.state, r.reason)
            for r in self.records
            if isinstance(r, Status) and r.stream == stream
        ]

    def sample(self, metric: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(
            f"paxos_gateway_{metric}", {"feed": self.name, **labels}
        )
        return 0.0 if value is None else value

    def reconnects(self, reason: str) -> float:
        return self.sample("upstream_reconnects_total", reason=reason)

    def failures(self, reason: str) -> float:
        return self.sample("upstream_connect_failures_total", reason=reason)


@dataclass
class Rig:
    sim: Simulator
    nursery: trio.Nursery
    changes: Changes
    metrics: Metrics = field(default_factory=Metrics)

    def gate(self, interval: float = 0.0) -> RecordingGate:
        return RecordingGate(interval, self.changes)

    async def start_feed(
        self,
        path: str,
        *,
        settings: UpstreamConfig | None = None,
        gate: ConnectGate | None = None,
        seed: int = 1,
        url: str | None = None,
        before_publish: Callable[[list[Record]], None] | None = None,
        **kwargs: Any,
    ) -> Feed:
        spec = feed_from_url(url or self.sim.url + path)
        feed = Feed(spec.name, FeedNormalizer(spec, EPOCH), self.metrics, self.changes)
        feed.before_publish = before_publish

        async def run(task_status: trio.TaskStatus[FeedState]) -> None:
            with feed.scope:
                await run_feed(
                    spec, feed.session, feed, settings or make_settings(), self.metrics,
                    connect_gate=gate if gate is not None else self.gate(),
                    rng=random.Random(seed), task_status=task_status, **kwargs,
                )  # fmt: skip

        feed.state = await self.nursery.start(run)
        return feed


@asynccontextmanager
async def rig(config: SimulatorConfig | None = None) -> AsyncIterator[Rig]:
    sim = Simulator(config or sim_config())
    sim.pause()  # tests resume it once their feeds are connected (``generate``)
    with trio.fail_after(300):  # virtual seconds: a hang fails instead of blocking forever
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve)
            yield Rig(sim, nursery, Changes())
            nursery.cancel_scope.cancel()


def reference_delays(settings: UpstreamConfig, seed: int) -> Iterator[float]:
    backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng=random.Random(seed))
    while True:
        yield backoff.next_delay()


async def generate(rig: Rig, *feeds: Feed) -> None:
    """Once ``feeds`` are connected, generate every event and wait until they have them all."""
    await rig.sim.wait_for_connections(len(feeds))
    rig.sim.resume()
    await rig.sim.finished.wait()
    await rig.sim.wait_idle()
    sent = {c.path: c.messages_sent + c.bad_frames_sent for c in rig.sim.connections}
    assert len(sent) == len(feeds)
    await rig.changes.wait_until(
        lambda: all(f.state.messages >= sent[urlsplit(f.session.feed.url).path] for f in feeds)
    )


def book_of(feed: Feed, market: str) -> tuple[list[Any], list[Any]]:
    book = feed.session.books[market]
    return book.bids(), book.asks()


# -- connecting and publishing ------------------------------------------------------------


async def test_connects_and_publishes_records(clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        book = await r.start_feed("/marketdata/BTCUSD")
        trades = await r.start_feed("/executiondata/BTCUSD")
        await generate(r, book, trades)

        assert book.statuses() == [("connected", f"connected to {r.sim.url}/marketdata/BTCUSD")]
        data = [x for x in book.records if not isinstance(x, Status)]
        assert isinstance(data[0], BookSnapshot) and data[0].reason == "initial"
        assert all(isinstance(x, BookUpdate) for x in data[1:])
        assert book_of(book, "BTCUSD") == r.sim.truth("BTCUSD")
        assert book.publish_monotonic == sorted(book.publish_monotonic)
        assert book.books == {"book.BTCUSD": book.session.books["BTCUSD"]}  # registered

        executions = [e.match_number for e in r.sim.sent_executions if e.market == "BTCUSD"]
        published = [x.match_number for x in trades.records if isinstance(x, Trade)]
        assert published == executions[-len(published) :] and len(published) >= 2

        for feed in (book, trades):
            assert feed.state.connected and feed.state.connections == 1
            assert feed.state.last_message_at is not None
            # The last frame was received before its records were published.
            assert feed.state.last_message_monotonic_ns is not None
            assert feed.state.last_message_monotonic_ns <= feed.publish_monotonic[-1]
            assert feed.sample("upstream_connected") == 1.0
            assert feed.sample("upstream_received_bytes_total") > 0
        # Executions carry an exchange time: every trade executed since the connection opened
        # (less the 1 s that trimmed timestamps may lose) is one lag observation; the replayed
        # last execution, possibly hours old, would not be.
        opened = int(trades.records[0].receive_time) - 1_000_000_000
        live = [
            x for x in trades.records if isinstance(x, Trade) and int(x.exchange_time) >= opened
        ]
        assert trades.sample("upstream_lag_seconds_count") == len(live) >= len(published) - 1
        assert book.sample("upstream_lag_seconds_count") == 0.0


async def test_a_coalesce_window_publishes_the_same_records_in_fewer_batches(
    clock: trio.testing.MockClock,
) -> None:
    times: dict[str, list[float]] = {"plain": [], "windowed": []}
    books: dict[str, Any] = {}
    trades: dict[str, list[int]] = {}
    for name, window in (("plain", 0.0), ("windowed", 0.05)):
        async with rig(sim_config(rate=100.0, max_events=40)) as r:  # over 0.4 virtual s
            feed = await r.start_feed(
                "/marketdata/BTCUSD",
                settings=make_settings(coalesce_window=window),
                before_publish=lambda _, t=times[name]: t.append(trio.current_time()),
            )
            execs = await r.start_feed(
                "/executiondata/BTCUSD", settings=make_settings(coalesce_window=window)
            )
            await generate(r, feed, execs)
            assert book_of(feed, "BTCUSD") == r.sim.truth("BTCUSD")
            books[name] = book_of(feed, "BTCUSD")
            trades[name] = [x.match_number for x in execs.records if isinstance(x, Trade)]
    # The same simulation, the same records; the windowed reads at least 0.05 s apart.
    assert books["windowed"] == books["plain"] and trades["windowed"] == trades["plain"]
    windowed = times["windowed"]
    assert len(windowed) <= len(times["plain"]) / 3  # 40 messages, 0.4 s: about 9 reads
    # (The first two publishes are the connection's status and its first read.)
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(windowed[1:]))


# -- reconnecting -------------------------------------------------------------------------


async def test_reconnect_policy_prompt_after_data_backoff_after_failures(
    clock: trio.testing.MockClock,
) -> None:
    settings = make_settings()
    async with rig() as r:
        gate = r.gate(interval=0.5)
        feed = await r.start_feed("/marketdata/BTCUSD", settings=settings, gate=gate, seed=5)
        await generate(r, feed)

        async def dropped_after_its_snapshot(n: int, refuse: int | None = None) -> float:
            await r.changes.wait_until(lambda: feed.state.connections == n)
            await r.sim.wait_for_connections(1)
            await r.changes.wait_until(
                lambda: sum(isinstance(x, BookSnapshot) for x in feed.records) == n
            )
            r.sim.refuse_upgrades(refuse)
            dropped_at = trio.current_time()
            assert r.sim.drop_all() == 1
            return dropped_at

        # A flapping upstream that delivers data: every connection dropped right after its
        # snapshot, long before it lived 10 s. No failure: back at the next gate slot.
        for n in range(1, 5):
            dropped_at = await dropped_after_its_snapshot(n)
            await r.changes.wait_until(lambda n=n: len(gate.attempts) == n + 1)  # type: ignore[misc]
            assert gate.attempts[-1] == pytest.approx(max(dropped_at, gate.attempts[-2] + 0.5))
        assert feed.reconnects("connection_lost") == 4

        # Failures to connect grow the backoff, exponentially with jitter ...
        await dropped_after_its_snapshot(5, refuse=503)
        await r.changes.wait_until(lambda: len(gate.attempts) == 6)  # prompt: data came
        expected = reference_delays(settings, seed=5)
        for k in range(4):
            await r.changes.wait_until(lambda k=k: len(gate.attempts) == 7 + k)  # type: ignore[misc]
            assert gate.attempts[-1] - gate.attempts[-2] == pytest.approx(next(expected), abs=1e-6)
        assert feed.failures("handshake_rejected") >= 4

        # ... and the first connection that delivers data ends the streak.
        r.sim.refuse_upgrades(None)
        dropped_at = await dropped_after_its_snapshot(6)
        await r.changes.wait_until(lambda: feed.state.connections == 7 and feed.session.ready)
        assert gate.attempts[-1] == pytest.approx(max(dropped_at, gate.attempts[-2] + 0.5))

        url = f"{r.sim.url}/marketdata/BTCUSD"
        assert feed.statuses()[:4] == [
            ("connected", f"connected to {url}"),
            ("disconnected", "connection_lost"),
            ("connected", f"connected to {url}"),
            ("disconnected", "connection_lost"),
        ]
        # Each connection starts over from a fresh snapshot that replaces the book.
        snapshots = [x for x in feed.records if isinstance(x, BookSnapshot)]
        assert [s.reason for s in snapshots] == ["initial"] + ["reconnect"] * 6
        assert book_of(feed, "BTCUSD") == r.sim.truth("BTCUSD")
        assert feed.sample("upstream_disconnected_seconds_total") > 0


@pytest.mark.parametrize(("code", "prompt"), [(1001, True), (1000, False)])
async def test_going_away_reconnects_promptly_even_without_data(
    clock: trio.testing.MockClock, code: int, prompt: bool
) -> None:
    """A server's 1001 "going away" (a deploy, a failover) is no failure, data or not; any
    other close of a connection that delivered nothing is one."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(code, "bye")

    settings = make_settings()
    async with rig() as r:
        server = await r.nursery.start(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
        )
        gate = r.gate(interval=0.5)
        url = f"ws://127.0.0.1:{server.port}/marketdata/BTCUSD"
        feed = await r.start_feed("", url=url, settings=settings, gate=gate, seed=3)
        await r.changes.wait_until(lambda: len(gate.attempts) == 6)
        spacing = [b - a for a, b in zip(gate.attempts, gate.attempts[1:], strict=False)]
        if prompt:
            assert spacing == pytest.approx([0.5] * 5)
        else:
            expected = reference_delays(settings, seed=3)
            assert spacing == pytest.approx([next(expected) for _ in range(5)], abs=1e-6)
        assert feed.reconnects("closed_by_server") >= 5
        feed.scope.cancel()


async def test_crossed_book_reconnects_and_repairs(clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        feed = await r.start_feed("/marketdata/BTCUSD")
        await generate(r, feed)
        assert r.sim.inject_crossed("BTCUSD") == 1
        await r.changes.wait_until(lambda: feed.state.connections == 2)
        await r.sim.wait_for_connections(1)
        await r.sim.wait_idle()
        (conn,) = r.sim.connections
        await r.changes.wait_until(lambda: feed.session.ready)
        assert conn.messages_sent == 1  # the fresh snapshot
        assert feed.reconnects("crossed_book") == 1
        states = [s for s, _ in feed.statuses()]
        assert states == ["connected", "resyncing", "disconnected", "connected", "resynced"]
        assert book_of(feed, "BTCUSD") == r.sim.truth("BTCUSD")


# -- liveness -----------------------------------------------------------------------------


async def test_stalled_upstream_is_detected_by_ping_timeout(
    clock: trio.testing.MockClock,
) -> None:
    settings = make_settings(ping_interval=2.0, ping_timeout=3.0)
    async with rig() as r:
        feed = await r.start_feed("/marketdata/BTCUSD", settings=settings)
        await generate(r, feed)
        stalled_at = trio.current_time()
        assert r.sim.stall() == 1
        await r.changes.wait_until(lambda: feed.reconnects("ping_timeout") == 1)
        down = feed.state.disconnected_since
        assert down is not None
        # At most one interval until the next ping, then the pong timeout.
        assert 3.0 <= down - stalled_at <= 2.0 + 3.0 + 1e-6
        await r.changes.wait_until(lambda: feed.state.connections == 2)
        # The dead connection's socket was really closed: once the simulator's side can move
        # again, it finds the peer gone (an open socket would stay, answering pings).
        r.sim.unstall()
        await r.changes.wait_until(lambda: len(r.sim.connections) == 1, within=5, poll=0.1)
        assert feed.state.connections == 2
    assert ("disconnected", "ping_timeout") in feed.statuses()


@pytest.fixture
def pongs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The trio time of every client ping that got its pong."""
    seen: list[float] = []
    original = UpstreamWebSocket.ping

    async def spy(self: UpstreamWebSocket) -> None:
        await original(self)
        seen.append(trio.current_time())

    monkeypatch.setattr(UpstreamWebSocket, "ping", spy)
    return seen


async def test_idle_but_alive_upstream_is_not_disconnected(
    clock: trio.testing.MockClock, pongs: list[float]
) -> None:
    settings = make_settings(ping_interval=2.0, ping_timeout=2.0)
    async with rig(sim_config(max_events=None)) as r:
        r.sim.pause()  # nothing ever happens in this market
        feed = await r.start_feed("/executiondata/BTCUSD", settings=settings)
        await r.changes.wait_until(lambda: feed.state.messages == 1)  # the replayed execution
        start = trio.current_time()
        await trio.sleep(40.0)  # 20 ping rounds without a single data frame
        # Liveness really was checked, and answered, all along.
        assert len([t for t in pongs if t > start]) >= 19
        assert feed.state.connected
        assert feed.state.connections == 1
        assert feed.state.messages == 1
        age = feed.state.last_message_age(trio.current_time())
        assert age is not None and age >= 40.0
        assert feed.statuses() == [("connected", f"connected to {r.sim.url}/executiondata/BTCUSD")]


# -- bad input from upstream --------------------------------------------------------------


async def test_malformed_frames_are_counted_and_survived(clock: trio.testing.MockClock) -> None:
    faults = FaultConfig(
        bad_frame_probability=0.3, bad_frame_kinds=("malformed", "truncated", "wrong_types")
    )
    async with rig(sim_config(faults=faults)) as r:
        feed = await r.start_feed("/marketdata/BTCUSD")
        await generate(r, feed)
        (conn,) = r.sim.connections
        assert conn.bad_frames_sent > 10
        assert feed.session.stats.decode_errors == conn.bad_frames_sent
        assert feed.state.connections == 1 and feed.state.connected
        assert book_of(feed, "BTCUSD") == r.sim.truth("BTCUSD")


async def test_oversized_frame_closes_and_reconnects(clock: trio.testing.MockClock) -> None:
    faults = FaultConfig(
        bad_frame_probability=0.02, bad_frame_kinds=("oversized",), oversized_bytes=300_000
    )
    async with rig(sim_config(faults=faults)) as r:
        feed = await r.start_feed(
            "/marketdata/BTCUSD", settings=make_settings(max_message_bytes=4096)
        )
        await r.sim.wait_for_connections(1)
        r.sim.resume()
        await r.changes.wait_until(lambda: feed.reconnects("message_too_big") >= 1)
        await r.changes.wait_until(lambda: feed.state.connections >= 2)
    assert ("disconnected", "message_too_big") in feed.statuses()


async def test_error_frame_for_unknown_market_backs_off_and_retries(
    clock: trio.testing.MockClock,
) -> None:
    settings = make_settings()
    async with rig() as r:
        gate = r.gate()
        feed = await r.start_feed("/marketdata/XYZUSD", settings=settings, gate=gate, seed=9)
        await r.changes.wait_until(lambda: len(gate.attempts) == 5)
        # Each "Not Found" connection counts as unhealthy: the delays follow the growing
        # streak, they are never reset to the floor.
        expected = reference_delays(settings, seed=9)
        gaps = [b - a for a, b in zip(gate.attempts, gate.attempts[1:], strict=False)]
        assert gaps == pytest.approx([next(expected) for _ in gaps], abs=1e-6)
        assert feed.reconnects("error_frame") == 4
        assert feed.session.stats.error_frames == 4
        assert feed.statuses()[:2] == [
            ("connected", f"connected to {r.sim.url}/marketdata/XYZUSD"),
            ("disconnected", "error_frame"),
        ]
        assert feed.state.last_reason == "error_frame"


@pytest.mark.parametrize("status", [404, 503])
async def test_refused_handshake_is_a_counted_failure_with_backoff(
    clock: trio.testing.MockClock, status: int
) -> None:
    settings = make_settings()
    async with rig() as r:
        r.sim.refuse_upgrades(status)
        gate = r.gate()
        feed = await r.start_feed("/marketdata/BTCUSD", settings=settings, gate=gate, seed=3)
        await r.changes.wait_until(lambda: len(gate.attempts) == 4)
        assert feed.failures("handshake_rejected") == 3
        assert feed.state.failed_attempts == 3
        assert not feed.state.connected
        assert feed.records == []  # never connected: no status to publish
        expected = reference_delays(settings, seed=3)
        gaps = [b - a for a, b in zip(gate.attempts, gate.attempts[1:], strict=False)]
        assert gaps == pytest.approx([next(expected) for _ in gaps], abs=1e-6)

        r.sim.refuse_upgrades(None)
        await r.changes.wait_until(lambda: feed.state.connected)
        assert feed.state.failed_attempts == 0
        assert feed.sample("upstream_disconnected_seconds_total") == pytest.approx(
            gate.attempts[-1] - gate.attempts[0], abs=1e-6
        )


async def test_connect_failures_are_classified(clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        # wss to the plain-TCP simulator: the TLS handshake fails at once, not by timeout.
        tls_gate = r.gate()
        tls = await r.start_feed(
            "", url=r.sim.url.replace("ws://", "wss://") + "/marketdata", gate=tls_gate
        )
        # A port nobody listens on (bound, then released).
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free_port = s.getsockname()[1]
        refused = await r.start_feed("", url=f"ws://127.0.0.1:{free_port}/executiondata")
        # A listener that accepts TCP but never answers the WebSocket handshake.
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        mute_port = listeners[0].socket.getsockname()[1]
        await r.nursery.start(trio.serve_listeners, _never_answer, listeners)
        silent = await r.start_feed(
            "", url=f"ws://127.0.0.1:{mute_port}/marketdata/stablecoin",
            settings=make_settings(connect_timeout=3.0),
        )  # fmt: skip
        await r.changes.wait_until(
            lambda: (
                tls.failures("tls_error") >= 2
                and refused.failures("connect_refused") >= 2
                and silent.failures("connect_timeout") >= 1
            )
        )
        assert not (tls.state.connected or refused.state.connected or silent.state.connected)
        # Only the backoff (<= 2 s on the first retry) separates the TLS attempts: the failed
        # handshake was reported at once, not after the 5 s connect timeout.
        assert tls_gate.attempts[1] - tls_gate.attempts[0] <= 2.0


def test_tls_verification_cannot_be_switched_off() -> None:
    assert verified_tls_context().verify_mode == ssl.CERT_REQUIRED
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="must verify"):
        verified_tls_context(insecure)


async def _never_answer(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def test_dns_failure_is_classified(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoDns(trio.abc.HostnameResolver):
        async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    trio.socket.set_custom_hostname_resolver(NoDns())
    try:
        async with rig() as r:
            feed = await r.start_feed("", url="wss://ws.example.invalid/marketdata")
            await r.changes.wait_until(lambda: feed.failures("dns_error") >= 1)
    finally:
        trio.socket.set_custom_hostname_resolver(None)


# -- shutdown ---------------------------------------------------------------------------------


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str | None, float, float]]:
    """Every client-side WebSocket close: (code, reason, started, finished) in trio time."""
    seen: list[tuple[int, str | None, float, float]] = []
    original = UpstreamWebSocket.aclose

    async def spy(self: UpstreamWebSocket, code: int = 1000, reason: str = "") -> None:
        started = trio.current_time()
        try:
            await original(self, code, reason)
        finally:
            seen.append((code, reason, started, trio.current_time()))

    monkeypatch.setattr(UpstreamWebSocket, "aclose", spy)
    return seen


async def test_cancellation_closes_cleanly(
    clock: trio.testing.MockClock, closes: list[tuple[int, str | None, float, float]]
) -> None:
    async with rig() as r:
        feed = await r.start_feed("/marketdata/BTCUSD", close_timeout=2.0)
        await generate(r, feed)
        feed.scope.cancel()
        await r.changes.wait_until(lambda: not feed.state.connected)
        # The simulator saw the close and forgot the connection.
        await r.changes.wait_until(lambda: not r.sim.connections, within=1, poll=0.05)
    (code, reason, started, finished) = closes[-1]
    assert code == 1000 and reason == "gateway shutting down"
    # The server answered the close frame: a timed-out close would have taken 2 s.
    assert finished - started < 0.5
    assert feed.statuses()[-1] == ("disconnected", "cancelled")
    assert feed.state.last_reason == "cancelled"
    assert feed.sample("upstream_connected") == 0.0
    assert feed.reconnects("cancelled") == 0.0
    assert feed.failures("cancelled") == 0.0


async def test_cancellation_of_a_stalled_connection_is_bounded(
    clock: trio.testing.MockClock, closes: list[tuple[int, str | None, float, float]]
) -> None:
    async with rig() as r:
        feed = await r.start_feed("/marketdata/BTCUSD", close_timeout=2.0)
        await generate(r, feed)
        r.sim.stall()
        cancelled_at = trio.current_time()
        with trio.fail_after(2.5):
            feed.scope.cancel()
            await r.changes.wait_until(lambda: feed.state.last_reason == "cancelled")
        assert trio.current_time() - cancelled_at <= 2.0 + 1e-6
    assert closes and closes[-1][0] == 1000


async def test_cancellation_while_backing_off(clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        r.sim.refuse_upgrades(503)
        gate = r.gate()
        feed = await r.start_feed("/marketdata/BTCUSD", gate=gate)
        await r.changes.wait_until(lambda: len(gate.attempts) == 2)
        feed.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert feed.scope.cancelled_caught
        assert feed.failures("handshake_rejected") >= 1


# -- the connect gate ---------------------------------------------------------------------


async def test_connect_gate_spaces_the_connections_of_all_feeds(
    clock: trio.testing.MockClock,
) -> None:
    async with rig(sim_config(markets=["BTCUSD", "ETHUSD"])) as r:
        gate = r.gate(interval=1.0)
        # Same seed: equal backoff delays, so only the gate can keep them apart.
        a = await r.start_feed("/marketdata/BTCUSD", gate=gate, seed=4)
        b = await r.start_feed("/marketdata/ETHUSD", gate=gate, seed=4)
        await r.changes.wait_until(lambda: a.state.connected and b.state.connected)
        assert r.sim.drop_all() == 2
        await r.changes.wait_until(lambda: a.state.connections == 2 and b.state.connections == 2)
        assert len(gate.attempts) == 4
        assert a.state.since is not None and b.state.since is not None
        assert abs(a.state.since - b.state.since) >= 1.0 - 1e-9
    first, second = gate.attempts[:2], gate.attempts[2:]
    for pair in (first, second):
        assert pair[1] - pair[0] >= 1.0 - 1e-9
    # Both dropped at once with equal backoff: without the gate they would have reconnected
    # at the same instant.
    assert second[0] > first[1]


# -- robustness -----------------------------------------------------------------------------


async def test_a_failing_consumer_is_logged_and_the_feed_reconnects(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig() as r:
        failures = [RuntimeError("hub bug")]

        def fail_once(records: list[Record]) -> None:
            if failures and any(isinstance(x, BookSnapshot) for x in records):
                raise failures.pop()

        feed = await r.start_feed("/marketdata/BTCUSD", before_publish=fail_once)
        await r.changes.wait_until(lambda: feed.state.connections == 2 and feed.session.ready)
        assert feed.reconnects("internal_error") == 1
        assert feed.state.connected
    errors = [x for x in caplog.records if x.levelname == "ERROR" and x.name == "gateway.upstream"]
    assert len(errors) == 1
    assert vars(errors[0])["event"] == "error"
    assert vars(errors[0])["reason"] == "internal_error"
    assert errors[0].exc_info is not None


async def test_oversized_fragmented_message_is_message_too_big(
    clock: trio.testing.MockClock,
) -> None:
    """Two oversized fragments in one read make trio-websocket try to close twice, which it
    reports as a LocalProtocolError from its reader task; it must still read as
    message_too_big and lead to a reconnect, not an internal error.

    A scripted server, not the simulator: only it controls how frames share a TCP segment.
    """
    fragment = b"x" * 5000

    def frame(first: bool, fin: bool) -> bytes:
        opcode = 0x1 if first else 0x0
        return bytes([(0x80 if fin else 0) | opcode, 126]) + len(fragment).to_bytes(2) + fragment

    async def serve(stream: trio.SocketStream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        async with stream:
            while True:
                ws.receive_data(await stream.receive_some(65536))
                if any(isinstance(e, wsproto.events.Request) for e in ws.events()):
                    break
            await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
            await stream.send_all(frame(True, False) + frame(False, True))
            with trio.move_on_after(5):
                while await stream.receive_some(65536):
                    pass

    async with rig() as r:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await r.nursery.start(trio.serve_listeners, serve, listeners)
        feed = await r.start_feed(
            "", url=f"ws://127.0.0.1:{port}/marketdata/BTCUSD",
            settings=make_settings(max_message_bytes=4096),
        )  # fmt: skip
        await r.changes.wait_until(lambda: feed.reconnects("message_too_big") >= 2)
        assert feed.reconnects("internal_error") == 0
        assert feed.reconnects("protocol_error") == 0
