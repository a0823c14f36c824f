"""Limits and access over real sockets (127.0.0.1, port 0): bearer tokens (401), the per-address
connection rate (429), max_subscribers (503), max_subscriptions, request size, the handshake
timeout. Raw HTTP clients where the exact bytes matter, the ``websockets`` client otherwise;
MockClock wherever time has to pass."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed

from gateway.app import Gateway
from gateway.config import ServerConfig
from gateway.fanout.access import ConnectionRateLimiter, TokenAuth
from gateway.fanout.hub import Hub
from gateway.io.metrics import HubStatsCollector, Metrics
from gateway.io.server import Server
from tests.support.clients import RawSubscriber, in_thread, open_client, recv_json
from tests.support.config import gateway_config
from tests.support.fake_feed import EPOCH

TIMEOUT = 20
TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    # Not zero: real loopback I/O must get a moment before virtual time jumps ahead.
    return trio.testing.MockClock(autojump_threshold=0.05)


@asynccontextmanager
async def serving(
    *,
    metrics: Metrics | None = None,
    tokens: tuple[str, ...] = (),
    rate: tuple[float, int] | None = None,
    **settings: Any,
) -> AsyncIterator[Server]:
    config = ServerConfig(host="127.0.0.1", port=0, **settings)
    hub = Hub.from_config(config, EPOCH)
    if metrics is not None:
        metrics.add_collector(HubStatsCollector(hub.stats))
    server = Server(
        hub,
        config,
        metrics,
        auth=TokenAuth(t.encode() for t in tokens) if tokens else None,
        rate_limiter=ConnectionRateLimiter(*rate) if rate else None,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


def upgrade(path: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def handshake(
    port: int, path: str = "/v1/stream", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the server's answer to an upgrade."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(upgrade(path, headers))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if status != 101:
            length = int(fields.get("content-length", "0"))
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                assert chunk
                body += chunk
        return status, fields, body
    finally:
        await stream.aclose()


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "paxos_gateway_rejected_connections_total", {"reason": reason}
    )
    return value or 0.0


# -- authentication -------------------------------------------------------------------------


async def test_the_right_token_is_accepted() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(tokens=("other-token-0000000000000", TOKEN)) as server:
            url = f"ws://127.0.0.1:{server.port}/v1/stream"

            def client() -> Any:
                headers = {"Authorization": f"Bearer {TOKEN}"}
                with open_client(url, additional_headers=headers) as ws:
                    return recv_json(ws)

            assert (await in_thread(client))["type"] == "hello"
            assert server.port is not None
            status, _, _ = await handshake(
                server.port, "/marketdata", {"authorization": f"bearer {TOKEN}"}
            )
            assert status == 101


async def test_missing_wrong_and_malformed_tokens_get_one_identical_401(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.server")
    metrics = Metrics()
    attempts: list[tuple[str, dict[str, str]]] = [
        ("/v1/stream", {}),
        ("/v1/stream", {"Authorization": "Bearer wrong-token-000000000000"}),
        ("/v1/stream", {"Authorization": f"Bearer {TOKEN}x"}),  # a prefix is no match
        ("/v1/stream", {"Authorization": f"Basic {TOKEN}"}),
        ("/v1/stream", {"Authorization": "Bearer"}),
        ("/v1/stream", {"Authorization": "Bearer not a token"}),
        # Tokens in the URL are never accepted (they leak into logs).
        (f"/v1/stream?access_token={TOKEN}", {}),
        # Before routing: an unauthenticated client cannot even probe which paths exist.
        ("/no/such/path", {}),
        ("/marketdata", {}),
    ]
    with trio.fail_after(TIMEOUT):
        async with serving(metrics=metrics, tokens=(TOKEN,)) as server:
            assert server.port is not None
            answers = [await handshake(server.port, p, h) for p, h in attempts]
    for status, headers, body in answers:
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer")
        assert body == b"unauthorized\n"
        # Nothing in the answer tells one failure from another.
        headers.pop("date", None)
        assert (status, headers, body) == (answers[0][0], answers[0][1], answers[0][2])
    assert rejected(metrics, "unauthorized") == len(attempts)
    lines = [r for r in caplog.records if r.getMessage() == "subscriber rejected"]
    assert lines
    for record in caplog.records:
        assert TOKEN not in str(record.__dict__)
        assert "wrong-token" not in str(record.__dict__)


# -- connection rate ------------------------------------------------------------------------


async def test_burst_then_429_then_recovery(mock_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    # 3 at once, then one per 100 (virtual) seconds.
    async with serving(metrics=metrics, rate=(0.01, 3), handshake_timeout=1000.0) as server:
        assert server.port is not None
        with trio.fail_after(600):  # virtual seconds; the jump below is part of them
            for _ in range(3):
                assert (await handshake(server.port))[0] == 101
            status, headers, body = await handshake(server.port)
            assert status == 429
            assert 99 <= int(headers["retry-after"]) <= 101
            assert b"retry later" in body
            assert rejected(metrics, "rate_limited") == 1
            mock_clock.jump(101)
            assert (await handshake(server.port))[0] == 101
            assert (await handshake(server.port))[0] == 429


async def test_failed_attempts_count_against_the_rate(mock_clock: trio.testing.MockClock) -> None:
    """Guessing tokens costs connections: the limit is checked before the token."""
    metrics = Metrics()
    async with serving(
        metrics=metrics, tokens=(TOKEN,), rate=(0.01, 3), handshake_timeout=1000.0
    ) as server:
        assert server.port is not None
        with trio.fail_after(600):  # virtual seconds; the jump below is part of them
            for _ in range(3):
                bad = {"Authorization": "Bearer guess-0000000000000000"}
                assert (await handshake(server.port, headers=bad))[0] == 401
            good = {"Authorization": f"Bearer {TOKEN}"}
            assert (await handshake(server.port, headers=good))[0] == 429
            mock_clock.jump(101)
            assert (await handshake(server.port, headers=good))[0] == 101
    assert rejected(metrics, "unauthorized") == 3
    assert rejected(metrics, "rate_limited") == 1


# -- the limits that were there before ------------------------------------------------------


async def test_max_subscribers_503() -> None:
    metrics = Metrics()
    with trio.fail_after(TIMEOUT):
        async with serving(metrics=metrics, max_subscribers=1) as server:
            assert server.port is not None
            holder = await trio.open_tcp_stream("127.0.0.1", server.port)
            await holder.send_all(upgrade("/v1/stream"))
            data = b""
            while b"\r\n\r\n" not in data:
                data += await holder.receive_some(65536)
            assert data.startswith(b"HTTP/1.1 101")
            status, headers, _ = await handshake(server.port)
            assert status == 503
            assert headers["retry-after"] == "5"
            await holder.aclose()
    assert rejected(metrics, "max_subscribers") == 1


async def test_max_subscriptions_and_request_size() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(max_subscriptions=2, max_request_bytes=1024) as server:
            url = f"ws://127.0.0.1:{server.port}/v1/stream"

            def client() -> tuple[list[str], int | None]:
                codes = []
                with open_client(url) as ws:
                    recv_json(ws)  # hello
                    subscribe = {"op": "subscribe", "id": 1, "streams": ["*.*", "book.*"]}
                    ws.send(json.dumps(subscribe))
                    ws.send(json.dumps({**subscribe, "id": 2, "streams": ["trades.*"]}))
                    ws.send(json.dumps({"op": "ping", "id": "x" * 2000}))
                    for _ in range(20):
                        message = recv_json(ws)
                        if message.get("type") == "error":
                            codes.append(message["code"])
                        if len(codes) == 2:
                            break
                    ws.send("x" * 5000)  # beyond 4 x max_request_bytes: the connection goes
                    with pytest.raises(ConnectionClosed) as info:
                        for _ in range(20):
                            ws.recv(timeout=10)
                    return codes, info.value.rcvd.code if info.value.rcvd else None

            codes, close = await in_thread(client)
            assert codes == ["too_many_subscriptions", "too_large"]
            assert close == 1009


async def test_silent_client_is_dropped_after_the_handshake_timeout(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with serving(handshake_timeout=5.0) as server:
        assert server.port is not None
        with trio.fail_after(60):
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            slow = await trio.open_tcp_stream("127.0.0.1", server.port)
            await slow.send_all(upgrade("/v1/stream")[:30])  # half a request, never the rest
            start = trio.current_time()
            assert await silent.receive_some(65536) == b""
            assert await slow.receive_some(65536) == b""
            assert trio.current_time() - start >= 4.9
            await silent.aclose()
            await slow.aclose()
            # The server is still serving.
            assert (await handshake(server.port))[0] == 101


# -- the whole gateway ----------------------------------------------------------------------


async def test_gateway_wires_tokens_rate_and_the_auth_gauge() -> None:
    config = gateway_config(
        "ws://127.0.0.1:9",  # no upstream: irrelevant here
        **{"server.connection_burst_per_ip": "2", "server.connections_per_ip_per_second": "0.01"},
    )
    gateway = Gateway(config, handle_signals=False, auth_tokens=(TOKEN.encode(),))
    assert gateway.metrics.registry.get_sample_value("paxos_gateway_auth_enabled") == 1
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.server.port
            assert port is not None
            assert (await handshake(port))[0] == 401
            good = {"Authorization": f"Bearer {TOKEN}"}
            assert (await handshake(port, headers=good))[0] == 101
            assert (await handshake(port, headers=good))[0] == 429
            gateway.request_shutdown()
    open_gateway = Gateway(config, handle_signals=False, auth_tokens=())
    assert open_gateway.metrics.registry.get_sample_value("paxos_gateway_auth_enabled") == 0


async def test_tokens_reload_on_file_change_and_sighup_without_touching_subscribers(
    tmp_path: Path, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.auth")
    old, new, newer = TOKEN, "rotated-token-0123456789abcdef", "sighup-token-0123456789abcdef"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the first one\n{old}\n")
    config = gateway_config("ws://127.0.0.1:9", **{"server.auth_token_file": f'"{tokens}"'})
    gateway = Gateway(config, handle_signals=True)
    registry = gateway.metrics.registry

    def reloads(source: str, result: str) -> float:
        labels = {"source": source, "result": result}
        return registry.get_sample_value("paxos_gateway_auth_reloads_total", labels) or 0.0

    async def reloaded(source: str, result: str, count: float) -> None:
        for _ in range(100):  # virtual seconds: the file is polled every 5
            if reloads(source, result) >= count:
                return
            await trio.sleep(1)
        raise AssertionError(f"no {source} reload ({result})")

    with trio.fail_after(600):  # virtual seconds
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.server.port
            assert port is not None
            assert reloads("file_change", "ok") == reloads("sighup", "ok") == 0  # exposed at 0
            connected = await RawSubscriber.connect(
                gateway.subscriber_url, "/v1/stream", headers={"Authorization": f"Bearer {old}"}
            )
            tokens.write_text(f"{new}\n")
            await reloaded("file_change", "ok", 1)
            assert (await handshake(port, headers={"Authorization": f"Bearer {old}"}))[0] == 401
            assert (await handshake(port, headers={"Authorization": f"Bearer {new}"}))[0] == 101
            # A half-written file keeps the tokens in use.
            tokens.write_text("not a token!\n")
            await reloaded("file_change", "error", 1)
            assert (await handshake(port, headers={"Authorization": f"Bearer {new}"}))[0] == 101
            # SIGHUP reloads at once.
            tokens.write_text(f"{newer}\n")
            os.kill(os.getpid(), signal.SIGHUP)
            await reloaded("sighup", "ok", 1)
            assert (await handshake(port, headers={"Authorization": f"Bearer {newer}"}))[0] == 101
            # The subscriber that connected with the first token was never touched.
            await connected.send_text('{"op":"ping","id":7}')
            assert b'"type":"pong"' in await connected.read_until(b'"type":"pong"')
            await connected.stream.aclose()
            gateway.request_shutdown()
    events = [(r.__dict__.get("event"), r.__dict__.get("source")) for r in caplog.records]
    assert ("auth_tokens_reloaded", "file_change") in events
    assert ("auth_tokens_reload_failed", "file_change") in events
    assert ("auth_tokens_reloaded", "sighup") in events
    for record in caplog.records:  # never a token in a log line
        text = record.getMessage() + repr(record.__dict__)
        assert old not in text and new not in text and newer not in text


# -- half-open connections: counted and limited from accept (issue 18) ----------------------


async def _silent_connections(
    port: int, count: int, source: str = "127.0.0.1"
) -> list[trio.SocketStream]:
    return [
        await trio.open_tcp_stream("127.0.0.1", port, local_address=source) for _ in range(count)
    ]


async def _refused_503(streams: list[trio.SocketStream], expected: int) -> int:
    """Reads every stream until ``expected`` of them have been answered 503 and closed (the
    others, held, never answer: their readers are cancelled then)."""
    refused = 0
    done = trio.Event()

    async def read(stream: trio.SocketStream) -> None:
        nonlocal refused
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 503 "), data[:80]
        assert b"retry-after: 5" in data.lower()
        refused += 1
        if refused == expected:
            done.set()

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(read, stream)
        await done.wait()
        await trio.testing.wait_all_tasks_blocked(0.05)
        nursery.cancel_scope.cancel()
    return refused


async def test_silent_connections_are_limited_per_address_from_accept() -> None:
    metrics = Metrics()
    held: list[trio.SocketStream] = []
    with trio.fail_after(TIMEOUT):
        async with serving(
            metrics=metrics, max_pending_per_ip=8, max_pending=100, handshake_timeout=600
        ) as server:
            assert server.port is not None
            # 100 connections that send nothing, from one address: 8 are held (until the
            # handshake timeout), 92 are answered 503 at once, before a byte is read.
            held = await _silent_connections(server.port, 100)
            assert await _refused_503(held, 92) == 92
            assert server.pending.pending == 8 and server.pending.held("127.0.0.1") == 8
            assert rejected(metrics, "pending_per_ip") == 92
            assert rejected(metrics, "pending_total") == 0
            # Another address is unaffected: its handshake completes at once.
            stream = await trio.open_tcp_stream("127.0.0.1", server.port, local_address="127.0.0.2")
            async with stream:
                await stream.send_all(upgrade("/v1/stream"))
                head = await stream.receive_some(65536)
                assert head.startswith(b"HTTP/1.1 101 ")
            for s in held:
                await s.aclose()


async def test_silent_connections_are_limited_in_total_from_accept() -> None:
    metrics = Metrics()
    with trio.fail_after(TIMEOUT):
        async with serving(
            metrics=metrics, max_pending_per_ip=100, max_pending=6, handshake_timeout=600
        ) as server:
            assert server.port is not None
            held = await _silent_connections(server.port, 4)
            held += await _silent_connections(server.port, 6, source="127.0.0.2")
            assert await _refused_503(held, 4) == 4
            assert server.pending.pending == 6
            assert rejected(metrics, "pending_total") == 4
            for s in held:
                await s.aclose()
            # Gone peers free their places: a normal handshake goes through again.
            with trio.move_on_after(5):
                while server.pending.pending:
                    await trio.sleep(0.01)
            status, _, _ = await handshake(server.port)
            assert status == 101
