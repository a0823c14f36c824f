"""A complete trade tape across upstream outages (issue 17): the real simulator (WebSocket and
REST, its rate limit on) drops the executions feed often; a subscriber of the gateway gets
EVERY execution the simulator generated from its tape's start on (the simulator's ground
truth, outages included, not only what was sent on live connections), exactly once, in
order, on ``/v1/trades/*`` and on the Paxos mirror path ``/executiondata`` alike.

Order: the simulator stamps with all nine digits here (``timestamp_digits=9``), so a trades
stream's ``exchange_time`` never decreases; within one stamp Paxos's own order and the
backfill's (``match_number``) may differ (see ``ingest/backfill.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import trio

from bench.downstream_model import Model
from gateway.app import Gateway
from gateway.ingest import timestamps
from gateway.simulator import FaultConfig, Simulator, SimulatorConfig
from gateway.simulator.events import Execution
from tests.support.clients import collect
from tests.support.config import gateway_config

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD"]


def _backfill_gateway(sim: Simulator, **sets: str) -> Gateway:
    config = gateway_config(
        sim.url,
        feeds=["/executiondata"],
        **{"backfill.enabled": "true", "backfill.rest_url": sim.rest_url, **sets},
    )
    return Gateway(config, handle_signals=False)


def _expected(truth: Sequence[Execution], received: set[str]) -> list[Execution]:
    """The truth from the first execution the subscriber got on: its tape."""
    first = min(i for i, e in enumerate(truth) if e.match_number in received)
    return list(truth[first:])


async def _wait_for(received: list[dict[str, Any]], ids: set[str], key: str) -> None:
    with trio.fail_after(60):
        while not ids <= {r[key] for r in received if key in r}:
            await trio.sleep(0.05)


async def test_every_execution_arrives_once_and_in_order_across_random_drops(
    nursery: trio.Nursery,
) -> None:
    sim = Simulator(
        SimulatorConfig(
            seed=17, markets=MARKETS, levels=20, rate=400.0, execution_ratio=0.3,
            timestamp_digits=9, faults=FaultConfig(drop_probability=0.02),
        )
    )  # fmt: skip
    await nursery.start(sim.serve)
    # Paxos's connection gate, shortened: each reconnect waits up to 0.5 s while the market
    # trades on, so the live feed misses executions on every machine. With no gate a fast
    # machine reconnects before the next execution and there would be nothing to backfill.
    gateway = _backfill_gateway(sim, **{"upstream.connect_interval": "0.5"})
    await nursery.start(gateway.serve)
    model = Model()
    trades: list[dict[str, Any]] = []
    mirror: list[dict[str, Any]] = []
    await nursery.start(collect, f"{gateway.subscriber_url}/v1/trades/*", trades)
    await nursery.start(collect, f"{gateway.subscriber_url}/executiondata", mirror)

    feed = gateway.feeds[0]
    with trio.fail_after(120):
        while feed.state.connections < 12:
            await trio.sleep(0.05)
    sim.faults.drop_probability = 0.0
    sim.pause()
    await sim.wait_idle()

    tape = feed.session.tape
    assert tape is not None
    truth = {m: sim.executions(m) for m in MARKETS}
    for m in MARKETS:  # wait for the last outage's backfill to reach the subscribers
        await _wait_for(trades, {truth[m][-1].match_number}, "match_number")
        await _wait_for(mirror, {truth[m][-1].match_number}, "match_number")
    for message in trades:
        if message.get("type") != "hello":
            model.feed(message)
    assert model.problems == [], model.problems[:5]

    for m in MARKETS:
        got = [r for r in model.records if r["type"] == "trade" and r["market"] == m]
        ids = [r["match_number"] for r in got]
        assert len(ids) == len(set(ids)), f"{m}: an execution was published twice"
        expected = _expected(truth[m], set(ids))
        assert sorted(ids) == sorted(e.match_number for e in expected), m
        values = {e.match_number: (e.price, e.amount) for e in expected}
        for r in got:  # REST pads, the WebSocket trims: one canonical decimal either way
            assert (Decimal(r["price"]), Decimal(r["amount"])) == values[r["match_number"]]
        stamps = [int(r["exchange_time"]) for r in got]  # digit strings (protocol v2)
        assert stamps == sorted(stamps), f"{m}: out of exchange order"
        # the mirror path: the same tape in Paxos's format
        paxos = [x for x in mirror if x.get("market") == m]
        mirror_ids = [x["match_number"] for x in paxos]
        assert len(mirror_ids) == len(set(mirror_ids)), f"{m}: mirror published one twice"
        assert sorted(mirror_ids) == sorted(
            e.match_number for e in _expected(truth[m], set(mirror_ids))
        )
        mirror_stamps = [timestamps.parse_ns(x["executed_at"]) for x in paxos]
        assert mirror_stamps == sorted(mirror_stamps)

    backfilled = [r for r in model.records if r.get("backfilled")]
    assert backfilled, "the drops should have made the live feed miss some executions"
    assert len(backfilled) == tape.stats.backfilled
    assert tape.stats.gaps == 0 and tape.stats.failures == 0
    requests = gateway.metrics.backfill_requests
    assert requests.labels("recent_executions", "ok")._value.get() >= len(MARKETS)
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()


async def _settled(gateway: Gateway, connections: int) -> None:
    """Until the feed made ``connections`` connections and their backfill is done."""
    feed = gateway.feeds[0]
    tape = feed.session.tape
    assert tape is not None
    with trio.fail_after(60):
        while (
            feed.state.connections < connections
            or not feed.state.connected
            or tape.pending()
            or tape.holding_all
        ):
            await trio.sleep(0.02)


async def _outage(sim: Simulator, executions: int) -> None:
    """Every feed down (reconnects refused) until each market traded ``executions`` times."""
    before = {m: len(sim.executions(m)) for m in MARKETS}
    sim.refuse_upgrades(503)
    sim.drop_all()
    with trio.fail_after(60):
        while any(len(sim.executions(m)) < before[m] + executions for m in MARKETS):
            await trio.sleep(0.02)
    sim.refuse_upgrades(None)


async def test_an_outage_longer_than_the_rest_window_is_a_known_gap(
    nursery: trio.Nursery,
) -> None:
    sim = Simulator(
        SimulatorConfig(
            seed=23, markets=MARKETS, levels=20, rate=400.0, execution_ratio=0.3,
            timestamp_digits=9,
        )
    )  # fmt: skip
    sim.rest.recent_executions = 20
    await nursery.start(sim.serve)
    gateway = _backfill_gateway(sim, **{"backfill.window": "20"})
    await nursery.start(gateway.serve)
    received: list[dict[str, Any]] = []
    await nursery.start(collect, f"{gateway.subscriber_url}/v1/trades/*", received)
    await _settled(gateway, 1)
    await _outage(sim, 40)
    await _settled(gateway, 2)
    sim.pause()
    await sim.wait_idle()
    for m in MARKETS:
        await _wait_for(received, {sim.executions(m)[-1].match_number}, "match_number")

    tape = gateway.feeds[0].session.tape
    assert tape is not None and tape.stats.gaps == len(MARKETS)
    for m in MARKETS:
        gaps = [r for r in received if r.get("state") == "gap" and r["stream"] == f"trades.{m}"]
        assert len(gaps) == 1, m
        gap_from, gap_to = int(gaps[0]["gap_from"]), int(gaps[0]["gap_to"])
        got = {r["match_number"] for r in received if r.get("type") == "trade" and r["market"] == m}
        expected = _expected(sim.executions(m), got)
        missing = [e for e in expected if e.match_number not in got]
        assert missing, m
        # the announced range covers exactly what fell out of the window
        assert all(gap_from <= e.executed_at_ns <= gap_to for e in missing), m
        inside = [e for e in expected if gap_from < e.executed_at_ns < gap_to]
        assert {e.match_number for e in inside} <= {e.match_number for e in missing}, m
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()


async def test_a_failing_backfill_is_announced_and_the_tape_goes_on(
    nursery: trio.Nursery,
) -> None:
    sim = Simulator(
        SimulatorConfig(seed=29, markets=MARKETS, levels=20, rate=400.0, execution_ratio=0.3)
    )
    await nursery.start(sim.serve)
    gateway = _backfill_gateway(sim, **{"backfill.timeout": "1"})
    await nursery.start(gateway.serve)
    model = Model()
    received: list[dict[str, Any]] = []
    await nursery.start(collect, f"{gateway.subscriber_url}/v1/trades/*", received)
    await _settled(gateway, 1)
    sim.faults.rest_error_probability = 1.0  # every REST answer a 503: retried, then given up
    await _outage(sim, 5)
    await _settled(gateway, 2)  # the round timed out: nothing held any more
    sim.pause()
    await sim.wait_idle()
    for m in MARKETS:
        await _wait_for(received, {sim.executions(m)[-1].match_number}, "match_number")
    for message in received:
        if message.get("type") != "hello":
            model.feed(message)
    assert model.problems == []
    failed = [r for r in model.records if r.get("state") == "backfill_failed"]
    assert {r["stream"] for r in failed} >= {f"trades.{m}" for m in MARKETS}
    assert all("timed out" in r["reason"] for r in failed)
    tape = gateway.feeds[0].session.tape
    assert tape is not None and tape.stats.failures >= 1
    assert gateway.metrics.backfill_requests.labels("markets", "server_error")._value.get() > 0
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()
