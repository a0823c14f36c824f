"""The client against the real gateway and simulator, over loopback, with faults: the client's
connection dropped, a gateway restart (a new epoch on the same port), an upstream drop (resync
snapshots), a slow consumer (conflation). At the end every book a client keeps equals the
simulator's truth, and no record was missed unannounced or delivered twice."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import wrap_client_stream

from gateway.app import Gateway
from gateway.client import (
    Client,
    Closed,
    ConnectError,
    Event,
    Gap,
    RecordReceived,
    Resumed,
    ResumeFailed,
    Snapshot,
    asyncio_client,
)
from gateway.client.driver import default_backoff
from gateway.client.trio_client import TrioTransport, open_client
from gateway.contract.records import Trade
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.checks import wait_books_equal_truth
from tests.support.clients import AsyncioClients
from tests.support.config import FAST_UPSTREAM_PINGS, gateway_config

MARKETS = ["BTCUSD", "ETHUSD"]


@dataclass
class Consumer:
    """Iterates a client's events, keeping what the checks need; ``stalled`` makes it stop
    reading (the gateway's buffer for it fills up)."""

    client: Client
    events: list[Event] = field(default_factory=list)
    seen: dict[tuple[str, Any, int], int] = field(default_factory=dict)
    match_numbers: list[str] = field(default_factory=list)
    stalled: trio.Event | None = None

    records: int = 0

    async def run(self) -> None:
        async for event in self.client:
            if self.stalled is not None:
                await self.stalled.wait()
                self.stalled = None
            self.note(event)

    def note(self, event: Event) -> None:
        if isinstance(event, RecordReceived):
            r = event.record
            self.records += 1
            key = (r.stream, r.epoch, r.seq)
            self.seen[key] = self.seen.get(key, 0) + 1
            if isinstance(r, Trade):
                self.match_numbers.append(r.match_number)
        else:
            self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def problems(self) -> list[str]:
        stats = self.client.session.stats
        out = [f"{k}: {v}" for k, v in (("gaps", stats.gaps), ("duplicates", stats.duplicates),
               ("problems", stats.problems)) if v]  # fmt: skip
        out += [f"delivered twice: {k}" for k, n in self.seen.items() if n > 1][:3]
        if len(self.match_numbers) != len(set(self.match_numbers)):
            out.append("an execution was delivered twice")
        return out

    def reached(self, heads: dict[str, int], epoch: Any, kinds: Iterable[str]) -> bool:
        positions = self.client.session.positions()
        wanted = [s for s in heads if s.partition(".")[0] in kinds and heads[s] > 0]
        return all(positions.get(s, (None, -1)) >= (epoch, heads[s]) for s in wanted)


async def small_buffer_connector(
    nursery: trio.Nursery, url: str, headers: list[tuple[str, str]]
) -> TrioTransport:
    """Connect with a 4 KiB receive buffer: a consumer that stalls pushes back on the gateway
    at once instead of after megabytes of kernel buffer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        await sock.connect((parts.hostname, parts.port))
    except OSError as exc:
        sock.close()
        raise ConnectError(str(exc)) from None
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    ws = await wrap_client_stream(
        nursery, trio.SocketStream(sock), parts.hostname, resource,
        extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        max_message_size=1 << 24,
    )  # fmt: skip
    return TrioTransport(ws)


async def start_gateway(nursery: trio.Nursery, sim_url: str, port: int = 0) -> Gateway:
    config = gateway_config(
        sim_url, **FAST_UPSTREAM_PINGS,
        **{"server.port": str(port), "server.buffer_bytes": "32768", "server.history": "20000"},
    )  # fmt: skip
    gateway = Gateway(config, handle_signals=False)
    await nursery.start(gateway.serve)
    return gateway


async def wait_reached(
    consumers: Iterable[Consumer], gateway: Gateway, kinds: dict[int, tuple[str, ...]]
) -> None:
    heads = {info.stream: info.seq for info in gateway.hub.stream_list()}
    with trio.fail_after(30):
        while not all(c.reached(heads, gateway.epoch, kinds[id(c)]) for c in consumers):
            await trio.sleep(0.02)


async def test_books_stay_true_through_drops_restart_resync_and_conflation(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(90):  # every wait inside is bounded too; this bounds the teardown
        await _faults(nursery)


async def _faults(nursery: trio.Nursery) -> None:
    sim = Simulator(SimulatorConfig(seed=21, markets=MARKETS, levels=60, rate=1500.0))
    sim_url = await nursery.start(sim.serve)
    gateway = await start_gateway(nursery, sim_url)
    port = urlsplit(gateway.subscriber_url).port
    assert port is not None

    async with trio.open_nursery() as clients:
        async with open_client(gateway.subscriber_url, ["book.*", "trades.*"]) as main_client:
            slow_client = Client(
                gateway.subscriber_url, ["book.*"],
                connector=lambda url, headers: small_buffer_connector(clients, url, headers),
                sleep=trio.sleep, clock=trio.current_time, backoff=default_backoff(),
            )  # fmt: skip
            main, slow = Consumer(main_client), Consumer(slow_client)
            kinds = {id(main): ("book", "trades"), id(slow): ("book",)}
            clients.start_soon(main.run)
            clients.start_soon(slow.run)
            with trio.fail_after(30):
                await sim.wait_for_events(sim.events_generated + 1500)

            # 1. The client's connection drops (no closing handshake): it resumes.
            await main_client.abort()
            with trio.fail_after(30):
                await sim.wait_for_events(sim.events_generated + 1500)
            assert main.of(Resumed), main.events[-5:]

            # 2. An upstream drop: the gateway resyncs, books arrive as resync snapshots.
            assert sim.drop_all(path="/marketdata") == 1
            with trio.fail_after(30):
                await sim.wait_for_events(sim.events_generated + 1500)

            # 3. A slow consumer: it stops reading, its buffer overflows, its books are
            # conflated into fresh snapshots.
            stall = trio.Event()
            slow.stalled = stall
            with trio.fail_after(30):
                # ~300 kB of book records: far more than its 4 KiB socket buffer, the
                # gateway's send buffer and its 32 KiB subscriber buffer hold.
                await sim.wait_for_events(sim.events_generated + 3000)
            stall.set()
            with trio.fail_after(30):
                await sim.wait_for_events(sim.events_generated + 1000)

            # 4. The gateway restarts on the same port: a new epoch, every resume fails.
            gateway.request_shutdown()
            with trio.fail_after(15):
                await gateway.stopped.wait()
            with trio.fail_after(30):
                await sim.wait_for_events(sim.events_generated + 300)
            gateway = await start_gateway(nursery, sim_url, port)
            with trio.fail_after(30):
                await sim.wait_for_events(sim.events_generated + 1500)

            sim.pause()
            with trio.fail_after(30):
                await sim.wait_idle()
            await wait_books_equal_truth(sim, gateway, MARKETS)
            await wait_reached([main, slow], gateway, kinds)

            for consumer in (main, slow):
                assert consumer.problems() == [], consumer.problems()
                assert not consumer.of(Gap)
                for market in MARKETS:
                    book = consumer.client.book(f"book.{market}")
                    assert book is not None, market
                    assert (book.bids(), book.asks()) == sim.truth(market), market
            reasons = {e.reason for e in main.of(Snapshot)}
            # The upstream resync arrives as a "reconnect" snapshot, unless this client was
            # itself conflated meanwhile (the load is high): then as a "conflation" one.
            assert "resume_failed" in reasons and reasons & {"reconnect", "conflation"}, reasons
            assert "conflation" in {e.reason for e in slow.of(Snapshot)}
            assert {e.reason for e in main.of(ResumeFailed)} == {"epoch_changed"}
            assert main_client.connections >= 3
            await slow_client.close()
        clients.cancel_scope.cancel()
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()


TOKEN = "client-test-token-0123456789"


async def test_asyncio_client_msgpack_with_a_token_resumes_after_a_drop(
    nursery: trio.Nursery,
) -> None:
    """The asyncio adapter (``websockets``, in an event loop of its own thread), MessagePack,
    a gateway that requires a token."""
    sim = Simulator(SimulatorConfig(seed=4, markets=MARKETS, levels=40, rate=800.0))
    sim_url = await nursery.start(sim.serve)
    gateway = Gateway(
        gateway_config(sim_url, **FAST_UPSTREAM_PINGS), handle_signals=False,
        auth_tokens=(TOKEN.encode(),),
    )  # fmt: skip
    await nursery.start(gateway.serve)
    loop = AsyncioClients()
    try:
        refused = asyncio_client.connect(gateway.subscriber_url, ["book.*"], token="wrong-" + TOKEN)
        with pytest.raises(ConnectError) as info:
            await loop.run(_aio_take(refused, Consumer(refused), 1))
        assert info.value.status == 401

        client = asyncio_client.connect(
            gateway.subscriber_url, ["book.*", "trades.*"], token=TOKEN, encoding="msgpack"
        )
        consumer = Consumer(client)
        await loop.run(_aio_take(client, consumer, 500))
        await loop.run(client.abort())
        await loop.run(_aio_take(client, consumer, consumer.records + 500))
        assert consumer.of(Resumed)
        sim.pause()
        with trio.fail_after(30):
            await sim.wait_idle()
        await wait_books_equal_truth(sim, gateway, MARKETS)
        heads = {info.stream: info.seq for info in gateway.hub.stream_list()}
        await loop.run(_aio_until(client, consumer, heads, gateway.epoch), timeout=40)
        assert consumer.problems() == []
        for market in MARKETS:
            book = client.book(f"book.{market}")
            assert book is not None and (book.bids(), book.asks()) == sim.truth(market)
        await loop.run(client.close())
        await loop.run(_aio_take(client, consumer, consumer.records + 1))  # ends at Closed
        assert isinstance(consumer.events[-1], Closed)
    finally:
        loop.close()
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()


async def _aio_take(client: Client, consumer: Consumer, records: int) -> None:
    async with asyncio.timeout(30):
        async for event in client:
            consumer.note(event)
            if consumer.records >= records:
                return


async def _aio_until(client: Client, consumer: Consumer, heads: dict[str, int], epoch: Any) -> None:
    async with asyncio.timeout(30):
        while not consumer.reached(heads, epoch, ("book", "trades")):
            consumer.note(await client.__anext__())
