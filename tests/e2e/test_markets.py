"""Markets come and go (issue 17): the REST market list, refreshed every 0.2 s here, tells the
gateway which markets halted or were delisted; it announces them, stops waiting for their
books (readiness stays about the markets that exist), and new or returning markets appear
without a restart. The real simulator (WebSocket and REST) and the real gateway."""

from __future__ import annotations

from typing import Any

import trio

from gateway.app import Gateway
from gateway.simulator import Simulator, SimulatorConfig
from tests.support.checks import wait_books_equal_truth
from tests.support.clients import collect
from tests.support.config import gateway_config

MARKETS = ["BTCUSD", "ETHUSD", "PAXGUSD"]


def _ready(gateway: Gateway) -> bool:
    return gateway.readiness.check(trio.current_time()).ready


async def _until(what: str, predicate: Any) -> None:
    with trio.fail_after(30):
        while not predicate():
            await trio.sleep(0.02)


def _announced(records: list[dict[str, Any]], state: str, market: str, stream: str) -> bool:
    return any(
        r.get("state") == state and r.get("market") == market and r["stream"] == stream
        for r in records
    )


async def test_halted_delisted_and_new_markets(nursery: trio.Nursery) -> None:
    sim = Simulator(SimulatorConfig(seed=31, markets=MARKETS, levels=30, rate=200.0))
    await nursery.start(sim.serve)
    config = gateway_config(
        sim.url,
        feeds=["/marketdata", "/executiondata"],
        **{
            "backfill.enabled": "true",
            "backfill.rest_url": sim.rest_url,
            "backfill.markets_refresh": "0.2",
            "metrics.ready_grace": "0",
        },
    )
    gateway = Gateway(config, handle_signals=False)
    await nursery.start(gateway.serve)
    statuses: list[dict[str, Any]] = []
    await nursery.start(collect, f"{gateway.subscriber_url}/v1/status/*", statuses)
    paxg: list[dict[str, Any]] = []
    await nursery.start(collect, f"{gateway.subscriber_url}/v1/book/PAXGUSD", paxg)
    await _until("ready", lambda: _ready(gateway))
    book_feed = gateway.feeds[0].session

    # A halt: announced in the market's streams and the feeds' status streams; ready stays.
    sim.halt("ETHUSD")
    await _until(
        "the halt announced",
        lambda: (
            _announced(statuses, "market_unavailable", "ETHUSD", "status.marketdata")
            and _announced(statuses, "market_unavailable", "ETHUSD", "status.executiondata")
        ),
    )
    assert "ETHUSD" in book_feed.unavailable and _ready(gateway)

    # A delisting, then a book reconnect: Paxos no longer sends that book; without the market
    # list the gateway would wait for it forever.
    sim.delist("PAXGUSD")
    await _until(
        "the delisting announced in the market's own stream",
        lambda: _announced(paxg, "market_unavailable", "PAXGUSD", "book.PAXGUSD"),
    )
    assert "no longer listed" in book_feed.unavailable["PAXGUSD"]
    assert "PAXGUSD" not in book_feed.books  # retired
    assert sim.drop_all("/marketdata") == 1
    await _until(
        "ready again without PAXGUSD",
        lambda: (
            gateway.feeds[0].state.connections >= 2
            and book_feed.ready
            and book_feed.unsynced_markets() == []
            and _ready(gateway)
        ),
    )

    # A brand-new market and the delisted one back: both appear without a restart.
    sim.list_market("LTCUSD")
    sim.list_market("PAXGUSD")
    sim.list_market("ETHUSD")
    await _until(
        "PAXGUSD and ETHUSD back",
        lambda: (
            _announced(paxg, "market_available", "PAXGUSD", "book.PAXGUSD")
            and _announced(statuses, "market_available", "ETHUSD", "status.marketdata")
        ),
    )
    assert book_feed.unavailable == {}
    sim.pause()
    await sim.wait_idle()
    await wait_books_equal_truth(sim, gateway, ["BTCUSD", "ETHUSD", "PAXGUSD", "LTCUSD"])
    heads = {info.stream for info in gateway.hub.stream_list()}
    assert {"book.LTCUSD", "trades.LTCUSD"} <= heads
    assert _ready(gateway)

    # the PAXGUSD subscriber saw its book retired and back: one stream, gap-free
    first = next(i for i, r in enumerate(paxg) if r.get("type") == "book_snapshot")
    seqs = [r["seq"] for r in paxg[first:] if "seq" in r]  # (initial values may precede it)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    gateway.request_shutdown()
    with trio.fail_after(10):
        await gateway.stopped.wait()
    nursery.cancel_scope.cancel()
