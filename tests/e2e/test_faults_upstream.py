"""Fault injection, upstream side: the whole gateway with subscribers attached while the
simulated Paxos misbehaves. Deterministic by seed (the simulator draws every random fault from
seeded generators); nothing is asserted about timing, only about what subscribers end up with.

After each fault the market is paused and the test waits (bounded) until the gateway has
repaired itself; then every subscriber must have seen gap-free sequences (``Model``), books
equal to the simulator's truth, no execution twice, none lost where the executions feed was
never interrupted, the status records that explain the fault, and bounded memory throughout
(``Rig.sample_bounds``).

Upstream faults: connection dropped in the middle of a snapshot (split or one message per
market) and under heavy update flow, a stalled connection (no data, no pong), an idle but
alive one (must stay), error frames and refused upgrades (404/503), TLS and DNS failures,
malformed / truncated / wrongly typed / oversized frames, a crossed book, Paxos's delayed
start of excess connections.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio

from gateway.app import Gateway
from gateway.simulator import Connection, FaultConfig, Simulator, SimulatorConfig
from tests.support.checks import missing_trades, snapshot_reasons, statuses, subscriber_problems
from tests.support.client_workers import Subscriber
from tests.support.rig import Rig, running_rig

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD"]
EIGHT_MARKETS = [
    "BTCUSD", "ETHUSD", "PAXGUSD", "BCHUSD", "LTCUSD", "LINKUSD", "AAVEUSD", "UNIUSD",
]  # fmt: skip

SUBSCRIPTIONS = [
    ["*.*"],
    ["book.*"],
    ["book.BTCUSD", "trades.*"],
    ["book.ETHUSD", "price.*", "status.*"],
    ["trades.BTCUSD", "trades.ETHUSD", "book.PAXGUSD"],
    ["*.BTCUSD"],
]


def make_subs(count: int, subscriptions: list[list[str]] = SUBSCRIPTIONS) -> list[Subscriber]:
    return [Subscriber(f"s{i}", subscriptions[i % len(subscriptions)]) for i in range(count)]


def sim_config(seed: int, markets: list[str] = MARKETS, **kw: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {"levels": 100, "rate": 2000.0, "stablecoin_interval": 0.05}
    settings.update(kw)
    return SimulatorConfig(seed=seed, markets=markets, **settings)


def check(rig: Rig, markets: list[str], subs: list[Subscriber] | None = None) -> None:
    """The subscriber-side invariants, and memory bounded all along."""
    subs = rig.subs if subs is None else subs
    problems = [p for s in subs for p in subscriber_problems(s, rig.sim, markets)]
    assert problems == [], problems[:10]
    assert rig.bound_violations == [], rig.bound_violations
    for sub in subs:
        assert sub.closed_code is None, (sub.name, sub.closed_code)


def connections(gateway: Gateway) -> dict[str, int]:
    return {f.spec.name: f.state.connections for f in gateway.feeds}


async def wait_connections(gateway: Gateway, at_least: dict[str, int], timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while any(connections(gateway)[n] < c for n, c in at_least.items()):
            await trio.sleep(0.01)


def live(sim: Simulator, path: str) -> list[Connection]:
    """Streaming connections on ``path`` not dropped yet (a dropped one lingers a moment)."""
    return [c for c in sim.connections if c.path == path and c.streaming and not c.drop_reason]


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    value = gateway.metrics.registry.get_sample_value(f"paxos_gateway_{name}", labels)
    return 0.0 if value is None else value


# -- disconnects ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [0, 8], ids=["per-market-snapshots", "split-snapshots"])
async def test_drop_in_the_middle_of_a_snapshot(
    split: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random abrupt drops while the all-markets snapshot arrives: one SNAPSHOT per market
    (eight markets), or each split into fragments of 8 levels per side. The test goes on until
    several drops really hit a snapshot in progress (counted inside the gateway's session)."""
    markets = EIGHT_MARKETS if split == 0 else MARKETS
    cfg = sim_config(21 + split, markets, levels=80, faults=FaultConfig(snapshot_split=split))
    async with running_rig(cfg) as rig:
        book_feed = next(f for f in rig.gateway.feeds if f.spec.name == "marketdata")
        session = book_feed.session
        hits = {"unsynced": 0, "fragments": 0}
        original = session.disconnected

        def disconnected(reason: str, now_ns: int) -> list[Any]:
            if session.is_connected and session.unsynced_markets():
                hits["unsynced"] += 1
            if any(sync.fragments is not None for sync in session._book_frames.sync.values()):
                hits["fragments"] += 1
            return original(reason, now_ns)

        monkeypatch.setattr(session, "disconnected", disconnected)
        await rig.start(make_subs(24), markets)
        # A (per connection, seeded) random abrupt drop per message, on every feed.
        rig.sim.faults.drop_probability = 0.04 if split == 0 else 0.025
        with trio.fail_after(40):
            while hits["unsynced"] < 4 or (split and hits["fragments"] < 2):
                await trio.sleep(0.01)
        rig.sim.faults.drop_probability = 0.0
        await rig.settle(markets)
        check(rig, markets)
        book_subs = [s for s in rig.subs if any(k.startswith("book") for k in s.streams)]
        for sub in book_subs:
            assert "reconnect" in snapshot_reasons(sub), sub.name


async def test_drop_under_heavy_update_flow() -> None:
    """The book connection is cut again and again while thousands of updates a second flow;
    the executions feed is never cut, so not one execution may be missing either."""
    cfg = sim_config(31, rate=6000.0, levels=150)
    async with running_rig(cfg) as rig:
        subs = make_subs(24)
        since = await rig.start(subs, MARKETS)
        before = connections(rig.gateway)
        for k in range(5):
            # The gateway's side too must have the connection (and have said "connected"):
            # under load the simulator may see it streaming while the gateway has not read
            # its 101 yet, and a drop then is a failed attempt, with no status pair to count.
            await wait_connections(rig.gateway, {"marketdata": before["marketdata"] + k})
            with trio.fail_after(20):
                await rig.sim.wait_until(lambda: bool(live(rig.sim, "/marketdata")))
                await rig.sim.wait_for_events(rig.sim.events_generated + 1500)
            assert rig.sim.drop_all("/marketdata") == 1
        await rig.settle(MARKETS)
        check(rig, MARKETS)
        assert connections(rig.gateway)["marketdata"] >= before["marketdata"] + 5
        assert connections(rig.gateway)["executiondata"] == before["executiondata"]
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name
            if "book.*" in sub.streams or "*.*" in sub.streams:
                states = [s for s, _ in statuses(sub, "book.BTCUSD")]
                assert states.count("disconnected") >= 5, (sub.name, states)
        # The executions feed, cut while the market is quiet, loses nothing either: the
        # replayed last executions are suppressed as duplicates.
        rig.sim.pause()
        await rig.sim.wait_idle()
        assert rig.sim.drop_all("/executiondata", graceful=True) == 1
        await wait_connections(rig.gateway, {"executiondata": before["executiondata"] + 1})
        rig.sim.resume()
        with trio.fail_after(20):
            await rig.sim.wait_for_events(rig.sim.events_generated + 1000)
        await rig.settle(MARKETS)
        check(rig, MARKETS)
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name


# -- silence: a stall must be detected, an idle market must not be -----------------------------


async def test_stalled_upstream_is_replaced_and_idle_one_is_kept() -> None:
    cfg = sim_config(41, rate=300.0)
    async with running_rig(cfg, **{"upstream.ping_timeout": "0.5"}) as rig:
        subs = make_subs(18)
        since = await rig.start(subs, MARKETS)
        before = connections(rig.gateway)

        # Idle but alive (answers pings): no data for 1.5 s, two ping timeouts' worth.
        rig.sim.pause()
        await trio.sleep(1.5)
        assert connections(rig.gateway) == before, "an idle upstream was judged dead"
        assert all(f.state.connected for f in rig.gateway.feeds)
        rig.sim.resume()

        # Stalled: no data and no pongs, connection open. Detected by the missing pong only.
        with trio.fail_after(20):
            await rig.sim.wait_for_events(rig.sim.events_generated + 500)
        assert rig.sim.stall("/marketdata") == 1
        await wait_connections(rig.gateway, {"marketdata": before["marketdata"] + 1})
        with trio.fail_after(20):
            await rig.sim.wait_for_events(rig.sim.events_generated + 500)
        await rig.settle(MARKETS)
        check(rig, MARKETS)
        book = next(f for f in rig.gateway.feeds if f.spec.name == "marketdata")
        assert book.state.last_reason == "ping_timeout"
        assert metric(rig.gateway, "upstream_reconnects_total", feed="marketdata",
                      reason="ping_timeout") == 1  # fmt: skip
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name
            if "*.*" in sub.streams:
                assert ("disconnected", "ping_timeout") in statuses(sub, "status.marketdata")
        # The simulator notices the gateway gave up on the stalled connection.
        with trio.fail_after(10):
            while len(rig.sim.connections) != len(rig.gateway.feeds):
                await trio.sleep(0.01)


async def test_random_stalls_and_drops_on_every_feed() -> None:
    """Random stalls and graceful and abrupt drops on all three feeds at once, under flow."""
    cfg = sim_config(43, rate=3000.0, faults=FaultConfig(snapshot_split=20))
    async with running_rig(cfg) as rig:
        await rig.start(make_subs(24), MARKETS)
        before = sum(connections(rig.gateway).values())
        rig.sim.faults.stall_probability = 0.001
        rig.sim.faults.drop_probability = 0.001
        with trio.fail_after(40):
            while sum(connections(rig.gateway).values()) < before + 8:
                await trio.sleep(0.01)
        rig.sim.faults.stall_probability = rig.sim.faults.drop_probability = 0.0
        await rig.settle(MARKETS)
        check(rig, MARKETS)  # executions may be lost while their feed is down: not checked


# -- refusals and failures to connect ---------------------------------------------------------


@pytest.mark.parametrize("how", ["error_frame", "http_404", "http_503"])
async def test_unknown_market_backs_off_without_hurting_other_feeds(how: str) -> None:
    """A feed for a market Paxos does not have gets ``{"error":"Not Found"}`` or a refused
    upgrade, forever; the gateway keeps retrying it (backing off) while the other feeds and
    their subscribers carry on."""
    cfg = sim_config(51, faults=FaultConfig(unknown_market=how))  # type: ignore[arg-type]
    feeds = ["/executiondata", "/marketdata/BTCUSD", "/marketdata/ETHUSD", "/marketdata/NOPEUSD"]
    async with running_rig(cfg, feeds=feeds) as rig:
        subs = make_subs(12, [["book.BTCUSD", "trades.*"], ["book.ETHUSD"], ["status.*"]])
        live = ["executiondata", "marketdata-BTCUSD", "marketdata-ETHUSD"]
        since = await rig.start(subs, ["BTCUSD", "ETHUSD"], ready_feeds=live)
        nope = next(f for f in rig.gateway.feeds if f.spec.name == "marketdata-NOPEUSD")
        with trio.fail_after(20):
            while metric_attempts(rig.gateway, "marketdata-NOPEUSD") < 4:
                await trio.sleep(0.01)
        await rig.settle(["BTCUSD", "ETHUSD"], ready_feeds=live)
        check(rig, ["BTCUSD", "ETHUSD"])
        assert not nope.session.ready
        if how == "error_frame":
            assert nope.session.stats.error_frames >= 4
            assert nope.state.last_reason == "error_frame"
            # each attempt is one connect + one disconnect status: seen in order, no gap
            status_sub = next(s for s in subs if s.streams == ["status.*"])
            nope_states = statuses(status_sub, "status.marketdata-NOPEUSD")
            assert ("disconnected", "error_frame") in nope_states
        else:
            assert nope.state.last_reason == "handshake_rejected"
            assert nope.state.connections == 0
        assert all(f.state.connections == 1 for f in rig.gateway.feeds if f.spec.name in live)
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name


def metric_attempts(gateway: Gateway, feed: str) -> float:
    reasons = ("error_frame",)
    total = sum(metric(gateway, "upstream_reconnects_total", feed=feed, reason=r) for r in reasons)
    return total + metric(
        gateway, "upstream_connect_failures_total", feed=feed, reason="handshake_rejected"
    )


@pytest.mark.parametrize("status", [404, 503])
async def test_refused_upgrades_while_reconnecting(status: int) -> None:
    """The book connection drops and every new handshake is refused for a while."""
    cfg = sim_config(61 + status)
    async with running_rig(cfg) as rig:
        subs = make_subs(18)
        since = await rig.start(subs, MARKETS)
        book = next(f for f in rig.gateway.feeds if f.spec.name == "marketdata")
        rig.sim.refuse_upgrades(status)
        assert rig.sim.drop_all("/marketdata") == 1
        with trio.fail_after(20):
            while book.state.failed_attempts < 3:
                await trio.sleep(0.01)
        assert book.state.last_reason == "handshake_rejected"
        assert not book.session.ready
        rig.sim.refuse_upgrades(None)
        await wait_connections(rig.gateway, {"marketdata": 2})
        with trio.fail_after(20):
            await rig.sim.wait_for_events(rig.sim.events_generated + 500)
        await rig.settle(MARKETS)
        check(rig, MARKETS)
        assert metric(rig.gateway, "upstream_connect_failures_total", feed="marketdata",
                      reason="handshake_rejected") >= 3  # fmt: skip
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name
            if "book.*" in sub.streams:
                # one disconnected status for the whole outage, not one per refused attempt
                assert [s for s, _ in statuses(sub, "book.BTCUSD")].count("disconnected") == 1
                assert snapshot_reasons(sub)[-1] == "reconnect"


async def test_tls_and_dns_failures_leave_the_other_feeds_alone() -> None:
    """A wss:// feed pointed at a plain HTTP port (the TLS handshake fails) and one at a name
    under the reserved .invalid TLD (never resolves, sends nothing anywhere)."""
    accepted = 0

    async def plain_http(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        with trio.move_on_after(2):
            await stream.receive_some(4096)  # the TLS ClientHello, to a plain HTTP server
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, plain_http, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        feeds = [
            "/marketdata",
            f"wss://127.0.0.1:{port}/executiondata",
            "wss://ws.paxos-gateway-test.invalid/marketdata/stablecoin",
        ]
        async with running_rig(sim_config(71), feeds=feeds) as rig:
            subs = make_subs(12, [["book.*"], ["*.BTCUSD"], ["status.*", "book.ETHUSD"]])
            await rig.start(subs, MARKETS, ready_feeds=["marketdata"])
            tls = next(f for f in rig.gateway.feeds if f.spec.kind == "executions")
            dns = next(f for f in rig.gateway.feeds if f.spec.kind == "stablecoin")
            with trio.fail_after(20):
                while tls.state.failed_attempts < 3 or dns.state.failed_attempts < 3:
                    await trio.sleep(0.01)
            await rig.settle(MARKETS, ready_feeds=["marketdata"])
            check(rig, MARKETS)
            assert tls.state.last_reason == "tls_error"
            assert dns.state.last_reason == "dns_error"
            for feed in (tls, dns):
                assert feed.state.connections == 0 and not feed.session.ready
                # never connected, so no status spam: one stream, no records
                assert rig.gateway.hub.head(f"status.{feed.spec.name}") == 0
                reason = feed.state.last_reason or ""
                failures = metric(
                    rig.gateway, "upstream_connect_failures_total", feed=feed.spec.name,
                    reason=reason,
                )  # fmt: skip
                assert failures >= 3, (feed.spec.name, reason)
            assert accepted >= 3
            assert not rig.gateway.readiness.check(trio.current_time()).ready
        nursery.cancel_scope.cancel()


# -- bad frames -------------------------------------------------------------------------------


async def test_malformed_truncated_and_wrongly_typed_frames_are_skipped() -> None:
    """Bad frames before real messages on every feed: each is counted and skipped, none is
    applied, no connection is dropped for them, so not one execution is missing either."""
    faults = FaultConfig(
        bad_frame_probability=0.03, bad_frame_kinds=("malformed", "truncated", "wrong_types"),
        extra_field_probability=0.02, snapshot_split=25,
    )  # fmt: skip
    async with running_rig(sim_config(81, rate=3000.0, faults=faults)) as rig:
        subs = make_subs(18)
        since = await rig.start(subs, MARKETS)
        with trio.fail_after(30):
            await rig.sim.wait_for_events(rig.sim.events_generated + 4000)
        await rig.settle(MARKETS)
        check(rig, MARKETS)
        assert all(c == 1 for c in connections(rig.gateway).values())
        sent = sum(c.bad_frames_sent for c in rig.sim.connections)
        assert sent > 50
        with trio.fail_after(10):  # the last bad frames may still be on their way
            while decode_errors(rig.gateway) < sent:
                await trio.sleep(0.01)
        assert decode_errors(rig.gateway) == sent, "a bad frame was accepted as data"
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name


def decode_errors(gateway: Gateway) -> int:
    return sum(f.session.stats.decode_errors for f in gateway.feeds)


async def test_oversized_frames_cost_a_reconnect_not_a_book() -> None:
    faults = FaultConfig(
        bad_frame_probability=0.002, bad_frame_kinds=("oversized",), oversized_bytes=200_000
    )
    cfg = sim_config(91, faults=faults)
    async with running_rig(cfg, **{"upstream.max_message_bytes": "65536"}) as rig:
        await rig.start(make_subs(12), MARKETS)
        with trio.fail_after(30):
            while sum(
                metric(rig.gateway, "upstream_reconnects_total", feed=f.spec.name,
                       reason="message_too_big")
                for f in rig.gateway.feeds
            ) < 3:  # fmt: skip
                await trio.sleep(0.01)
        rig.sim.faults.bad_frame_probability = 0.0
        await rig.settle(MARKETS)
        check(rig, MARKETS)


# -- a crossed book ---------------------------------------------------------------------------


async def test_crossed_book_is_resynced_in_line() -> None:
    async with running_rig(sim_config(101)) as rig:
        subs = make_subs(18)
        since = await rig.start(subs, MARKETS)
        book = next(f for f in rig.gateway.feeds if f.spec.name == "marketdata")
        for i, market in enumerate(MARKETS):
            with trio.fail_after(20):
                await rig.sim.wait_for_events(rig.sim.events_generated + 300)
            assert rig.sim.inject_crossed(market) == 1
            await wait_connections(rig.gateway, {"marketdata": i + 2})
        await rig.settle(MARKETS)
        check(rig, MARKETS)
        assert book.session.stats.crossed_books == len(MARKETS)
        assert metric(rig.gateway, "upstream_reconnects_total", feed="marketdata",
                      reason="crossed_book") == len(MARKETS)  # fmt: skip
        for sub in subs:
            assert missing_trades(sub, rig.sim, since) == [], sub.name
            for market in MARKETS:
                stream = f"book.{market}"
                if stream not in sub.view.books:
                    continue
                states = [s for s, _ in statuses(sub, stream)]
                assert "resyncing" in states and "resynced" in states, (sub.name, states)
                reasons = [s["reason"] for s in sub.view.snapshots if s["stream"] == stream]
                assert "crossed" in reasons, (sub.name, stream, reasons)


# -- Paxos's one new connection per second ----------------------------------------------------


async def test_delayed_connections_are_waited_for_not_retried() -> None:
    """Excess connections are accepted but start streaming one per interval: the gateway must
    neither time out nor declare them dead (pings are answered meanwhile)."""
    cfg = sim_config(111, faults=FaultConfig(connect_interval=0.6))
    async with running_rig(cfg) as rig:
        subs = make_subs(12)
        await rig.start(subs, MARKETS)
        assert all(c == 1 for c in connections(rig.gateway).values())
        for round_ in range(2):
            rig.sim.pause()
            await rig.sim.wait_idle()
            since = len(rig.sim.sent_executions)
            assert rig.sim.drop_all() == 3
            await wait_connections(rig.gateway, {n: round_ + 2 for n in connections(rig.gateway)})
            with trio.fail_after(20):
                await rig.sim.wait_for_connections(3)  # all three streaming, one by one
            rig.sim.resume()
            with trio.fail_after(20):
                await rig.sim.wait_for_events(rig.sim.events_generated + 400)
            await rig.settle(MARKETS)
            check(rig, MARKETS)
            assert all(c == round_ + 2 for c in connections(rig.gateway).values())
            for sub in subs:
                assert missing_trades(sub, rig.sim, since) == [], sub.name
        failures = rig.gateway.metrics.registry.get_sample_value
        assert all(
            (failures("paxos_gateway_upstream_connect_failures_total",
                      {"feed": f.spec.name, "reason": r}) or 0) == 0
            for f in rig.gateway.feeds for r in ("connect_timeout", "ping_timeout")
        )  # fmt: skip
