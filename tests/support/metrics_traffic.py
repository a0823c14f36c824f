"""A running gateway under real traffic, and its ``/metrics`` scraped with the official
Prometheus text parser: shared by the metrics tests (``tests/component/test_metrics.py``) and
the dashboard check (``tests/deploy/test_dashboard.py``).

Everything runs in-process: the simulator (a faithful Paxos), the gateway, and trio-websocket
subscribers on 127.0.0.1 with ephemeral ports. Every wait is a bounded poll (``trio.fail_after``)
on a scraped value or on a message, never a timed assertion. After ``drive_traffic`` every
metric family the gateway registers has samples, so "the dashboard queries only what /metrics
exposes" is checked against the real endpoint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.config import gateway_config

P = "paxos_gateway_"
MARKETS = ["BTCUSD", "ETHUSD"]
FEEDS = ("executiondata", "marketdata", "marketdata-stablecoin")
TIMEOUT = 15.0

# Buffers small enough that a resume replaying a stream's history overflows them at once
# (deterministic: no kernel socket buffer to fill first), large enough for a reading client.
BUFFER_BYTES = 8192
MAX_REQUEST_BYTES = 1024  # frames over 4 x this (4096) close the connection: reason "error"

# The metrics the operations issue asks for, with their Prometheus types.
EXPECTED_TYPES = {
    # lag
    "upstream_lag_seconds": "histogram",
    "publish_latency_seconds": "histogram",
    "upstream_last_message_age_seconds": "gauge",
    "subscriber_buffer_max_bytes": "gauge",
    "subscriber_buffered_bytes": "gauge",
    "subscriber_buffer_limit_bytes": "gauge",
    "subscriber_buffer_max_records": "gauge",
    "subscriber_buffered_records": "gauge",
    # reconnects
    "upstream_reconnects": "counter",
    "upstream_connect_failures": "counter",
    "upstream_connected": "gauge",
    "upstream_disconnected_seconds": "counter",
    "book_resnapshots": "counter",
    "crossed_books": "counter",
    # traffic
    "upstream_messages": "counter",
    "upstream_received_bytes": "counter",
    "records_published": "counter",
    "deliveries": "counter",
    "sent_bytes": "counter",
    "decode_errors": "counter",
    "duplicates_suppressed": "counter",
    "upstream_error_frames": "counter",
    # backfill (issue 17)
    "backfill_requests": "counter",
    "backfilled_executions": "counter",
    "backfill_known_gaps": "counter",
    "backfill_failures": "counter",
    "backfill_duplicates": "counter",
    "backfill_held_executions": "gauge",
    # subscribers
    "subscribers": "gauge",
    "subscriptions": "gauge",
    "subscriber_disconnects": "counter",
    "conflations": "counter",
    "resumes": "counter",
    "request_errors": "counter",
    "rejected_connections": "counter",
    "auth_enabled": "gauge",
    # process
    "ready": "gauge",
    "info": "gauge",
    "config_errors": "counter",
    "ops_http_requests": "counter",
    "ops_http_shed_connections": "counter",
    "tasks": "gauge",
}

# Every label the gateway may use: all of them have small, fixed value sets (or the feed names
# of the configuration). Nothing per subscriber, per connection, per market or per stream.
ALLOWED_LABELS = {
    "feed", "kind", "reason", "stream_kind", "result", "code", "path", "le", "source",
    "endpoint", "outcome",
}  # fmt: skip
INFO_LABELS = {"version", "epoch"}


# -- scraping ---------------------------------------------------------------------------------


@dataclass
class Scrape:
    text: str
    types: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            scrape.types[family.name] = family.type
            scrape.samples.extend(family.samples)
        return scrape

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == P + name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum over the samples of ``name`` matching ``labels`` (0 if none)."""
        return sum(s.value for s in self.find(name, **labels))

    def series(self) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items()))) for s in self.samples}


async def http_get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def scrape(gateway: Gateway) -> Scrape:
    status, body = await http_get(gateway.metrics_url, "/metrics")
    assert status == 200, body[:200]
    return Scrape.parse(body.decode())


async def scrape_until(gateway: Gateway, what: str, predicate: Any) -> Scrape:
    """Scrape until ``predicate(scrape)`` holds; fails naming ``what`` after TIMEOUT."""
    last: Scrape | None = None
    try:
        with trio.fail_after(TIMEOUT):
            while True:
                last = await scrape(gateway)
                if predicate(last):
                    return last
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"never observed on /metrics: {what}") from None


# -- running a gateway ------------------------------------------------------------------------


@dataclass
class Running:
    sim: Simulator
    gateway: Gateway
    nursery: trio.Nursery


@asynccontextmanager
async def running_gateway(**sets: str) -> AsyncIterator[Running]:
    sim = Simulator(
        SimulatorConfig(seed=7, markets=MARKETS, levels=20, rate=400.0, execution_ratio=0.3)
    )
    async with trio.open_nursery() as nursery:
        sim_url = await nursery.start(sim.serve)
        config = gateway_config(
            sim_url,
            **{
                "backfill.enabled": "true",
                "backfill.rest_url": sim.rest_url,
                "server.buffer_bytes": str(BUFFER_BYTES),
                "server.max_request_bytes": str(MAX_REQUEST_BYTES),
                # The tiny buffer is meant for the clients that overflow it on purpose; the
                # kernel's autotuned send buffer keeps the others (a "*.*" reader on a loaded
                # runner) clear of it, as before server.send_buffer_bytes existed.
                "server.send_buffer_bytes": "0",
                **sets,
            },
        )
        gateway = Gateway(config, handle_signals=False)
        await nursery.start(gateway.serve)
        try:
            yield Running(sim, gateway, nursery)
        finally:
            gateway.request_shutdown()
            with trio.fail_after(10):
                await gateway.stopped.wait()
            nursery.cancel_scope.cancel()


async def wait_ready(gateway: Gateway) -> None:
    """Ready, and the first backfill done: its release of the executions held meanwhile is
    one burst, which the tiny BUFFER_BYTES of these tests must not meet by chance."""
    with trio.fail_after(TIMEOUT):
        while not gateway.readiness.check(trio.current_time()).ready or any(
            f.session.tape is not None and (f.session.tape.pending() or f.session.tape.holding_all)
            for f in gateway.feeds
        ):
            await trio.sleep(0.02)


class Client:
    """A trio-websocket subscriber that reads everything in a task of its own."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.received = trio.Event()  # set (and replaced) on every message

    async def request(self, request: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(request))

    async def read(self) -> None:
        try:
            while True:
                self.messages.append(json.loads(await self.ws.get_message()))
                self.received.set()
                self.received = trio.Event()
        except ConnectionClosed as closed:
            self.close_code = closed.reason.code if closed.reason is not None else None
            self.received.set()

    def records(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [
            m for m in self.messages if "seq" in m and (stream is None or m["stream"] == stream)
        ]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def wait_for(self, what: str, predicate: Any) -> None:
        try:
            with trio.fail_after(TIMEOUT):
                while not predicate(self):
                    if self.close_code is not None:
                        raise AssertionError(f"closed ({self.close_code}) before {what}")
                    await self.received.wait()
        except trio.TooSlowError:
            raise AssertionError(f"subscriber never got {what}") from None


@asynccontextmanager
async def client(gateway: Gateway, path: str = "/v1/stream") -> AsyncIterator[Client]:
    async with open_websocket_url(gateway.subscriber_url + path) as ws:
        c = Client(ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.read)
            try:
                yield c
            finally:
                nursery.cancel_scope.cancel()


async def raw_upgrade_status(gateway: Gateway, path: str) -> int:
    """The HTTP status of a WebSocket upgrade to ``path``."""
    host, port = gateway.subscriber_url.removeprefix("ws://").rsplit(":", 1)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n\r\n" not in data and (chunk := await stream.receive_some()):
                data += chunk
    return int(data.split()[1])


# -- the traffic ------------------------------------------------------------------------------


@dataclass
class Observed:
    """Scrapes taken at the moments the assertions are about."""

    start: Scrape
    with_subscribers: Scrape
    more_subscribers: Scrape
    upstream_down: Scrape
    down_longer: Scrape
    end: Scrape


async def drive_traffic(r: Running) -> Observed:
    """Subscribers, request errors, resumes, a conflation, slow and oversized-frame disconnects,
    malformed upstream frames, a crossed book and an outage with refused reconnects."""
    sim, gw = r.sim, r.gateway
    await wait_ready(gw)
    start = await scrape(gw)

    assert await raw_upgrade_status(gw, "/nope") == 404  # rejected_connections{not_found}
    async with client(gw) as a, client(gw, "/v1/book/BTCUSD") as b:
        await a.request({"op": "subscribe", "id": 1, "streams": ["*.*"]})
        await a.request({"op": "nope", "id": 2})  # request_errors{unknown_op}
        await a.request({"op": "ping", "id": "x" * (2 * MAX_REQUEST_BYTES)})  # too_large
        await a.wait_for(
            "a history deep enough to overflow a buffer when resumed",
            lambda c: len(c.records("book.BTCUSD")) > 200 and len(c.records("trades.BTCUSD")) > 60,
        )
        assert {e["code"] for e in a.of_type("error")} == {"unknown_op", "too_large"}
        await b.wait_for("its snapshot", lambda c: c.of_type("book_snapshot"))
        with_subscribers = await scrape(gw)

        # The same kinds of subscribers again: no series may be added per subscriber.
        async with client(gw) as c1, client(gw, "/v1/book/BTCUSD") as c2:
            await c1.request({"op": "subscribe", "id": 1, "streams": ["*.*"]})
            await c1.wait_for("records", lambda c: len(c.records()) > 5)
            await c2.wait_for("its snapshot", lambda c: c.of_type("book_snapshot"))
            more_subscribers = await scrape(gw)

        epoch = gw.epoch
        async with client(gw) as c:
            # One resume served, one refused (a gateway restart as the client sees it).
            await c.request({
                "op": "subscribe", "id": 1,
                "streams": ["status.marketdata", "status.executiondata"],
                "resume": {"status.marketdata": {"epoch": epoch, "seq": 1},
                           "status.executiondata": {"epoch": str(int(epoch) - 1), "seq": 1}},
            })  # fmt: skip
            await c.wait_for("resumed", lambda c: c.of_type("resumed"))
            await c.wait_for("resume_failed", lambda c: c.of_type("resume_failed"))

        # Resuming a book from its first record replays more than the buffer holds: the
        # backlog is conflated into one snapshot (slow_policy "conflate").
        async with client(gw) as c:
            await c.request({
                "op": "subscribe", "id": 1, "streams": ["book.BTCUSD"],
                "resume": {"book.BTCUSD": {"epoch": epoch, "seq": 1}},
            })  # fmt: skip
            await c.wait_for(
                "a conflation snapshot",
                lambda c: any(s.get("reason") == "conflation" for s in c.of_type("book_snapshot")),
            )

        # Trades are never dropped: the same overflow on a trades stream is a slow disconnect.
        async with client(gw) as c:
            await c.request({
                "op": "subscribe", "id": 1, "streams": ["trades.BTCUSD"],
                "resume": {"trades.BTCUSD": {"epoch": epoch, "seq": 1}},
            })  # fmt: skip
            with trio.fail_after(TIMEOUT):
                while c.close_code is None:
                    await c.received.wait()
            assert c.close_code == 4008

        # A frame over 4 x max_request_bytes closes the connection (1009): reason "error".
        async with client(gw) as c:
            await c.request({"op": "ping", "id": "x" * (5 * MAX_REQUEST_BYTES)})
            with trio.fail_after(TIMEOUT):
                while c.close_code is None:
                    await c.received.wait()
            assert c.close_code == 1009

        # Upstream faults, while a and b still receive.
        sim.faults.bad_frame_kinds = ("malformed",)
        sim.faults.bad_frame_probability = 0.2
        await scrape_until(gw, "decode errors", lambda s: s.value("decode_errors_total") >= 5)
        sim.faults.bad_frame_probability = 0.0

        assert sim.inject_crossed("BTCUSD") == 1
        await scrape_until(
            gw,
            "a crossed book repaired by a reconnect",
            lambda s: (
                s.value("crossed_books_total", feed="marketdata") >= 1
                and s.value("upstream_reconnects_total", feed="marketdata", reason="crossed_book")
                >= 1
                and s.value("upstream_connected", feed="marketdata") == 1
            ),
        )

        # Paused, so that the execution Paxos replays on connect is one already received.
        sim.pause()
        with trio.fail_after(TIMEOUT):
            await sim.wait_idle()  # the generation step under way when paused has finished
        last = {e.market: e.match_number for e in sim.sent_executions}
        await a.wait_for(
            "the last execution of every market",
            lambda c: set(last.values()) <= {t.get("match_number") for t in c.records()},
        )
        sim.refuse_upgrades(503)
        sim.drop_all()
        upstream_down = await scrape_until(
            gw,
            "every feed down with a refused reconnect",
            lambda s: all(
                s.value("upstream_connected", feed=f) == 0
                and s.value("upstream_connect_failures_total", feed=f, reason="handshake_rejected")
                >= 1
                for f in FEEDS
            ),
        )
        down_longer = await scrape_until(
            gw,
            "time disconnected growing during the outage",
            lambda s: all(
                s.value("upstream_disconnected_seconds_total", feed=f)
                > upstream_down.value("upstream_disconnected_seconds_total", feed=f)
                for f in FEEDS
            ),
        )
        assert down_longer.value("upstream_connected") == 0
        sim.refuse_upgrades(None)
        # (Not readiness: a feed that was ready is in its grace period, /readyz stays 200.)
        await scrape_until(
            gw,
            "every feed connected again, the replayed executions suppressed",
            lambda s: (
                all(s.value("upstream_connected", feed=f) == 1 for f in FEEDS)
                and s.value("duplicates_suppressed_total", feed="executiondata") >= len(MARKETS)
            ),
        )
        sim.resume()
        # Records flow again to a subscriber after the reconnect.
        seen = len(a.records())
        await a.wait_for("records after the reconnect", lambda c: len(c.records()) > seen + 20)

    end = await scrape_until(gw, "every subscriber gone", lambda s: s.value("subscribers") == 0)
    return Observed(start, with_subscribers, more_subscribers, upstream_down, down_longer, end)


# -- the tests --------------------------------------------------------------------------------
