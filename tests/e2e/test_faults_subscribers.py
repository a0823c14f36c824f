"""Fault injection, subscriber side: reconnect storms, subscribers that read slowly, stop
reading, or vanish without a close, while upstream data flows. Deterministic by seed; nothing
is asserted about timing. Checked afterwards: every subscriber that stayed within policy saw
gap-free sequences and the true books, policy events were announced (conflation snapshots,
close codes 4008/4009, resume answers), the gateway forgot every departed subscriber, and its
buffers stayed bounded all along (``Rig.sample_bounds``).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
import trio

from gateway.app import Gateway
from gateway.simulator import FaultConfig, SimulatorConfig
from tests.support.checks import leaked_subscribers, snapshot_reasons, subscriber_problems
from tests.support.client_workers import Subscriber
from tests.support.clients import RawSubscriber
from tests.support.rig import Rig, running_rig

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD"]
# Concrete streams only: a resume names the streams it continues.
CONCRETE = [
    ["book.BTCUSD", "trades.BTCUSD"],
    ["book.ETHUSD", "price.USDCUSD", "status.marketdata"],
    ["trades.BTCUSD", "trades.ETHUSD", "book.PAXGUSD"],
    ["book.BTCUSD", "book.ETHUSD", "book.PAXGUSD"],
    ["trades.PAXGUSD", "status.executiondata"],
]


HISTORY = 5000


def sim_config(seed: int, **kw: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {"levels": 80, "rate": 1500.0, "stablecoin_interval": 0.05}
    settings.update(kw)
    return SimulatorConfig(seed=seed, markets=MARKETS, **settings)


def problems_of(rig: Rig, subs: list[Subscriber]) -> list[str]:
    return [p for s in subs for p in subscriber_problems(s, rig.sim, MARKETS)]


def disconnects(gateway: Gateway, reason: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "paxos_gateway_subscriber_disconnects_total", {"reason": reason}
    )
    return 0.0 if value is None else value


def all_disconnects(gateway: Gateway) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for m in gateway.metrics.registry.collect()
        if m.name == "paxos_gateway_subscriber_disconnects"
        for s in m.samples
        if s.name.endswith("_total") and s.value  # reasons may be exported at 0 up front
    }


async def test_reconnect_storm_resumes_everyone() -> None:
    """Hundreds of subscribers drop at once (half with a close, half vanishing with a TCP
    reset) and reconnect at once, each resuming from its last record, while data flows; an
    upstream drop lands in the middle of the storm. Twice. Then a group that stayed away
    longer than the history holds gets ``resume_failed`` and a fresh snapshot, never a gap."""
    rng = random.Random(3)
    # 300 events/s: about 40k checked messages/s for the 200 clients, what their two worker
    # processes keep up with while the gateway shares the cores. History: what flows while a
    # storm's first leaver is away, with a wide margin. Most events are BTCUSD's (its book
    # passed seq 9,900 in two rounds), and on a loaded 2-core runner closing and reopening 200
    # clients took seconds: seen, the first leaver came back 1,093 and then 2,646 records
    # behind book.BTCUSD's head, and a history of 1,000 refused its resume.
    cfg = sim_config(201, rate=300.0, faults=FaultConfig(snapshot_split=20))
    async with running_rig(cfg, **{"server.history": str(HISTORY)}) as rig:
        subs = [Subscriber(f"s{i}", CONCRETE[i % len(CONCRETE)]) for i in range(200)]
        await rig.start(subs, MARKETS)
        for _ in range(2):
            # Each storm starts from clients that hold the head, so what a client has not yet
            # read when it drops is what flowed since: a client process behind by more than
            # the history would get resume_failed for its own slowness, not the gateway's.
            await rig.settle(MARKETS)
            rig.sim.resume()
            with trio.fail_after(20):
                await rig.sim.wait_for_events(rig.sim.events_generated + 500)
            closing = [s for s in subs if rng.random() < 0.5]
            aborting = [s for s in subs if s not in closing]
            async with trio.open_nursery() as storm:
                storm.start_soon(rig.close, closing)
                storm.start_soon(rig.abort, aborting)
            rig.sim.drop_all("/marketdata")
            with trio.fail_after(20):
                await rig.sim.wait_for_events(rig.sim.events_generated + 100)
            await rig.reopen(subs)
        await rig.settle(MARKETS)
        assert problems_of(rig, subs) == []
        for sub in subs:
            failed = [r for r in sub.view.responses if r["type"] == "resume_failed"]
            assert not failed, (
                sub.name,
                [(r["stream"], r["reason"], r["message"]) for r in failed],
            )
            answers = [r["type"] for r in sub.view.responses]
            assert answers.count("resumed") >= 2 * len(sub.streams), (sub.name, answers)

        # Laggards: away for more records than the history keeps (everyone else has left, so
        # the market is not slowed by 190 clients it does not need). BTCUSD's: its book moves
        # fastest, so the history passes soonest.
        laggards = [s for s in subs if s.streams == CONCRETE[0]][:10]
        await rig.close(subs)
        rig.sim.resume()
        held = {(s.name, n): s.view.held.get(n, 0) for s in laggards for n in s.streams}

        def history_passed() -> bool:
            heads = rig.heads()
            return all(
                heads[n] - held[s.name, n] > HISTORY
                for s in laggards for n in s.streams if n.startswith("book.")
            )  # fmt: skip

        with trio.fail_after(120):
            await rig.sim.wait_until(history_passed)
        await rig.reopen(laggards)
        await rig.settle(MARKETS, laggards)
        assert problems_of(rig, laggards) == []
        for sub in laggards:
            failed = [r for r in sub.view.responses if r["type"] == "resume_failed"]
            books = [s for s in sub.streams if s.startswith("book.")]
            assert {r["stream"] for r in failed} >= set(books), sub.name
            assert all(r["reason"] == "history_exhausted" for r in failed)
            assert snapshot_reasons(sub).count("resume_failed") == len(books)
        assert rig.bound_violations == []
        await rig.close(laggards)
        await rig.wait_no_subscribers()


@pytest.mark.parametrize("policy", ["conflate", "disconnect"])
async def test_slow_and_stopped_subscribers(policy: str) -> None:
    """Slow readers, subscribers that stop reading for a while and raw-socket ones that never
    read at all, among ordinary subscribers. Loopback kernel buffers absorb megabytes before a
    writer feels a client's silence, so the misbehaving ones also ask for data they do not
    read (book snapshots, by re-subscribing) to reach the gateway's policy in moments."""
    sets = {
        "server.buffer_bytes": "262144",
        "server.slow_policy": f'"{policy}"',
        "server.history": "100000",
        "server.ping_interval": "0.5",
        "server.ping_timeout": "1",
    }
    churned = ["book.ETHUSD", "book.PAXGUSD"]
    # 500 events/s: the policy is reached by churning snapshots, not by the market's pace,
    # and the ordinary subscribers' worker processes must keep up on a loaded 2-core runner.
    cfg = sim_config(301 + len(policy), levels=400, rate=500.0)
    async with running_rig(cfg, **sets) as rig:
        fast = [Subscriber(f"fast{i}", CONCRETE[i % len(CONCRETE)]) for i in range(10)]
        slow = [
            Subscriber(f"slow{i}", ["book.BTCUSD", *churned], read_delay=0.002, rcvbuf=4096)
            for i in range(3)
        ]
        stopped = [
            Subscriber(f"stopped{i}", ["book.BTCUSD", "trades.BTCUSD", *churned], rcvbuf=4096)
            for i in range(3)
        ]
        await rig.start(fast + slow + stopped, MARKETS)
        never: list[RawSubscriber] = []  # referenced: a collected socket would close (FIN)
        with trio.fail_after(30):
            for _ in range(3):
                raw = await RawSubscriber.connect(rig.base, "/v1/stream", rcvbuf=4096)
                never.append(raw)
                # The policy may cut a never-reader off before its burst is over: that is
                # what the burst is for.
                with contextlib.suppress(trio.BrokenResourceError):
                    await raw.send_text('{"op":"subscribe","streams":["book.*"]}')
                    for _ in range(100):
                        await raw.send_text('{"op":"unsubscribe","streams":["book.*"]}')
                        await raw.send_text('{"op":"subscribe","streams":["book.*"]}')
        await rig.clients.pause_reading(stopped)
        await rig.churn(slow + stopped, churned, 100)
        stats = rig.gateway.hub.stats
        with trio.fail_after(30):
            while stats.conflations + stats.slow_disconnects < 6:
                await trio.sleep(0.01)
        await rig.clients.resume_reading(stopped)
        # Whoever the gateway closed reconnects, resuming, as a client should. 1006: the
        # policy's drop without a closing handshake (the client did not even take the frame
        # being written, or the close frame, in time).
        reconnected = await rig.reconnect_closed(slow + stopped, MARKETS)
        assert all(code in (4008, 4009, 1006) for _, code in reconnected), reconnected
        # The never-readers are gone by the policy (4008) or by their silence (4009).
        with trio.fail_after(20):
            while rig.gateway.server.subscriber_count > len(fast + slow + stopped):
                await trio.sleep(0.01)
        rig.sim.resume()
        with trio.fail_after(20):
            await rig.sim.wait_for_events(rig.sim.events_generated + 1000)
        # A ping sent while a subscriber was not reading may have timed out only now.
        late = await rig.reconnect_closed(slow + stopped, MARKETS)
        assert all(code in (4008, 4009, 1006) for _, code in late), late
        # Every close so far was the policy's (or the ping timeout's): none for another reason.
        closes = all_disconnects(rig.gateway)
        assert set(closes) <= {"slow", "ping_timeout"}, closes
        assert sum(closes.values()) == len(reconnected) + len(late) + 3, closes
        await rig.settle(MARKETS)
        assert problems_of(rig, fast + slow + stopped) == []
        assert rig.bound_violations == []
        for sub in fast:
            assert sub.closed_code is None and sub.opens == 1, sub.name
            assert "conflation" not in snapshot_reasons(sub), sub.name
        if policy == "conflate":
            assert stats.conflations > 0
            # book-only readers are conflated, never cut off, unless they stop answering pings
            conflated = [s for s in slow if "conflation" in snapshot_reasons(s)]
            assert conflated, [(s.name, s.opens) for s in slow]
        else:
            assert stats.conflations == 0
            assert disconnects(rig.gateway, "slow") >= 3
        await rig.close(rig.subs)
        for raw in never:
            await raw.vanish(reset=True)
        await rig.wait_no_subscribers()


async def test_vanished_subscribers_are_forgotten() -> None:
    """Subscribers that disappear without a closing handshake: a TCP reset, a FIN under a
    raw WebSocket, and a peer that stays connected but never reads nor answers a ping (a host
    gone dark). The gateway must remove each; the subscribers that stay see nothing of it."""
    sets = {"server.ping_interval": "0.2", "server.ping_timeout": "0.5"}
    async with running_rig(sim_config(401, rate=800.0), **sets) as rig:
        stay = [Subscriber(f"stay{i}", CONCRETE[i % len(CONCRETE)]) for i in range(10)]
        doomed = [Subscriber(f"rst{i}", CONCRETE[i % len(CONCRETE)]) for i in range(30)]
        await rig.start(stay + doomed, MARKETS)
        with trio.fail_after(30):
            fins = [await RawSubscriber.connect(rig.base, "/v1/stream") for _ in range(10)]
            resets = [await RawSubscriber.connect(rig.base, "/v1/book/ETHUSD") for _ in range(10)]
            dark = [await RawSubscriber.connect(rig.base, "/v1/stream") for _ in range(10)]
            for raw in fins + dark:
                await raw.send_text('{"op":"subscribe","streams":["status.*","book.BTCUSD"]}')
        with trio.fail_after(30):  # all arrived (a never-reader may already be cut off)
            while (
                rig.gateway.server.subscriber_count + sum(all_disconnects(rig.gateway).values())
                < 70
            ):
                await trio.sleep(0.01)
        await rig.abort(doomed)
        for raw in fins:
            await raw.vanish(reset=False)
        for raw in resets:
            await raw.vanish(reset=True)
        # ``dark`` never reads: its pings go unanswered.
        with trio.fail_after(30):
            while rig.gateway.server.subscriber_count > len(stay):
                await trio.sleep(0.01)
        assert len(rig.gateway.hub.subscribers) == len(stay)
        assert disconnects(rig.gateway, "ping_timeout") + disconnects(rig.gateway, "slow") >= 10
        with trio.fail_after(20):
            await rig.sim.wait_for_events(rig.sim.events_generated + 500)
        await rig.settle(MARKETS, stay)
        assert problems_of(rig, stay) == []
        assert all(s.closed_code is None for s in stay)
        assert rig.bound_violations == []
        for raw in dark:
            await raw.vanish(reset=True)
        await rig.close(stay)
        await rig.wait_no_subscribers()
        assert leaked_subscribers(rig.gateway) == []
