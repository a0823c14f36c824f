"""The whole gateway against the real simulator over loopback sockets, with faults.

Ingest: after thousands of updates with random upstream disconnects, split snapshots and
string ``final_snapshot``s, every gateway book equals the simulator's truth, and no execution
is duplicated; with disconnects made while the market is quiet, none is lost either (the
Paxos feed cannot replay what happened while nobody listened, so that is the strongest
promise a gateway can make — see the README).

Fan-out: 200 ``websockets`` subscribers in worker processes over all kinds of streams, half
of them late joiners and some resuming after a disconnect, see gap-free sequences and books
identical to the truth.
"""

from __future__ import annotations

import json
import random
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from bench.downstream_model import Model
from gateway.app import Gateway
from gateway.simulator import FaultConfig, Simulator, SimulatorConfig
from tests.support.checks import wait_books_equal_truth
from tests.support.client_workers import Subscriber, client_workers
from tests.support.config import gateway_config

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD"]


async def _collect(url: str, model: Model, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_websocket_url(url) as ws:
        task_status.started()
        while True:
            try:
                msg = json.loads(await ws.get_message())
            except ConnectionClosed:
                return  # the gateway's shutdown ends the test
            if msg.get("type") != "hello":
                model.feed(msg)


async def test_books_and_executions_survive_random_disconnects(nursery: trio.Nursery) -> None:
    sim = Simulator(
        SimulatorConfig(
            seed=11, markets=MARKETS, levels=150, rate=3000.0, stablecoin_interval=0.05,
            number_style="mixed",
            faults=FaultConfig(
                drop_probability=0.003, snapshot_split=40, final_snapshot="string",
                extra_field_probability=0.01,
            ),
        )
    )  # fmt: skip
    sim_url = await nursery.start(sim.serve)
    gateway = Gateway(gateway_config(sim_url), handle_signals=False)
    await nursery.start(gateway.serve)
    trades = Model()
    await nursery.start(_collect, f"{gateway.subscriber_url}/v1/trades/*", trades)

    # Phase 1: heavy flow with random drops (the simulator closes connections mid-stream,
    # including in the middle of split snapshots).
    with trio.fail_after(60):
        await sim.wait_for_events(6000)
    sim.pause()
    await sim.wait_idle()
    await wait_books_equal_truth(sim, gateway, MARKETS)
    reconnects = sum(f.state.connections for f in gateway.feeds) - len(gateway.feeds)
    assert reconnects >= 3, "the faults should have forced reconnects"

    # Phase 2: disconnects while the market is quiet lose nothing; every replayed last
    # execution is a duplicate that must be suppressed.
    sim.faults.drop_probability = 0.0
    first_quiet = len(sim.sent_executions)
    dups_before = sum(f.session.stats.duplicates_suppressed for f in gateway.feeds)
    for _ in range(4):
        connections = sum(f.state.connections for f in gateway.feeds)
        sim.resume()
        with trio.fail_after(30):
            await sim.wait_for_events(sim.events_generated + 400)
        sim.pause()
        await sim.wait_idle()
        await wait_books_equal_truth(sim, gateway, MARKETS)
        assert sim.drop_all() == len(gateway.feeds)
        with trio.fail_after(30):
            while sum(f.state.connections for f in gateway.feeds) < connections + 3:
                await trio.sleep(0.02)
        await wait_books_equal_truth(sim, gateway, MARKETS)

    with trio.fail_after(30):
        while not {e.match_number for e in sim.sent_executions[first_quiet:]} <= _trade_ids(trades):
            await trio.sleep(0.02)
    received = [r["match_number"] for r in trades.records if r["type"] == "trade"]
    assert len(received) == len(set(received)), "an execution was published twice"
    sent = {e.match_number for e in sim.sent_executions}
    assert set(received) <= sent
    assert {e.match_number for e in sim.sent_executions[first_quiet:]} <= set(received)
    # Each reconnect replays the markets' last executions; the last one's replay may still be
    # on its way when every new execution has arrived.
    with trio.fail_after(30):
        while sum(
            f.session.stats.duplicates_suppressed for f in gateway.feeds
        ) - dups_before < 4 * len(MARKETS):
            await trio.sleep(0.02)
    assert trades.problems == []
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()


def _trade_ids(model: Model) -> set[str]:
    return {r["match_number"] for r in model.records if r["type"] == "trade"}


SUBSCRIPTIONS = [
    ["*.*"],
    ["book.*"],
    ["book.BTCUSD", "trades.*"],
    ["book.ETHUSD", "price.*", "status.*"],
    ["trades.BTCUSD", "trades.ETHUSD", "book.PAXGUSD"],
    ["*.BTCUSD"],
    ["price.USDCUSD", "book.BTCUSD", "book.ETHUSD"],
    ["status.*", "trades.*", "book.PAXGUSD"],
]


async def test_200_subscribers_see_gap_free_streams_and_true_books(
    nursery: trio.Nursery,
) -> None:
    # The subscribers run in worker processes (tests.client_workers). At 150 events/s their
    # decoding and checking (some 20k messages/s) keeps up on two cores shared with the
    # gateway and a busy machine: a client that falls seconds behind its own socket cannot
    # even send a handshake in time, and that would be the test's failure, not the gateway's.
    sim = Simulator(
        SimulatorConfig(
            seed=5, markets=MARKETS, levels=100, rate=150.0, stablecoin_interval=0.05,
            faults=FaultConfig(snapshot_split=30),
        )
    )  # fmt: skip
    sim_url = await nursery.start(sim.serve)
    gateway = Gateway(gateway_config(sim_url, **{"server.history": "100000"}), handle_signals=False)
    await nursery.start(gateway.serve)
    base = gateway.subscriber_url
    rng = random.Random(7)
    subs = [Subscriber(f"s{i}", SUBSCRIPTIONS[i % len(SUBSCRIPTIONS)]) for i in range(200)]
    early, late = subs[:100], subs[100:]
    # Resumers hold concrete streams only: a resume names the streams it continues.
    resumers = [s for s in early if "*" not in "".join(s.streams) and rng.random() < 0.5]
    async with client_workers() as clients:
        await clients.open(early, base, resume=False)
        with trio.fail_after(30):
            await sim.wait_for_events(sim.events_generated + 1500)
        # Late joiners arrive mid-flow: their first book record must be a snapshot valid at
        # the head, followed by exactly the updates after it.
        await clients.open(late, base, resume=False)
        # Some early subscribers drop and resume from their last record while data flows.
        await clients.close(resumers)
        with trio.fail_after(30):
            await sim.wait_for_events(sim.events_generated + 1000)
        await clients.open(resumers, base, resume=True)
        assert sim.drop_all(path="/marketdata") == 1  # a resync while everyone listens
        with trio.fail_after(30):
            await sim.wait_for_events(sim.events_generated + 1500)
        sim.pause()
        await sim.wait_idle()
        await wait_books_equal_truth(sim, gateway, MARKETS)
        heads = {info.stream: info.seq for info in gateway.hub.stream_list()}
        await clients.wait_reached(subs, heads, timeout=180)
        await clients.close(subs)

    for sub in subs:
        assert sub.view.problems == [], (sub.name, sub.view.problems[:5])
        assert sub.closed_code is None, (sub.name, sub.closed_code)
        for market in MARKETS:
            book = sub.view.books.get(f"book.{market}")
            assert book is None or book == sim.truth(market), (sub.name, market)
    for sub in resumers:
        answers = [r["type"] for r in sub.view.responses]
        assert "resumed" in answers, (sub.name, answers)
    # Every subscriber of a book got it; every stream any subscriber asked for exists.
    assert all(f"book.{m}" in heads for m in MARKETS)
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()


async def test_a_paxos_client_pointed_at_the_mirror_paths_sees_the_truth(
    nursery: trio.Nursery,
) -> None:
    """The strictest Paxos-format client at hand is the gateway's own upstream side: a second
    gateway whose "Paxos" is the first gateway's mirror paths ends with the true books and
    every execution exactly once, through an upstream resync of the first gateway."""
    sim = Simulator(SimulatorConfig(seed=9, markets=MARKETS, levels=80, rate=2000.0))
    sim_url = await nursery.start(sim.serve)
    first = Gateway(gateway_config(sim_url), handle_signals=False)
    await nursery.start(first.serve)
    second = Gateway(gateway_config(first.subscriber_url), handle_signals=False)
    await nursery.start(second.serve)
    trades = Model()
    await nursery.start(_collect, f"{second.subscriber_url}/v1/trades/*", trades)

    with trio.fail_after(30):
        await sim.wait_for_events(sim.events_generated + 2000)
    assert sim.drop_all(path="/marketdata") == 1  # the first gateway resyncs its books
    with trio.fail_after(30):
        await sim.wait_for_events(sim.events_generated + 2000)
    sim.pause()
    await sim.wait_idle()
    await wait_books_equal_truth(sim, first, MARKETS)
    await wait_books_equal_truth(sim, second, MARKETS)
    with trio.fail_after(30):
        while not {e.match_number for e in sim.sent_executions[-20:]} <= _trade_ids(trades):
            await trio.sleep(0.02)
    received = [r["match_number"] for r in trades.records if r["type"] == "trade"]
    assert len(received) == len(set(received))
    assert trades.problems == []
    for gateway in (second, first):
        gateway.request_shutdown()
        with trio.fail_after(10):
            await gateway.stopped.wait()
    nursery.cancel_scope.cancel()
