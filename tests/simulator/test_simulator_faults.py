"""Fault injection over real sockets: drops, stalls, bad frames, extra fields, overflow."""

from __future__ import annotations

import functools
import json
from typing import Any

import trio
from trio.testing import MockClock

from gateway.simulator import FaultConfig
from tests.support.simulator_support import Replica, client, parse, serving, unthrottled

FEW = ("BTCUSD", "ETHUSD")


fast = functools.partial(unthrottled, seed=9, markets=FEW, levels=40)


async def test_drop_all_abrupt_and_graceful() -> None:
    with trio.fail_after(10):
        async with (
            serving(fast(), paused=True) as sim,
            client(sim.url + "/marketdata") as a,
            client(sim.url + "/executiondata") as b,
        ):
            await sim.wait_for_connections(2)
            assert sim.drop_all("/executiondata", graceful=True) == 1
            assert await b.wait_closed() == 1001
            assert a.close_code is None
            assert sim.drop_all() == 1
            assert await a.wait_closed() == 1006  # TCP closed, no close frame
            await sim.wait_until(lambda: not sim.connections)
            # and the server still serves
            async with client(sim.url + "/marketdata/BTCUSD") as c:
                await c.wait_for(1)


async def test_random_drop() -> None:
    faults = FaultConfig(drop_probability=0.02)
    with trio.fail_after(10):
        async with serving(fast(faults=faults)) as sim, client(sim.url + "/marketdata/BTCUSD") as c:
            await sim.wait_for_connections(1)
            (conn,) = sim.connections
            assert await c.wait_closed() == 1006
            assert conn.drop_reason == "random"
            assert 1 <= conn.messages_sent == len(c.messages) < 2000


async def test_stall_stops_data_and_pongs_without_closing(slow_autojump: MockClock) -> None:
    with trio.fail_after(300):
        # a low rate: each generator wake-up costs the autojump threshold in real time
        async with (
            serving(fast(rate=4.0)) as sim,
            client(sim.url + "/marketdata/BTCUSD", disconnect_timeout=1) as c,
        ):
            await c.wait_for(5)
            with trio.fail_after(1):
                await c.ws.ping()
            assert sim.stall("/marketdata/BTCUSD") == 1
            (conn,) = sim.connections
            frozen = conn.messages_sent
            with trio.move_on_after(5) as scope:
                await c.ws.ping(b"lost")
            assert scope.cancelled_caught, "a stalled connection answered a ping"
            assert conn.messages_sent <= frozen + 1  # at most the send already under way
            assert conn.stalled and conn.queued > 0
            assert c.close_code is None and sim.connections == [conn]
            received = len(c.messages)
            sim.unstall()
            with trio.fail_after(1):
                await c.ws.ping(b"back")
            await c.wait_for(received + 10)
            assert conn.messages_sent >= frozen + 10
            # the stream is intact: every message after the stall still applies cleanly
            replica = Replica()
            for text in c.messages:
                replica.apply(parse(text))


async def test_client_giving_up_on_a_stalled_connection_ends_it(
    slow_autojump: MockClock,
) -> None:
    with trio.fail_after(300):
        async with serving(fast(), paused=True) as sim:
            async with client(sim.url + "/executiondata", disconnect_timeout=5) as c:
                await c.wait_for(len(FEW))
                sim.stall()
                with trio.move_on_after(10):
                    await c.ws.ping()
            # the client closed (its close frame unanswered, then TCP): the server notices
            await sim.wait_until(lambda: not sim.connections)


async def test_random_stall_from_the_first_message(slow_autojump: MockClock) -> None:
    faults = FaultConfig(stall_probability=1.0)
    with trio.fail_after(300):
        async with (
            serving(fast(faults=faults), paused=True) as sim,
            client(sim.url + "/marketdata/ETHUSD", disconnect_timeout=1) as c,
        ):
            await sim.wait_for_connections(1)
            with trio.move_on_after(15) as scope:
                await c.ws.ping()
            assert scope.cancelled_caught
            assert c.messages == []
            assert sim.connections[0].stalled
            # a stalled connection can still be dropped
            assert sim.drop_all() == 1
            assert await c.wait_closed() == 1006


def _is_real(text: str) -> dict[str, Any] | None:
    """A frame a strict reader accepts: a JSON object whose values are all strings."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        if key in ("bids", "asks", "final_snapshot"):
            continue
        if not isinstance(value, str):
            return None
    return obj


async def test_bad_frames_are_extra_and_not_truth() -> None:
    faults = FaultConfig(
        bad_frame_probability=0.2, bad_frame_kinds=("malformed", "wrong_types", "truncated")
    )
    with trio.fail_after(20):
        async with (
            serving(fast(max_events=3000, faults=faults), paused=True) as sim,
            client(sim.url + "/marketdata") as c,
        ):
            await sim.wait_for_connections(1)
            sim.resume()
            await sim.finished.wait()
            await sim.wait_idle()
            (conn,) = sim.connections
            await c.wait_for(conn.messages_sent + conn.bad_frames_sent)
            real = [obj for obj in map(_is_real, c.messages) if obj is not None]
            assert len(real) == conn.messages_sent
            assert len(c.messages) - len(real) == conn.bad_frames_sent > 200
            replicas = {m: Replica() for m in FEW}
            for obj in real:
                replicas[obj["market"]].apply(obj)
            for market in FEW:
                assert replicas[market].levels() == sim.truth(market)


async def test_oversized_frame_closes_a_limited_client() -> None:
    faults = FaultConfig(
        bad_frame_probability=1.0, bad_frame_kinds=("oversized",), oversized_bytes=70_000
    )
    with trio.fail_after(10):
        async with (
            serving(fast(faults=faults)) as sim,
            client(sim.url + "/marketdata/BTCUSD", max_message_size=65_536) as c,
        ):
            assert await c.wait_closed() == 1009
            assert parse(c.messages[0])["type"] == "SNAPSHOT"  # snapshots get no bad frame
            assert len(c.messages) == 1


async def test_extra_fields_are_real_messages() -> None:
    faults = FaultConfig(extra_field_probability=0.5)
    with trio.fail_after(20):
        async with (
            serving(fast(max_events=2000, faults=faults), paused=True) as sim,
            client(sim.url + "/marketdata/ETHUSD") as c,
        ):
            await sim.wait_for_connections(1)
            sim.resume()
            await sim.finished.wait()
            await sim.wait_idle()
            await c.wait_for(sim.connections[0].messages_sent)
            objs = [parse(m) for m in c.messages]
            known = {"type", "market", "side", "price", "amount", "bids", "asks"}
            known.add("final_snapshot")
            extra = [o for o in objs if set(o) - known]
            assert len(objs) // 4 < len(extra) < len(objs) * 3 // 4
            assert all(isinstance(o[k], str) for o in extra for k in set(o) - known)
            replica = Replica()
            for obj in objs:
                replica.apply(obj)
            assert replica.levels() == sim.truth("ETHUSD")


async def test_a_stalled_connection_overflows_without_blocking_the_others() -> None:
    with trio.fail_after(20):
        async with (
            serving(fast(send_buffer=100), paused=True) as sim,
            client(sim.url + "/marketdata") as stuck,
            client(sim.url + "/marketdata") as reader,
        ):
            await sim.wait_for_connections(2)
            first, _second = sim.connections
            first.stall()
            sim.resume()
            # backpressure ignores the stalled connection, so generation goes on
            await sim.wait_for_events(sim.events_generated + 3000)
            await sim.wait_for_connections(1)
            assert first.drop_reason == "overflow"
            assert reader.close_code is None
            assert stuck.close_code in (None, 1006)


async def test_faults_can_be_switched_while_running() -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim, client(sim.url + "/marketdata/BTCUSD") as c:
            await c.wait_for(1)
            sim.faults.drop_probability = 1.0
            sim.inject_crossed("BTCUSD")  # the next message triggers the drop
            assert await c.wait_closed() == 1006
            sim.faults.drop_probability = 0.0
            async with client(sim.url + "/marketdata/BTCUSD") as c:
                await c.wait_for(1)
