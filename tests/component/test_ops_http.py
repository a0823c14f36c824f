from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from gateway.io.ops_http import OpsServer
from gateway.io.ops_slots import OpsSlot, OpsSlots
from gateway.io.readiness import FeedHealth, Readiness

TIMEOUT = 10.0


@dataclass
class Probe:
    feeds: dict[str, FeedHealth] = field(default_factory=dict)

    def set(self, name: str, ready: bool, reason: str = "", required: bool = True) -> None:
        self.feeds[name] = FeedHealth(name=name, required=required, ready=ready, reason=reason)

    def __call__(self) -> list[FeedHealth]:
        return list(self.feeds.values())


@dataclass
class Running:
    server: OpsServer
    port: int
    probe: Probe
    readiness: Readiness
    registry: CollectorRegistry


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def start(
    nursery: trio.Nursery, *, grace: float = 30.0, max_connections: int = 64
) -> Running:
    registry = CollectorRegistry()
    probe = Probe()
    readiness = Readiness(probe, grace=grace)
    server = OpsServer(
        registry, readiness, host="127.0.0.1", port=0,
        request_timeout=TIMEOUT, max_connections=max_connections,
    )  # fmt: skip
    port = await nursery.start(server.serve)
    assert server.port == port
    return Running(server, port, probe, readiness, registry)


@pytest.fixture
async def ops(nursery: trio.Nursery) -> AsyncIterator[Running]:
    yield await start(nursery)


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def parse(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), headers, body)


async def raw_request(port: int, data: bytes) -> Response:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        return parse(await read_all(stream))


async def get(port: int, path: str, method: str = "GET") -> Response:
    request = f"{method} {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n"
    return await raw_request(port, request.encode())


# -- endpoints


async def test_metrics_is_prometheus_text_of_the_registry(ops: Running) -> None:
    Counter("paxos_gateway_test_things", "Things.", ["kind"], registry=ops.registry).labels(
        kind="a"
    ).inc(3)
    response = await get(ops.port, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert int(response.headers["content-length"]) == len(response.body)
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    sample = families["paxos_gateway_test_things"].samples[0]
    assert (sample.labels, sample.value) == ({"kind": "a"}, 3.0)
    # The endpoint counts itself: this scrape is visible in the next one.
    again = await get(ops.port, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(again.body.decode())}
    counted = {
        (s.labels["path"], s.labels["code"]): s.value
        for s in families["paxos_gateway_ops_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert counted[("/metrics", "200")] == 1.0


async def test_healthz_reports_ok_and_uptime(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    ops = await start(nursery)
    mock_clock.jump(42.5)
    response = await get(ops.port, "/healthz")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "ok"
    assert body["uptime_seconds"] == 42.5


async def test_readyz_transitions_with_grace(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    ops = await start(nursery)
    ops.probe.set("marketdata", False, "connecting")
    ops.probe.set("executiondata", True)
    ops.probe.set("optional", False, "upstream refused", required=False)

    # Never ready yet: no grace for a feed that has no book to serve.
    response = await get(ops.port, "/readyz")
    assert response.status == 503
    assert response.json()["failing"] == [
        {"feed": "marketdata", "reason": "not ready yet: connecting"}
    ]

    ops.probe.set("marketdata", True)
    response = await get(ops.port, "/readyz")
    assert response.status == 200
    body = response.json()
    assert body["ready"] is True
    assert "failing" not in body
    assert body["feeds"]["optional"] == {
        "required": False, "ready": False, "reason": "upstream refused"
    }  # fmt: skip

    # A required feed drops: still ready for the grace period.
    ops.probe.set("marketdata", False, "disconnected: ping timeout")
    response = await get(ops.port, "/readyz")
    assert response.status == 200
    assert response.json()["feeds"]["marketdata"]["in_grace"] is True
    mock_clock.jump(30.0)
    assert (await get(ops.port, "/readyz")).status == 200  # exactly at the grace: still ready
    mock_clock.jump(0.5)
    response = await get(ops.port, "/readyz")
    assert response.status == 503
    (failing,) = response.json()["failing"]
    assert failing["feed"] == "marketdata"
    assert "down for 30.5s" in failing["reason"]
    assert "ping timeout" in failing["reason"]
    assert response.json()["feeds"]["marketdata"]["down_seconds"] == 30.5

    # Back up: ready at once; a later drop gets a fresh grace period.
    ops.probe.set("marketdata", True)
    assert (await get(ops.port, "/readyz")).status == 200
    ops.probe.set("marketdata", False, "disconnected again")
    assert (await get(ops.port, "/readyz")).status == 200


async def test_readyz_false_while_shutting_down(ops: Running) -> None:
    ops.probe.set("marketdata", True)
    assert (await get(ops.port, "/readyz")).status == 200
    ops.readiness.begin_shutdown()
    response = await get(ops.port, "/readyz")
    assert response.status == 503
    assert response.json()["failing"] == [{"feed": None, "reason": "shutting down"}]


async def test_watch_records_the_drop_time_between_probes(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    probe = Probe()
    readiness = Readiness(probe, grace=10.0)
    probe.set("f", True)
    nursery.start_soon(readiness.watch, 1.0)
    await trio.testing.wait_all_tasks_blocked()
    probe.set("f", False, "gone")
    mock_clock.jump(1.0)
    await trio.testing.wait_all_tasks_blocked()
    # Nobody probed while it was down, yet the grace counts from when watch saw it drop.
    report = readiness.check(trio.current_time() + 10.5)
    assert not report.ready
    assert report.body["feeds"]["f"]["down_seconds"] == 10.5


# -- robustness


async def test_unknown_path_is_404(ops: Running) -> None:
    response = await get(ops.port, "/admin")
    assert response.status == 404


async def test_query_string_is_ignored(ops: Running) -> None:
    assert (await get(ops.port, "/healthz?verbose=1")).status == 200


async def test_other_methods_are_405(ops: Running) -> None:
    request = (
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    response = await raw_request(ops.port, request)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_head_has_headers_but_no_body(ops: Running) -> None:
    response = await get(ops.port, "/healthz", method="HEAD")
    assert response.status == 200
    assert int(response.headers["content-length"]) > 0
    assert response.body == b""


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"this is not http\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
async def test_malformed_request_is_400(ops: Running, request_bytes: bytes) -> None:
    response = await raw_request(ops.port, request_bytes)
    assert response.status == 400
    assert response.headers["connection"] == "close"
    assert response.body.startswith(b"bad request")


async def test_oversized_request_head_is_refused(ops: Running) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    response = await raw_request(ops.port, request)
    assert response.status == 431


async def test_oversized_body_is_413(ops: Running) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n" + b"a" * 20000
    response = await raw_request(ops.port, request)
    assert response.status == 413


async def test_keep_alive_serves_several_requests_on_one_connection(ops: Running) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", ops.port)
    async with stream:
        await stream.send_all(one + one + last)  # pipelined
        raw = await read_all(stream)
    assert raw.count(b"HTTP/1.1 200 ") == 2
    assert raw.count(b"HTTP/1.1 404 ") == 1


async def test_slow_client_gets_408_after_the_timeout(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    ops = await start(nursery)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", ops.port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHo")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(TIMEOUT + 1)
        response = parse(await read_all(stream))
    assert response.status == 408
    # The server is unharmed.
    assert (await get(ops.port, "/healthz")).status == 200


async def test_idle_keep_alive_connection_is_closed_silently(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    ops = await start(nursery)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", ops.port)
    async with stream:
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(TIMEOUT + 1)
        assert await read_all(stream) == b""


def test_slots_refuse_only_when_every_slot_is_busy() -> None:
    slots = OpsSlots(total=2, per_address=2)
    a, b, c = OpsSlot("10.0.0.1"), OpsSlot("10.0.0.2"), OpsSlot("10.0.0.3")
    assert slots.admit(a) == [] and slots.admit(b) == []
    a.busy = b.busy = True
    assert slots.admit(c) is None  # both are answering a request: 503
    b.busy = False
    assert slots.admit(c) == [(b, "total")]
    d = OpsSlot("10.0.0.3")
    assert slots.admit(d) == [(c, "total")]  # the oldest idle one, not the busy a
    # Per address: the address's own oldest goes, idle first.
    slots = OpsSlots(total=10, per_address=2)
    first, second, third = OpsSlot("k"), OpsSlot("k"), OpsSlot("k")
    slots.admit(first), slots.admit(second)
    first.busy = True
    assert slots.admit(third) == [(second, "per_address")]
    assert len(slots) == 2


async def test_client_vanishing_mid_request_does_not_hurt_the_server(ops: Running) -> None:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", ops.port)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert (await get(ops.port, "/healthz")).status == 200


# -- issue 18: idle and slow connections never starve the probes


async def test_probes_answer_under_many_idle_and_slowloris_connections(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    # The default caps (64 in total, 8 per address): 200 connections from one address, half
    # silent, half sending a partial request head, then probes from the same address.
    ops = await start(nursery)
    ops.probe.set("marketdata", True)
    held: list[trio.SocketStream] = []
    try:
        with trio.fail_after(30):
            for i in range(200):
                stream = await trio.open_tcp_stream("127.0.0.1", ops.port)
                if i % 2:
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHo")
                held.append(stream)
            await trio.testing.wait_all_tasks_blocked()
        # No time passes: the probes are answered at once, not after a timeout.
        assert (await get(ops.port, "/healthz")).status == 200
        assert (await get(ops.port, "/readyz")).status == 200
    finally:
        for stream in held:
            await stream.aclose()
    text = (await get(ops.port, "/metrics")).body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    shed = {
        s.labels["reason"]: s.value
        for s in families["paxos_gateway_ops_http_shed_connections"].samples
        if s.name.endswith("_total")
    }
    assert shed["per_address"] >= 200 - 8
    assert set(shed) == {"per_address", "total"}


async def test_the_total_cap_sheds_the_oldest_idle_connection(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    registry = CollectorRegistry()
    probe = Probe()
    server = OpsServer(
        registry, Readiness(probe, grace=30.0), host="127.0.0.1", port=0,
        request_timeout=TIMEOUT, max_connections=4, max_connections_per_address=100,
    )  # fmt: skip
    port = await nursery.start(server.serve)
    with trio.fail_after(10):
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(6)]
        await trio.testing.wait_all_tasks_blocked()
        assert (await get(port, "/healthz")).status == 200
        # The three oldest were shed (closed without an answer); the three newest still wait.
        for stream in held[:3]:
            assert await read_all(stream) == b""
        await held[-1].send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert parse(await read_all(held[-1])).status == 200
    for stream in held:
        await stream.aclose()
