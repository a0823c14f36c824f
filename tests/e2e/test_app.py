"""The composed gateway in-process, against the in-process simulator (real loopback sockets)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, open_websocket_url

from gateway.app import Gateway, _url, shutdown_bound
from gateway.config import Config, load_config
from gateway.feed_readiness import not_ready_reason
from gateway.ingest.feeds import FeedSpec
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.upstream_health import FeedState
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.clients import RawSubscriber

MARKETS = ["BTCUSD", "ETHUSD"]


def gateway_config(sim: Simulator, **sets: str) -> Config:
    """The whole gateway as in production (backfill and market list on) against ``sim``."""
    overrides = {
        "upstream.base_url": sim.url,
        "backfill.rest_url": sim.rest_url,
        "upstream.allow_fast_retry": "true",
        "upstream.backoff_initial": "0.05",
        "upstream.backoff_max": "0.5",
        "upstream.connect_interval": "0",
        "server.port": "0",
        "metrics.host": '"127.0.0.1"',
        "metrics.port": "0",
        "shutdown.drain_timeout": "2",
        **sets,
    }
    return load_config(None, {}, [f"{k}={v}" for k, v in overrides.items()])


@dataclass
class Running:
    sim: Simulator
    gateway: Gateway


@pytest.fixture
async def running(nursery: trio.Nursery) -> AsyncIterator[Running]:
    sim = Simulator(SimulatorConfig(seed=3, markets=MARKETS, levels=20, rate=200.0))
    await nursery.start(sim.serve)
    gateway = Gateway(gateway_config(sim), handle_signals=False)
    await nursery.start(gateway.serve)
    yield Running(sim, gateway)
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()


async def wait_ready(gateway: Gateway) -> None:
    with trio.fail_after(10):
        # Readiness is a derived condition with no event to wait on: polling is the way.
        while not gateway.readiness.check(trio.current_time()).ready:
            await trio.sleep(0.02)


async def ready_gateway(
    nursery: trio.Nursery, *, seed: int, rate: float, drain_timeout: str
) -> Gateway:
    """A simulator with deep books (200 levels) and a gateway on it, ready."""
    sim = Simulator(SimulatorConfig(seed=seed, markets=MARKETS, levels=200, rate=rate))
    await nursery.start(sim.serve)
    config = gateway_config(sim, **{"shutdown.drain_timeout": drain_timeout})
    gateway = Gateway(config, handle_signals=False)
    await nursery.start(gateway.serve)
    await wait_ready(gateway)
    return gateway


async def http_get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_becomes_ready_and_reports_it(running: Running) -> None:
    gateway = running.gateway
    status, body = await http_get(gateway.metrics_url, "/readyz")
    # Right after start nothing has a snapshot yet, or everything already has: both are legal.
    assert status in (200, 503)
    await wait_ready(gateway)
    status, body = await http_get(gateway.metrics_url, "/readyz")
    assert status == 200, body
    report = json.loads(body)
    assert set(report["feeds"]) == {"executiondata", "marketdata", "marketdata-stablecoin"}


async def test_session_books_are_registered_with_the_hub(running: Running) -> None:
    await wait_ready(running.gateway)
    session = running.gateway.feeds[1].session
    assert set(session.books) == set(MARKETS)
    for market, book in session.books.items():
        stream = running.gateway.hub._streams[f"book.{market}"]
        # The hub serves late joiners from the session's book, not from a copy of its own.
        assert stream.book is book


async def test_metrics_include_the_collectors(running: Running) -> None:
    await wait_ready(running.gateway)
    async with open_websocket_url(running.gateway.subscriber_url + "/v1/stream") as ws:
        await ws.send_message(json.dumps({"op": "subscribe", "id": 1, "streams": ["trades.*"]}))
        with trio.fail_after(5):
            await ws.get_message()
        status, body = await http_get(running.gateway.metrics_url, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    ages = families["paxos_gateway_upstream_last_message_age_seconds"].samples
    assert {s.labels["feed"] for s in ages} == {
        "executiondata",
        "marketdata",
        "marketdata-stablecoin",
    }
    assert all(0 <= s.value < 10 for s in ages)
    messages = families["paxos_gateway_upstream_messages"].samples
    assert any(s.labels == {"feed": "marketdata", "kind": "snapshot"} for s in messages)
    (ready,) = families["paxos_gateway_ready"].samples
    assert ready.value == 1.0
    (limit,) = families["paxos_gateway_subscriber_buffer_limit_bytes"].samples
    assert limit.value == running.gateway.config.server.buffer_bytes
    (largest,) = families["paxos_gateway_subscriber_buffer_max_bytes"].samples
    assert 0 <= largest.value <= limit.value
    (info,) = families["paxos_gateway_info"].samples
    assert info.labels["epoch"] == str(running.gateway.epoch)


async def test_request_shutdown_closes_subscribers_with_1001_and_returns(
    nursery: trio.Nursery,
) -> None:
    sim = Simulator(SimulatorConfig(seed=4, markets=MARKETS, levels=20, rate=200.0))
    await nursery.start(sim.serve)
    gateway = Gateway(gateway_config(sim), handle_signals=False)
    await nursery.start(gateway.serve)
    await wait_ready(gateway)
    async with open_websocket_url(gateway.subscriber_url + "/v1/stream") as ws:
        await ws.send_message(json.dumps({"op": "subscribe", "id": 1, "streams": ["book.*"]}))
        with trio.fail_after(5):
            await ws.get_message()
        gateway.request_shutdown()
        assert not gateway.readiness.check(trio.current_time()).ready
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            for _ in range(1_000_000):
                await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1001
    with trio.fail_after(10):
        await gateway.stopped.wait()
    # Upstreams were closed, not abandoned.
    assert all(not feed.state.connected for feed in gateway.feeds)


async def test_second_request_cuts_the_drain_short(nursery: trio.Nursery) -> None:
    # As fast as the gateway reads, with deep books: far more than socket buffers hold.
    gateway = await ready_gateway(nursery, seed=5, rate=0.0, drain_timeout="60")
    async with open_websocket_url(gateway.subscriber_url + "/v1/stream") as ws:
        await ws.send_message(json.dumps({"op": "subscribe", "id": 1, "streams": ["book.*"]}))
        # This subscriber never reads again: its buffer cannot drain.
        await trio.sleep(0.5)
        gateway.request_shutdown()
        with trio.move_on_after(1.0):
            await gateway.stopped.wait()
        assert not gateway.stopped.is_set(), "the drain should still be waiting"
        gateway.request_shutdown()
        with trio.fail_after(10):
            await gateway.stopped.wait()


async def test_shutdown_fits_its_bound_whatever_the_subscribers_do(
    nursery: trio.Nursery, slow_autojump: trio.testing.MockClock
) -> None:
    """Issue 18: with drain_timeout=3 a SIGTERM took 5.1 s. Subscribers that drain but never
    answer the close frame, one that never reads at all, and upstream connections that close
    after the drain used to add up; in virtual time the whole shutdown must now fit
    ``shutdown_bound``."""
    gateway = await ready_gateway(nursery, seed=6, rate=5.0, drain_timeout="3")
    silent: list[RawSubscriber] = []
    for rcvbuf in (None, None, 4096):
        client = await RawSubscriber.connect(gateway.subscriber_url, "/v1/book/*", rcvbuf=rcvbuf)
        silent.append(client)

    async def read_and_never_close(client: RawSubscriber) -> None:
        # Takes every byte (the 1001 close frame too) but never sends a close frame back.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while await client.stream.receive_some(65536):
                pass

    async with trio.open_nursery() as readers:
        for client in silent[:2]:  # the third never reads: its buffers stay full
            readers.start_soon(read_and_never_close, client)
        await trio.sleep(0.5)
        start = trio.current_time()
        gateway.request_shutdown()
        with trio.fail_after(60):
            await gateway.stopped.wait()
        took = trio.current_time() - start
        readers.cancel_scope.cancel()
    for client in silent:
        await client.stream.aclose()
    assert took <= shutdown_bound(3.0) == 4.0, took
    assert all(not feed.state.connected for feed in gateway.feeds)


# -- pieces


def test_not_ready_reasons() -> None:
    spec = FeedSpec("marketdata", "ws://x/marketdata", "book", None)
    session = FeedNormalizer(spec, "1")
    state = FeedState("marketdata")
    assert not_ready_reason(session, state) == "connecting"
    state.last_reason = "connect_refused"
    assert not_ready_reason(session, state) == "disconnected (connect_refused), reconnecting"
    state.connected = True
    session.connected(0)
    assert not_ready_reason(session, state) == "waiting for the first snapshot"
    session.receive(_book_frame("UPDATE", "ETHUSD"), 0)  # a market appears, without a snapshot
    assert not_ready_reason(session, state) == "waiting for the snapshot of ETHUSD"
    session.resync_reason = "crossed book BTCUSD"
    assert not_ready_reason(session, state) == "resyncing: crossed book BTCUSD"


def test_not_ready_reason_after_a_reconnect_names_the_resync() -> None:
    """After an upstream drop every book has had a snapshot, so ``has_snapshot`` would claim
    "first snapshot"; the normalizer's sync states know it is waiting for fresh ones."""
    spec = FeedSpec("marketdata", "ws://x/marketdata", "book", None)
    session = FeedNormalizer(spec, "1")
    state = FeedState("marketdata", connected=True)
    session.connected(0)
    for market in ("BTCUSD", "ETHUSD"):
        session.receive(_book_frame("SNAPSHOT", market), 1)
    assert session.ready
    session.disconnected("connection_lost", 2)
    session.connected(3)
    assert not_ready_reason(session, state) == (
        "resyncing: waiting for a fresh snapshot of BTCUSD, ETHUSD"
    )
    session.receive(_book_frame("SNAPSHOT", "BTCUSD"), 4)
    assert not_ready_reason(session, state) == "resyncing: waiting for a fresh snapshot of ETHUSD"
    session.receive(_book_frame("SNAPSHOT", "ETHUSD"), 5)
    assert session.ready


def _book_frame(kind: str, market: str) -> bytes:
    if kind == "UPDATE":
        message: dict[str, object] = {
            "type": "UPDATE", "market": market, "side": "BUY", "price": "100", "amount": "1",
        }  # fmt: skip
    else:
        level = {"price": "100", "amount": "1"}
        message = {"type": "SNAPSHOT", "market": market, "bids": [level], "asks": []}
    return json.dumps(message).encode()


@pytest.mark.parametrize(
    ("scheme", "host", "expected"),
    [
        ("ws", "0.0.0.0", "ws://127.0.0.1:1"),
        ("http", "::", "http://[::1]:1"),
        ("ws", "::1", "ws://[::1]:1"),
        ("ws", "gw.example", "ws://gw.example:1"),
    ],
)
def test_printed_urls_are_connectable(scheme: str, host: str, expected: str) -> None:
    assert _url(scheme, host, 1) == expected
