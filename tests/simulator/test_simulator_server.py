"""The simulator over real sockets (127.0.0.1, ephemeral ports) with a real client."""

from __future__ import annotations

import functools
from decimal import Decimal

import pytest
import trio
import trio_websocket
from trio.testing import MockClock

from gateway.simulator import FaultConfig, SimulatorConfig
from tests.support.simulator_support import (
    Replica,
    assert_compact_all_strings,
    client,
    parse,
    serving,
    unthrottled,
)

T0 = 1_700_000_000_000_000_000
FEW = ("BTCUSD", "ETHUSD", "UNIUSD")


fast = functools.partial(unthrottled, seed=5, markets=FEW, levels=50)


async def test_book_path_one_market_snapshot_then_updates_equal_truth() -> None:
    with trio.fail_after(20):
        async with (
            serving(fast(max_events=4000, send_buffer=200), paused=True) as sim,
            client(sim.url + "/marketdata/BTCUSD") as c,
        ):
            await sim.wait_for_connections(1)
            sim.resume()
            await sim.finished.wait()
            await sim.wait_idle()
            (conn,) = sim.connections
            assert conn.drop_reason is None  # backpressure kept the queue bounded
            await c.wait_for(conn.messages_sent)
            replica = Replica()
            objs = [assert_compact_all_strings(m) for m in c.messages]
            assert objs[0]["type"] == "SNAPSHOT" and objs[0]["final_snapshot"] is True
            assert {o["market"] for o in objs} == {"BTCUSD"}
            assert all(o["type"] == "UPDATE" for o in objs[1:])
            assert len(objs) > 1000
            for obj in objs:
                replica.apply(obj)
            assert replica.levels() == sim.truth("BTCUSD")
            assert 4000 <= sim.events_generated <= 4008


async def test_all_markets_book_path_one_snapshot_per_market() -> None:
    with trio.fail_after(20):
        async with (
            serving(fast(max_events=6000, send_buffer=300), paused=True) as sim,
            client(sim.url + "/marketdata") as c,
        ):
            await sim.wait_for_connections(1)
            sim.resume()
            await sim.finished.wait()
            await sim.wait_idle()
            await c.wait_for(sim.connections[0].messages_sent)
            objs = [assert_compact_all_strings(m) for m in c.messages]
            heads = objs[: len(FEW)]
            assert [o["type"] for o in heads] == ["SNAPSHOT"] * len(FEW)
            assert [o["market"] for o in heads] == list(FEW)
            replicas = {m: Replica() for m in FEW}
            for obj in objs:
                replicas[obj["market"]].apply(obj)
            for market in FEW:
                assert replicas[market].levels() == sim.truth(market), market


async def test_split_snapshot_with_string_flags() -> None:
    faults = FaultConfig(snapshot_split=15, final_snapshot="string")
    with trio.fail_after(20):
        async with (
            serving(fast(max_events=500, faults=faults), paused=True) as sim,
            client(sim.url + "/marketdata/ETHUSD") as c,
        ):
            await c.wait_for(4)  # 50 levels per side, 15 per fragment
            flags = [parse(m).get("final_snapshot") for m in c.messages[:4]]
            assert flags == ["false", "false", "false", "true"]
            sim.resume()
            await sim.finished.wait()
            await sim.wait_idle()
            await c.wait_for(sim.connections[0].messages_sent)
            replica = Replica()
            for text in c.messages:
                replica.apply(parse(text))
            assert replica.levels() == sim.truth("ETHUSD")


async def test_missing_final_snapshot() -> None:
    faults = FaultConfig(final_snapshot="missing")
    with trio.fail_after(10):
        async with (
            serving(fast(faults=faults), paused=True) as sim,
            client(sim.url + "/marketdata/UNIUSD") as c,
        ):
            await c.wait_for(1)
            snapshot = parse(c.messages[0])
            assert snapshot["type"] == "SNAPSHOT" and "final_snapshot" not in snapshot
            bids, asks = sim.truth("UNIUSD")
            assert [(Decimal(x["price"]), Decimal(x["amount"])) for x in snapshot["bids"]] == bids
            assert [(Decimal(x["price"]), Decimal(x["amount"])) for x in snapshot["asks"]] == asks


async def test_execution_path_replays_last_execution_then_streams() -> None:
    with trio.fail_after(20):
        async with serving(fast(max_events=3000, execution_ratio=0.3), paused=True) as sim:
            last = sim.model.last_execution("ETHUSD")
            async with client(sim.url + "/executiondata/ETHUSD") as c:
                await c.wait_for(1)
                assert c.messages[0] == last.text
                sim.resume()
                await sim.finished.wait()
                await sim.wait_idle()
                await c.wait_for(sim.connections[0].messages_sent)
            expected = [e.text for e in sim.sent_executions if e.market == "ETHUSD"]
            assert c.messages == expected[expected.index(last.text) :]
            assert len(c.messages) > 50
            # a reconnect replays the last execution again (clients deduplicate)
            sim.pause()
            async with client(sim.url + "/executiondata/ETHUSD") as again:
                await again.wait_for(1)
                assert again.messages[0] == c.messages[-1]


async def test_all_markets_execution_path_replays_one_per_market() -> None:
    with trio.fail_after(10):
        async with (
            serving(fast(execution_ratio=0.5), paused=True) as sim,
            client(sim.url + "/executiondata") as c,
        ):
            await c.wait_for(len(FEW))
            assert c.messages == [sim.model.last_execution(m).text for m in FEW]
            sim.resume()
            await sim.wait_for_events(sim.events_generated + 500)
            sim.pause()
            await sim.wait_idle()
            await c.wait_for(sim.connections[0].messages_sent)
            texts = {e.text for e in sim.sent_executions}
            assert set(c.messages) <= texts
            assert {parse(m)["market"] for m in c.messages[len(FEW) :]} == set(FEW)


async def test_stablecoin_paths_send_current_price_then_ticks() -> None:
    with trio.fail_after(10):
        async with serving(fast(stablecoin_interval=0.01, rate=10.0)) as sim:
            for path in ("/marketdata/stablecoin", "/marketdata/stablecoin/USDCUSD"):
                sim.pause()
                current = sim.sent_prices[-1].text
                async with client(sim.url + path) as c:
                    await c.wait_for(1)
                    assert c.messages[0] == current
                    sim.resume()
                    await c.wait_for(5)
                    sent = [t.text for t in sim.sent_prices]
                    start = sent.index(current)
                    assert c.messages[:5] == sent[start : start + 5]
                    for text in c.messages:
                        obj = assert_compact_all_strings(text)
                        assert obj["market"] == "USDCUSD" and len(obj["price"]) == 6


@pytest.mark.parametrize(
    "path",
    [
        "/marketdata/DOGEUSD",
        "/executiondata/DOGEUSD",
        "/executiondata/USDCUSD",
        "/marketdata/USDCUSD",
        "/marketdata/stablecoin/BTCUSD",
        "/marketdata/LTCUSD",  # a real Paxos market, but not simulated here
        "/nothing",
    ],
)
async def test_unknown_market_gets_error_frame(path: str) -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim, client(sim.url + path) as c:
            assert await c.wait_closed() == 1000
            assert c.messages == ['{"error":"Not Found"}']


@pytest.mark.parametrize(("how", "status"), [("http_404", 404), ("http_503", 503)])
async def test_unknown_market_refused_upgrade(how: str, status: int) -> None:
    faults = FaultConfig(unknown_market=how)  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with serving(fast(faults=faults), paused=True) as sim:
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with client(sim.url + "/marketdata/DOGEUSD"):
                    pass
            assert info.value.status_code == status
            async with client(sim.url + "/marketdata/BTCUSD") as c:
                await c.wait_for(1)


async def test_refuse_upgrades_on_command() -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim:
            sim.refuse_upgrades(503)
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with client(sim.url + "/marketdata"):
                    pass
            assert info.value.status_code == 503
            sim.refuse_upgrades(None)
            async with client(sim.url + "/marketdata") as c:
                await c.wait_for(len(FEW))
            with pytest.raises(ValueError):
                sim.refuse_upgrades(200)


async def test_answers_pings_and_counts_per_connection() -> None:
    with trio.fail_after(10):
        async with (
            serving(fast(), paused=True) as sim,
            client(sim.url + "/marketdata/BTCUSD") as a,
            client(sim.url + "/executiondata") as b,
        ):
            await a.wait_for(1)
            await b.wait_for(len(FEW))
            await a.ws.ping()
            await b.ws.ping()
            await sim.wait_idle()
            counts = {c.path: c.messages_sent for c in sim.connections}
            assert counts == {"/marketdata/BTCUSD": 1, "/executiondata": len(FEW)}
            assert [c.feed for c in sim.connections] == ["book", "executions"]


async def test_inject_crossed_is_sent_but_not_truth() -> None:
    with trio.fail_after(10):
        async with (
            serving(fast(), paused=True) as sim,
            client(sim.url + "/marketdata/BTCUSD") as c,
            client(sim.url + "/marketdata") as everything,
            client(sim.url + "/marketdata/ETHUSD") as other,
        ):
            await sim.wait_for_connections(3)
            before = sim.truth("BTCUSD")
            assert sim.inject_crossed("BTCUSD") == 2
            await sim.wait_idle()
            await c.wait_for(2)
            await everything.wait_for(len(FEW) + 1)
            replica = Replica()
            for text in c.messages:
                replica.apply(parse(text))
            bids, asks = replica.levels()
            assert bids[0][0] >= asks[0][0]  # the client's book is crossed
            assert everything.messages[-1] == c.messages[-1]
            assert len(other.messages) == 1
            assert sim.truth("BTCUSD") == before
            assert not sim.model.is_crossed("BTCUSD")
            async with client(sim.url + "/marketdata/BTCUSD") as fresh:
                await fresh.wait_for(1)
                replica = Replica()
                replica.apply(parse(fresh.messages[0]))
                assert replica.levels() == before
            with pytest.raises(KeyError):
                sim.inject_crossed("DOGEUSD")


async def test_same_seed_same_wire_sequence() -> None:
    async def record(seed: int) -> list[str]:
        config = fast(seed=seed, max_events=1500, execution_ratio=0.3, clock_ns=lambda: T0)
        async with (
            serving(config, paused=True) as sim,
            client(sim.url + "/marketdata") as book,
            client(sim.url + "/executiondata") as trades,
        ):
            await sim.wait_for_connections(2)
            sim.resume()
            await sim.finished.wait()
            await sim.wait_idle()
            sent = {c.path: c.messages_sent for c in sim.connections}
            await book.wait_for(sent["/marketdata"])
            await trades.wait_for(sent["/executiondata"])
            return book.messages + trades.messages

    with trio.fail_after(20):
        first, second, other = await record(11), await record(11), await record(12)
    assert first == second
    assert first != other


async def test_rate_is_events_per_second(autojump_clock: MockClock) -> None:
    with trio.fail_after(100):
        async with serving(fast(rate=100.0)) as sim:
            start = sim.events_generated
            await trio.sleep(10)
            assert 990 <= sim.events_generated - start <= 1010
            sim.pause()
            paused_at = sim.events_generated
            await trio.sleep(10)
            assert sim.events_generated == paused_at
            sim.resume()
            await trio.sleep(1)
            assert 95 <= sim.events_generated - paused_at <= 105  # no catch-up burst


async def test_max_events_stops_everything(autojump_clock: MockClock) -> None:
    with trio.fail_after(100):
        async with serving(fast(rate=1000.0, max_events=250, stablecoin_interval=1.0)) as sim:
            await sim.finished.wait()
            assert 250 <= sim.events_generated <= 258
            prices = len(sim.sent_prices)
            await trio.sleep(5)
            assert len(sim.sent_prices) == prices
            with pytest.raises(RuntimeError):
                await sim.wait_for_events(10**6)


async def test_connect_interval_delays_but_never_refuses(slow_autojump: MockClock) -> None:
    faults = FaultConfig(connect_interval=1.0)
    with trio.fail_after(30):
        async with serving(fast(faults=faults), paused=True) as sim:
            start = trio.current_time()
            arrived: list[float] = []
            async with trio.open_nursery() as nursery:
                for _ in range(3):

                    async def one() -> None:
                        async with client(sim.url + "/marketdata/BTCUSD") as c:
                            await c.wait_for(1)
                            arrived.append(trio.current_time() - start)

                    nursery.start_soon(one)
            assert len(arrived) == 3
            arrived.sort()
            assert arrived[0] < 0.5
            assert 1.0 <= arrived[1] < 1.5
            assert 2.0 <= arrived[2] < 2.5


def test_config_is_checked() -> None:
    for bad in (
        {"levels": 0},
        {"rate": -1.0},
        {"markets": ("DOGEUSD",)},
        {"timestamp_digits": 10},
        {"faults": FaultConfig(drop_probability=2.0)},
        {"faults": FaultConfig(bad_frame_kinds=())},
        {"port": 70000},
    ):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad).check()
