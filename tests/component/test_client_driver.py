"""The client's connection loop (``gateway.client.Client``) over scripted transports, on trio's
``MockClock``: backoff delays, giving up, reconnect with resume, a clean close. Plus: importing
``gateway.client`` loads no event loop library and no server module."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import deque
from collections.abc import Iterable

import msgspec
import pytest
import trio
import trio.testing

from gateway.client import (
    Client,
    Closed,
    Connected,
    ConnectError,
    Disconnected,
    Event,
    Reconnecting,
    RecordReceived,
    SubscriptionChanged,
    TransportClosed,
)
from gateway.ingest.decimals import enc_hook
from gateway.retry.backoff import Backoff
from tests.support.gateway_messages import EPOCH, hello, subscribed, trade


def frame(msg: object) -> str:
    return msgspec.json.encode(msg, enc_hook=enc_hook).decode()


class ScriptedTransport:
    """Delivers ``frames``, then ends with ``end`` (or waits forever)."""

    def __init__(self, frames: Iterable[object], end: TransportClosed | None = None) -> None:
        self.incoming = deque(frame(f) for f in frames)
        self.end = end
        self.sent: list[dict[str, object]] = []
        self.closed: tuple[int, str] | None = None
        self.aborted = False

    async def send(self, data: str) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(json.loads(data))

    async def receive(self) -> bytes | str:
        await trio.lowlevel.checkpoint()
        if self.incoming:
            return self.incoming.popleft()
        if self.end is not None:
            raise self.end
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    async def abort(self) -> None:
        self.aborted = True


class Gateway:
    """A connector: each attempt pops the next outcome (an exception or a transport)."""

    def __init__(self, outcomes: Iterable[ConnectError | ScriptedTransport]) -> None:
        self.outcomes = deque(outcomes)
        self.attempts: list[float] = []
        self.headers: list[list[tuple[str, str]]] = []

    async def __call__(self, url: str, headers: list[tuple[str, str]]) -> ScriptedTransport:
        await trio.lowlevel.checkpoint()
        self.attempts.append(trio.current_time())
        self.headers.append(headers)
        outcome = self.outcomes.popleft()
        if isinstance(outcome, ConnectError):
            raise outcome
        return outcome


def client(gateway: Gateway, **options: object) -> Client:
    return Client(
        "ws://127.0.0.1:1", ["trades.BTCUSD"], connector=gateway, sleep=trio.sleep,
        clock=trio.current_time,
        backoff=Backoff(0.5, 8.0, healthy_after=10, rng=random.Random(3)),
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


async def collect(c: Client, limit: int = 100) -> list[Event]:
    out: list[Event] = []
    async for event in c:
        out.append(event)
        if len(out) >= limit:
            break
    return out


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_reconnect_delays_grow_with_full_jitter_within_bounds(
    mock_clock: trio.testing.MockClock,
) -> None:
    refused = [ConnectError("refused") for _ in range(6)]
    ok = ScriptedTransport([hello()], end=TransportClosed(1000, "bye"))
    gw = Gateway([*refused, ok])
    events = await collect(client(gw, reconnect=True, max_attempts=None), limit=8)
    waits = [b - a for a, b in zip(gw.attempts, gw.attempts[1:], strict=False)]
    announced = [e.delay for e in events if isinstance(e, Reconnecting)]
    assert len(waits) == 6 and waits == pytest.approx(announced)
    for n, wait in enumerate(waits):
        assert 0.5 <= wait <= min(8.0, 0.5 * 2 ** (n + 1)), (n, wait)
    assert max(waits) > 2  # it does grow (seeded jitter)
    assert isinstance(events[6], Connected)


async def test_gives_up_after_max_attempts_and_at_once_on_401(
    mock_clock: trio.testing.MockClock,
) -> None:
    gw = Gateway([ConnectError("refused") for _ in range(3)])
    with pytest.raises(ConnectError):
        await collect(client(gw, max_attempts=3))
    assert len(gw.attempts) == 3
    gw = Gateway([ConnectError("HTTP 401", status=401), ConnectError("never")])
    with pytest.raises(ConnectError) as info:
        await collect(client(gw, token="s3cret-token-0123456789"))
    assert info.value.status == 401 and len(gw.attempts) == 1
    assert gw.headers[0] == [("Authorization", "Bearer s3cret-token-0123456789")]


async def test_a_lost_connection_is_resumed_from_the_last_record(
    mock_clock: trio.testing.MockClock,
) -> None:
    first = ScriptedTransport(
        [hello(), subscribed(("trades.BTCUSD", 0)), trade(1), trade(2)], end=TransportClosed(None)
    )
    second = ScriptedTransport([hello(), subscribed(("trades.BTCUSD", 2), id="s2")])
    c = client(Gateway([first, second]))
    events = await collect(c, limit=8)
    assert [type(e) for e in events] == [
        Connected, SubscriptionChanged, RecordReceived, RecordReceived, Disconnected,
        Reconnecting, Connected, SubscriptionChanged,
    ]  # fmt: skip
    assert first.sent == [
        {"op": "subscribe", "id": "s1", "streams": ["trades.BTCUSD"], "resume": None}
    ]
    assert second.sent[0]["resume"] == {"trades.BTCUSD": {"epoch": EPOCH, "seq": 2}}
    assert c.connections == 2


async def test_close_is_clean_and_ends_the_iteration(mock_clock: trio.testing.MockClock) -> None:
    transport = ScriptedTransport([hello()])
    c = client(Gateway([transport]))
    async with c:
        assert isinstance(await c.__anext__(), Connected)
        await c.close()
        assert [type(e) for e in await collect(c)] == [Disconnected, Closed]
    assert transport.closed == (1000, "client closing")


async def test_without_reconnect_a_lost_connection_ends_the_client(
    mock_clock: trio.testing.MockClock,
) -> None:
    gw = Gateway([ScriptedTransport([hello()], end=TransportClosed(4008, "slow"))])
    events = await collect(client(gw, reconnect=False))
    assert events[-2:] == [Disconnected(4008, "slow"), Closed(4008, "slow")]


def test_importing_the_client_loads_no_event_loop_nor_server_module() -> None:
    code = (
        "import sys, gateway.client, gateway.client.session;"
        "print(','.join(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules = set(out.strip().split(","))
    forbidden = {"trio", "trio_websocket", "websockets", "prometheus_client", "asyncio", "h11"}
    assert not modules & forbidden, modules & forbidden
    server_side = {m for m in modules if m.startswith("gateway.")} - {
        "gateway.contract", "gateway.contract.records", "gateway.contract.protocol",
        "gateway.ingest", "gateway.ingest.book", "gateway.ingest.decimals",
        "gateway.retry", "gateway.retry.backoff",
    }  # fmt: skip
    assert all(m.startswith("gateway.client") for m in server_side), server_side
