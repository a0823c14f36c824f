"""The subscriber server over real sockets, with the ``websockets`` library as the client.

Clients run the websockets sync client in worker threads (``trio.to_thread``); every receive
has a timeout and every test a ``trio.fail_after`` bound. The dead-subscriber test uses a raw
in-process socket and a MockClock instead, so no real time passes waiting for ping timeouts.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto.utilities import LocalProtocolError

from bench.downstream_model import Model
from gateway.config import ServerConfig
from gateway.contract.protocol import CLOSE_PING_TIMEOUT, Encoding
from gateway.fanout.hub import Hub
from gateway.fanout.routes import Route, RouteError, route
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer
from gateway.io.contained_nursery import ContainedNursery
from gateway.io.metrics import HubStatsCollector, Metrics
from gateway.io.server import Server
from tests.support.clients import RawSubscriber, in_thread, open_client, read_until, recv_json
from tests.support.fake_feed import EPOCH, FakeFeed
from tests.support.hostile_requests import HOSTILE, MAX_BYTES, MAX_STREAMS

TIMEOUT = 20


@asynccontextmanager
async def running(
    hub: Hub | None = None,
    metrics: Metrics | None = None,
    close_timeout: float = 5.0,
    **settings: Any,
) -> AsyncIterator[tuple[Server, Hub, str]]:
    config = ServerConfig(host="127.0.0.1", port=0, **settings)
    if hub is None:
        hub = Hub.from_config(config, EPOCH)
        if metrics is not None:
            metrics.add_collector(HubStatsCollector(hub.stats))
    server = Server(hub, config, metrics, close_timeout=close_timeout)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server, hub, f"ws://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


async def test_many_subscribers_see_gap_free_sequences() -> None:
    with trio.fail_after(TIMEOUT):
        async with running() as (_, hub, url):
            feed = FakeFeed(hub)
            feed.publish(feed.snapshot())
            n_batches = 300
            started = trio.Semaphore(0)

            def client(path: str) -> Model:
                with open_client(url + path) as ws:
                    if path == "/v1/stream":
                        ws.send('{"op":"subscribe","streams":["book.BTCUSD","trades.*"]}')
                    trio.from_thread.run_sync(started.release)
                    return read_until(
                        ws, Model(), lambda m: m.expected.get("trades.BTCUSD") == n_batches + 1
                    )

            paths = ["/v1/stream"] * 8
            results: list[Model] = []

            async def run_client(path: str) -> None:
                results.append(await in_thread(lambda: client(path)))

            async with trio.open_nursery() as nursery:
                for path in paths:
                    nursery.start_soon(run_client, path)
                for _ in paths:
                    await started.acquire()
                for i in range(n_batches):
                    feed.publish(feed.update(), feed.update(), feed.trade())
                    if i % 10 == 0:
                        await trio.sleep(0.001)
            assert len(results) == len(paths)
            for model in results:
                assert model.problems == []
                assert model.book("book.BTCUSD") == feed.book_levels()
                assert model.seqs("trades.BTCUSD")[-n_batches:] == list(range(1, n_batches + 1))


async def test_shortcut_late_join_and_resume_over_the_wire() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(history=1000) as (_, hub, url):
            feed = FakeFeed(hub)
            feed.publish(feed.snapshot())
            for _ in range(40):
                feed.publish(feed.update())

            def first() -> Model:
                # A late joiner through the shortcut: snapshot at 41, then live updates.
                with open_client(url + "/v1/book/BTCUSD") as ws:
                    return read_until(ws, Model(), lambda m: m.expected.get("book.BTCUSD") == 52)

            async def publish_more(n: int) -> None:
                for _ in range(n):
                    await trio.sleep(0.005)
                    feed.publish(feed.update())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_more, 10)
                model = await in_thread(first)
            assert model.problems == []
            assert 41 <= model.snapshots[0]["seq"] <= 51  # joined while updates flowed
            assert model.book("book.BTCUSD") == feed.book_levels()
            held = model.held["book.BTCUSD"]
            for _ in range(25):  # missed while disconnected
                feed.publish(feed.update())

            def resume_by_request() -> list[Any]:
                with open_client(url + "/v1/stream") as ws:
                    ws.send(json.dumps({
                        "op": "subscribe", "id": "r", "streams": ["book.BTCUSD"],
                        "resume": {"book.BTCUSD": {"epoch": EPOCH, "seq": held}},
                    }))  # fmt: skip
                    return [recv_json(ws) for _ in range(3 + 25)]

            msgs = await in_thread(resume_by_request)
            assert [m["type"] for m in msgs[:3]] == ["hello", "subscribed", "resumed"]
            replay = msgs[3:]
            assert [m["seq"] for m in replay] == list(range(held + 1, held + 26))
            for msg in msgs:
                model.feed(msg)
            assert model.problems == []
            assert model.book("book.BTCUSD") == feed.book_levels()

            def resume_by_url(epoch: str) -> list[Any]:
                with open_client(f"{url}/v1/book/BTCUSD?epoch={epoch}&seq={held}") as ws:
                    return [recv_json(ws) for _ in range(4)]

            by_url = await in_thread(lambda: resume_by_url(EPOCH))
            assert by_url[2]["type"] == "resumed" and by_url[3]["seq"] == held + 1
            refused = await in_thread(lambda: resume_by_url(str(int(EPOCH) + 1)))
            assert refused[2]["type"] == "resume_failed"
            assert refused[2]["reason"] == "epoch_changed"
            assert (refused[3]["type"], refused[3]["reason"]) == ("book_snapshot", "resume_failed")


async def test_msgpack_encoding() -> None:
    with trio.fail_after(TIMEOUT):
        async with running() as (_, hub, url):
            feed = FakeFeed(hub, "USDCUSD")
            feed.publish(feed.price("1.0001"))

            def client() -> list[Any]:
                with open_client(url + "/v1/stream?encoding=msgpack") as ws:
                    ws.send(msgspec.msgpack.encode({"op": "subscribe", "streams": ["price.*"]}))
                    ws.send('{"op":"ping","id":1}')  # text frames are JSON
                    frames = [ws.recv(timeout=10) for _ in range(4)]
                    assert all(isinstance(f, bytes) for f in frames)
                    return [msgspec.msgpack.decode(f) for f in frames if isinstance(f, bytes)]

            msgs = await in_thread(client)
            assert [m["type"] for m in msgs] == ["hello", "subscribed", "price", "pong"]
            assert msgs[0]["encoding"] == "msgpack"
            assert msgs[2]["price"] == "1.0001"


async def test_hostile_requests_each_get_their_error_and_the_server_stays_healthy() -> None:
    with trio.fail_after(TIMEOUT):
        metrics = Metrics()
        async with running(
            metrics=metrics, max_request_bytes=MAX_BYTES, max_subscriptions=MAX_STREAMS
        ) as (
            _, hub, url,
        ):  # fmt: skip
            feed = FakeFeed(hub)
            feed.publish(feed.snapshot())
            cases = [*HOSTILE]
            cases += [
                ('{"op":"subscribe","id":1,"streams":["book.ZZZ"]}', "unknown_stream"),
                ('{"op":"unsubscribe","id":2,"streams":["book.BTCUSD"]}', "not_subscribed"),
                (b'{"op":"subscribe","streams":["book.nope"]}', "bad_stream"),
            ]

            def client() -> list[tuple[str, str]]:
                got = []
                with open_client(url + "/v1/stream", max_size=None) as ws:
                    assert recv_json(ws)["type"] == "hello"
                    for data, _ in cases:
                        ws.send(data)
                        answer = recv_json(ws)
                        got.append((answer["type"], answer.get("code", "")))
                    ws.send('{"op":"subscribe","id":"ok","streams":["book.BTCUSD"]}')
                    assert recv_json(ws)["id"] == "ok"
                    assert recv_json(ws)["type"] == "book_snapshot"
                return got

            got = await in_thread(client)
            assert got == [("error", code) for _, code in cases]
            assert len(cases) >= 30
            errors = metrics.registry.get_sample_value(
                "paxos_gateway_request_errors_total", {"code": "malformed"}
            )
            assert errors is not None and errors >= 5

            # Still healthy: a new client is served normally.
            def second() -> Any:
                with open_client(url + "/v1/stream") as ws:
                    recv_json(ws)
                    ws.send('{"op":"ping","id":1}')
                    return recv_json(ws)

            assert await in_thread(second) == {"type": "pong", "id": 1}


async def test_frame_beyond_hard_limit_closes_1009() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(max_request_bytes=1024) as (_, _, url):

            def client() -> int | None:
                with open_client(url + "/v1/stream") as ws:
                    recv_json(ws)
                    ws.send("x" * 5000)
                    with pytest.raises(ConnectionClosed) as info:
                        ws.recv(timeout=10)
                    assert info.value.rcvd is not None
                    return info.value.rcvd.code

            assert await in_thread(client) == 1009


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param({"opcode": 0x1, "payload": b"caf\xc3("}, 1007, id="invalid-utf8-text"),
        pytest.param({"opcode": 0x3, "payload": b"x"}, 1002, id="reserved-opcode"),
        pytest.param({"opcode": 0xB, "payload": b""}, 1002, id="reserved-control-opcode"),
        pytest.param({"opcode": 0x1, "payload": b"{}", "masked": False}, 1002, id="unmasked"),
        pytest.param({"opcode": 0x1, "payload": b"{}", "rsv": 4}, 1002, id="rsv1"),
        pytest.param({"opcode": 0x1, "payload": b"{}", "rsv": 1}, 1002, id="rsv3"),
        pytest.param({"opcode": 0x9, "payload": b"p" * 126}, 1002, id="ping-over-125"),
        pytest.param({"opcode": 0x9, "payload": b"p", "fin": False}, 1002, id="fragmented-ping"),
        pytest.param({"opcode": 0x1, "payload": b"x" * 5000}, 1009, id="too-big"),
    ],
)
async def test_protocol_violations_get_their_close_code(frame: dict[str, Any], code: int) -> None:
    metrics = Metrics()
    with trio.fail_after(TIMEOUT):
        async with running(metrics=metrics, max_request_bytes=1024) as (server, _, url):
            client = await RawSubscriber.connect(url, "/v1/stream")
            async with client.stream:
                await client.send_frame(**frame)
                closed = await client.read_close()
            assert closed is not None, "TCP closed without a close frame"
            assert closed[0] == code
            for _ in range(1000):  # the server's side of the connection ends (bounded)
                if not server.subscriber_count:
                    break
                await trio.sleep(0.001)
            disconnects = metrics.registry.get_sample_value(
                "paxos_gateway_subscriber_disconnects_total", {"reason": "error"}
            )
            assert disconnects == 1
            # The next client is served as usual.
            other = await RawSubscriber.connect(url, "/v1/stream")
            async with other.stream:
                await other.send_text('{"op":"ping","id":1}')
                await other.send_frame(0x8, struct.pack("!H", 1000))
                assert await other.read_close() == (1000, "")


@pytest.mark.parametrize(("setting", "bounded"), [(65536, True), (0, False)])
async def test_send_buffer_of_each_subscriber_socket_is_bounded(
    setting: int, bounded: bool
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(send_buffer_bytes=setting) as (server, _, url):
            client = await RawSubscriber.connect(url, "/v1/stream")
            async with client.stream:
                for _ in range(1000):  # the 101 may arrive before the server registers it
                    if server.subscriber_count:
                        break
                    await trio.sleep(0.001)
                (conn,) = server._connections
                assert conn.delivery.writer is not None
                size = conn.delivery.writer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            # Linux reserves twice the value set (bookkeeping); unset, it autotunes from
            # net.ipv4.tcp_wmem's default (16 KiB) and is not locked.
            assert (size == 2 * setting) if bounded else (size != 2 * 65536)


async def test_handshake_rejections() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(max_subscribers=1) as (_, _, url):

            def status_of(path: str) -> int:
                with pytest.raises(InvalidStatus) as info:
                    open_client(url + path, open_timeout=10)
                return info.value.response.status_code

            assert await in_thread(lambda: status_of("/nope")) == 404
            assert await in_thread(lambda: status_of("/v1/orders/BTCUSD")) == 404
            assert await in_thread(lambda: status_of("/v1/book/btc")) == 404
            assert await in_thread(lambda: status_of("/v1/stream?encoding=xml")) == 400
            assert await in_thread(lambda: status_of("/v1/stream?foo=1")) == 400
            assert await in_thread(lambda: status_of("/v1/book/*?epoch=1&seq=2")) == 400

            holding = trio.Event()
            release = trio.Event()

            def hold() -> None:
                with open_client(url + "/v1/stream") as ws:
                    recv_json(ws)
                    trio.from_thread.run_sync(holding.set)
                    trio.from_thread.run(release.wait)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_thread, hold)
                await holding.wait()
                assert await in_thread(lambda: status_of("/v1/stream")) == 503
                release.set()


async def test_slow_subscriber_is_disconnected_while_others_keep_pace() -> None:
    with trio.fail_after(TIMEOUT):
        metrics = Metrics()
        async with running(
            metrics=metrics, buffer_bytes=64 * 1024, slow_policy="disconnect", close_timeout=0.5
        ) as (server, hub, url):
            feed = FakeFeed(hub)
            feed.publish(feed.snapshot(levels=10))
            port = server.port
            assert port is not None
            # A subscriber that subscribes and then never reads, with a tiny receive window.
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", port))
            raw.sendall(_upgrade_request("/v1/book/BTCUSD"))
            done = trio.Event()
            final: dict[str, int] = {}  # set once publishing is over

            def fast() -> Model:
                with open_client(url + "/v1/book/BTCUSD") as ws:
                    model = read_until(ws, Model(), lambda m: "book.BTCUSD" in m.expected)
                    trio.from_thread.run_sync(done.set)
                    return read_until(
                        ws, model, lambda m: m.expected["book.BTCUSD"] == final.get("seq", -1) + 1
                    )

            results: list[Model] = []

            async def run_fast() -> None:
                results.append(await in_thread(fast))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_fast)
                await done.wait()
                fast_sub = max(hub.subscribers, key=lambda sub: sub.id)
                # Big resync snapshots fill any socket buffer quickly. The pace is one the
                # reading subscriber can follow; the other one reads nothing at all.
                for _ in range(300):
                    feed.publish(feed.snapshot(levels=400, reason="reconnect"), feed.update())
                    while fast_sub.queued_bytes > 32 * 1024:
                        await trio.sleep(0.001)
                # Announced before it is published, so the reader cannot have passed it.
                final["seq"] = feed.seqs["book.BTCUSD"] + 1
                feed.publish(feed.update())
            model = results[0]
            assert model.problems == []
            assert model.book("book.BTCUSD") == feed.book_levels()
            assert [s["reason"] for s in model.snapshots[1:]] == ["reconnect"] * 300
            assert hub.stats.slow_disconnects == 1
            # The stuck one is dropped after close_timeout although it never reads.
            with trio.fail_after(5):
                while server.subscriber_count:
                    await trio.sleep(0.01)
            raw.close()
            assert (
                metrics.registry.get_sample_value(
                    "paxos_gateway_subscriber_disconnects_total", {"reason": "slow"}
                )
                == 1
            )


def _upgrade_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def test_shutdown_drains_and_closes_with_1001() -> None:
    with trio.fail_after(TIMEOUT):
        async with running() as (server, hub, url):
            feed = FakeFeed(hub)
            for _ in range(3):
                feed.publish(feed.trade())
            connected = trio.Event()

            def client() -> tuple[list[Any], int, str]:
                msgs = []
                with open_client(url + "/v1/trades/BTCUSD") as ws:
                    msgs.append(recv_json(ws))
                    trio.from_thread.run_sync(connected.set)
                    with pytest.raises(ConnectionClosed) as info:
                        while True:
                            msgs.append(recv_json(ws))
                    assert info.value.rcvd is not None
                    return msgs, info.value.rcvd.code, info.value.rcvd.reason

            async with trio.open_nursery() as nursery:
                result: list[Any] = []

                async def run() -> None:
                    result.append(await in_thread(client))

                nursery.start_soon(run)
                await connected.wait()
                feed.publish(feed.trade())
                await server.shutdown(drain_timeout=5)
            msgs, code, reason = result[0]
            assert code == 1001
            assert reason == "gateway shutting down, reconnect elsewhere"
            # Everything queued before the shutdown was delivered first.
            assert [m["seq"] for m in msgs if m["type"] == "trade"] == [3, 4]

            def refused() -> None:
                with pytest.raises(OSError):
                    open_client(url + "/v1/stream", open_timeout=5)

            await in_thread(refused)


async def test_mirror_paths_serve_frames_a_paxos_client_accepts() -> None:
    with trio.fail_after(TIMEOUT):
        async with running() as (_, hub, url):
            btc, usdc = FakeFeed(hub, "BTCUSD"), FakeFeed(hub, "USDCUSD")
            btc.publish(btc.snapshot(), btc.trade(), btc.trade())
            usdc.publish(usdc.price("1.0001"), usdc.price("1"))

            def read(path: str, n: int) -> list[str]:
                with open_client(url + path) as ws:
                    out = []
                    for _ in range(n):
                        frame = ws.recv(timeout=10)
                        assert isinstance(frame, str)
                        out.append(frame)
                    return out

            async def publish_later() -> None:
                await trio.sleep(0.3)
                btc.publish(btc.update(), btc.update())
                btc.publish(*btc.status("disconnected"))
                btc.publish(btc.snapshot(reason="reconnect"), btc.update())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_later)
                book_frames = await in_thread(lambda: read("/marketdata/BTCUSD", 5))
            exec_frames = await in_thread(lambda: read("/executiondata/BTCUSD", 1))
            all_exec = await in_thread(lambda: read("/executiondata", 1))
            price_frames = await in_thread(lambda: read("/marketdata/stablecoin/USDCUSD", 1))

            book_msgs = [json.loads(f) for f in book_frames]
            assert [m["type"] for m in book_msgs] == [
                "SNAPSHOT", "UPDATE", "UPDATE", "SNAPSHOT", "UPDATE",
            ]  # fmt: skip
            for m in book_msgs:
                assert m["market"] == "BTCUSD"
                if m["type"] == "SNAPSHOT":
                    assert set(m) == {"type", "market", "bids", "asks", "final_snapshot"}
                    assert m["final_snapshot"] is True
                    levels = m["bids"] + m["asks"]
                    assert all(set(lv) == {"price", "amount"} for lv in levels)
                    assert all(isinstance(v, str) for lv in levels for v in lv.values())
                else:
                    assert set(m) == {"type", "market", "side", "price", "amount"}
                    assert m["side"] in ("BUY", "SELL")
                    assert all(isinstance(v, str) for v in m.values())
                numbers = [m.get("price", ""), m.get("amount", "")]
                numbers += [v for lv in m.get("bids", []) + m.get("asks", []) for v in lv.values()]
                assert not any("E" in n for n in numbers)  # never scientific notation
            # The gateway's own Paxos parser (the upstream session) accepts the frames and
            # ends with the same book.
            session = FeedNormalizer(feed_from_url("wss://x/marketdata/BTCUSD"), epoch="1")
            session.connected(1)
            for frame in book_frames:
                records = session.receive(frame, 2)
                assert records, frame
            assert session.books["BTCUSD"].bids() == btc.book.bids()
            assert session.books["BTCUSD"].asks() == btc.book.asks()

            execution = json.loads(exec_frames[0])
            assert execution == {
                "market": "BTCUSD", "price": "20000.25", "amount": "0.5",
                "executed_at": execution["executed_at"], "match_number": "M00000000002",
            }  # fmt: skip
            assert execution["executed_at"].startswith("1970-01-01T00:00:00.00000")
            assert execution["executed_at"].endswith("Z")
            assert json.loads(all_exec[0])["match_number"] == "M00000000002"
            price = json.loads(price_frames[0])
            assert price["price"] == "1.0000" and price["market"] == "USDCUSD"
            exec_session = FeedNormalizer(feed_from_url("wss://x/executiondata/BTCUSD"), epoch="1")
            exec_session.connected(1)
            assert [type(r).__name__ for r in exec_session.receive(exec_frames[0], 2)] == ["Trade"]
            price_session = FeedNormalizer(
                feed_from_url("wss://x/marketdata/stablecoin"), epoch="1"
            )
            price_session.connected(1)
            assert [type(r).__name__ for r in price_session.receive(price_frames[0], 2)] == [
                "Price"
            ]


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    # Not zero: real loopback I/O must get a moment before virtual time jumps ahead.
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_dead_subscriber_is_pinged_and_removed(mock_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    async with running(
        metrics=metrics, ping_interval=20.0, ping_timeout=20.0, handshake_timeout=1000.0
    ) as (server, _, _):
        with trio.fail_after(300):  # virtual seconds
            assert server.port is not None
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(_upgrade_request("/v1/stream"))
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 101")
            # The 101 can reach us before the server task has registered the subscriber.
            for _ in range(1000):
                if server.subscriber_count:
                    break
                await trio.sleep(0.001)
            assert server.subscriber_count == 1
            start = trio.current_time()
            # The client answers no ping. Within interval + timeout (+ close timeout) it is gone.
            while server.subscriber_count:
                await trio.sleep(1)
            elapsed = trio.current_time() - start
            assert 40 <= elapsed <= 50
            data = received.split(b"\r\n\r\n", 1)[1]
            with trio.move_on_after(5):
                while chunk := await stream.receive_some(65536):
                    data += chunk
            await stream.aclose()
            assert _close_code(data) == CLOSE_PING_TIMEOUT
            assert (
                metrics.registry.get_sample_value(
                    "paxos_gateway_subscriber_disconnects_total", {"reason": "ping_timeout"}
                )
                == 1
            )


def _close_code(data: bytes) -> int | None:
    """The code of the first close frame in a server-to-client byte stream."""
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = struct.unpack("!H", data[i : i + 2])[0]
            i += 2
        elif length == 127:
            length = struct.unpack("!Q", data[i : i + 8])[0]
            i += 8
        if opcode == 0x8:
            return int(struct.unpack("!H", data[i : i + 2])[0])
        i += length
    return None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/v1/stream", Route(Encoding.JSON)),
        ("/v1/stream?encoding=msgpack", Route(Encoding.MSGPACK)),
        ("/v1/book/BTCUSD", Route(Encoding.JSON, ("book.BTCUSD",))),
        ("/v1/book/%2A", Route(Encoding.JSON, ("book.*",))),
        ("/v1/status/marketdata", Route(Encoding.JSON, ("status.marketdata",))),
        ("/marketdata", Route(Encoding.PAXOS, ("book.*",), mirror=True)),
        ("/marketdata/ETHUSD", Route(Encoding.PAXOS, ("book.ETHUSD",), mirror=True)),
        ("/marketdata/stablecoin", Route(Encoding.PAXOS, ("price.*",), mirror=True)),
        ("/executiondata/BTCUSD?x=1", Route(Encoding.PAXOS, ("trades.BTCUSD",), mirror=True)),
    ],
)
def test_route(target: str, expected: Route) -> None:
    assert route(target) == expected


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/", 404), ("/v2/stream", 404), ("/v1", 404), ("/v1/book", 404),
        ("/v1/book/BTCUSD/x", 404), ("/marketdata/btcusd", 404), ("/v1/book/BTC*", 404),
        ("/v1/stream?encoding=", 400), ("/v1/stream?epoch=1&seq=1", 400),
        ("/v1/book/BTCUSD?epoch=1", 400), ("/v1/book/BTCUSD?epoch=-1&seq=1", 400),
        ("/v1/book/BTCUSD?epoch=99999999999999999999&seq=1", 400),
    ],
)  # fmt: skip
def test_route_errors(target: str, status: int) -> None:
    with pytest.raises(RouteError) as info:
        route(target)
    assert info.value.status == status


async def test_a_failing_connection_task_is_contained_to_its_connection() -> None:
    """trio-websocket runs each connection in the server's nursery; a library error there
    (seen: a Pong refused by wsproto in LOCAL_CLOSING) must end that task, not the server."""
    failures: list[Exception] = []
    finished: list[str] = []

    async def failing() -> None:
        raise LocalProtocolError("Event Pong cannot be sent in state LOCAL_CLOSING")

    async def healthy(name: str) -> None:
        await trio.lowlevel.checkpoint()
        finished.append(name)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            contained = ContainedNursery(nursery, failures.append)
            contained.start_soon(failing)
            contained.start_soon(healthy, "other connection")
    assert [type(e) for e in failures] == [LocalProtocolError]
    assert finished == ["other connection"]
