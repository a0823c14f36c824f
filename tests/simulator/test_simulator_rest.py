"""The simulator's REST API over real sockets with httpx: shapes, truth, outages, listings."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio

from gateway.simulator import FaultConfig, MarketSpec, RestConfig, Simulator
from tests.support.simulator_support import client, parse, serving, unthrottled

FEW = ("BTCUSD", "ETHUSD")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")

fast = functools.partial(unthrottled, seed=5, markets=FEW, levels=40)


@asynccontextmanager
async def rest_client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        yield http


async def get_json(http: httpx.AsyncClient, path: str, status: int = 200) -> Any:
    response = await http.get(path)
    assert response.status_code == status, response.text
    return response.json()


def padded(text: str, scale: int) -> bool:
    """Exactly ``scale`` decimals (none and no point for 0), never trimmed."""
    pattern = r"^(0|[1-9]\d*)" + (rf"\.\d{{{scale}}}$" if scale else "$")
    return re.match(pattern, text) is not None


def assert_levels(levels: list[dict[str, str]], scale: int) -> list[tuple[Decimal, Decimal]]:
    for level in levels:
        assert list(level) == ["price", "amount"]
        assert padded(level["price"], scale) and padded(level["amount"], 8), level
    return [(Decimal(x["price"]), Decimal(x["amount"])) for x in levels]


async def test_markets_lists_every_market_with_paxos_fields() -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim, rest_client(sim) as http:
            assert sim.rest_url.startswith("http://127.0.0.1:") and sim.rest_url.endswith("/v2")
            response = await http.get("/markets")
            assert response.headers["content-type"] == "application/json"
            markets = response.json()["markets"]
            assert [m["market"] for m in markets] == list(FEW)
            btc = markets[0]
            assert list(btc)[:5] == [
                "market", "base_asset", "quote_asset", "tick_rate", "market_status",
            ]  # fmt: skip
            assert (btc["base_asset"], btc["quote_asset"], btc["tick_rate"]) == (
                "BTC", "USD", "0.25",
            )  # fmt: skip
            assert markets[1]["tick_rate"] == "0.05"
            status = btc["market_status"]
            assert (status["buy_status"], status["sell_status"]) == ("AVAILABLE", "AVAILABLE")
            assert STAMP.match(status["updated_at"]) and status["scheduled_maintenance"] == []
            for key in ("min_base_amount", "min_quote_amount", "max_base_amount"):
                assert Decimal(btc[key]) > 0


async def test_order_book_is_the_truth_padded() -> None:
    with trio.fail_after(20):
        async with serving(fast(max_events=2000)) as sim, rest_client(sim) as http:
            await sim.finished.wait()
            for market in FEW:
                book = await get_json(http, f"/markets/{market}/order-book")
                assert list(book) == ["market", "asks", "bids"] and book["market"] == market
                scale = sim.model.spec(market).scale
                bids, asks = sim.truth(market)
                assert assert_levels(book["bids"], scale) == bids
                assert assert_levels(book["asks"], scale) == asks


async def test_ticker_agrees_with_the_book_and_the_tape() -> None:
    with trio.fail_after(20):
        async with serving(fast(max_events=3000)) as sim, rest_client(sim) as http:
            await sim.finished.wait()
            ticker = await get_json(http, "/markets/ETHUSD/ticker")
            assert list(ticker) == [
                "market", "best_bid", "best_ask", "last_execution", "last_day", "today",
                "snapshot_at",
            ]  # fmt: skip
            bids, asks = sim.truth("ETHUSD")
            assert assert_levels([ticker["best_bid"], ticker["best_ask"]], 2) == [
                bids[0],
                asks[0],
            ]
            tape = sim.executions("ETHUSD")
            last = tape[-1]
            assert ticker["last_execution"] == {
                "price": f"{last.price:.2f}",
                "amount": f"{last.amount:.8f}",
            }
            # the whole run lies within the last 24 hours
            day = ticker["last_day"]
            assert Decimal(day["volume"]) == sum(e.amount for e in tape)
            assert Decimal(day["high"]) == max(e.price for e in tape)
            assert Decimal(day["low"]) == min(e.price for e in tape)
            assert Decimal(day["open"]) == tape[0].price
            assert padded(day["volume"], 8) and padded(day["open"], 2)
            for window in ("last_day", "today"):
                assert STAMP.match(ticker[window]["start_time"])
                assert ticker[window]["end_time"] == ticker["snapshot_at"]


async def test_recent_executions_newest_first_capped_at_2000() -> None:
    config = fast(markets=("BTCUSD",), max_events=7000, execution_ratio=0.6, levels=200)
    with trio.fail_after(60):
        async with serving(config) as sim, rest_client(sim) as http:
            await sim.finished.wait()
            tape = sim.executions("BTCUSD")
            assert len(tape) > 2000
            items = (await get_json(http, "/markets/BTCUSD/recent-executions"))["items"]
            assert len(items) == 2000
            assert [i["match_number"] for i in items] == [e.match_number for e in tape[:-2001:-1]]
            for item, execution in zip(items, reversed(tape), strict=False):
                assert list(item) == ["match_number", "price", "amount", "executed_at"]
                assert padded(item["price"], 2) and padded(item["amount"], 8)
                assert Decimal(item["price"]) == execution.price
                assert Decimal(item["amount"]) == execution.amount
                assert item["executed_at"] == execution.executed_at
            # the order and the window are switches, for clients that must not rely on them
            sim.rest.executions_order = "oldest_first"
            sim.rest.recent_executions = 50
            items = (await get_json(http, "/markets/BTCUSD/recent-executions"))["items"]
            assert [i["match_number"] for i in items] == [e.match_number for e in tape[-50:]]


async def test_the_same_execution_on_websocket_and_rest_has_equal_values() -> None:
    # WebSocket numbers trimmed ("65000.5"), REST padded ("65000.50"): equal as decimals
    config = fast(max_events=4000, execution_ratio=0.3, number_style="trim")
    with trio.fail_after(30):
        async with serving(config, paused=True) as sim, rest_client(sim) as http:
            async with client(sim.url + "/executiondata") as ws:
                await ws.wait_for(len(FEW))
                sim.resume()
                await sim.finished.wait()
                await sim.wait_idle()
                await ws.wait_for(sim.connections[0].messages_sent)
            rest = {}
            for market in FEW:
                for item in (await get_json(http, f"/markets/{market}/recent-executions"))["items"]:
                    rest[item["match_number"]] = (market, item)
            seen = [parse(text) for text in ws.messages]
            assert len(seen) > 100 and len(rest) == len(sim.executions()) <= 4000
            trimmed_somewhere = False
            for msg in seen:
                market, item = rest[msg["match_number"]]
                assert msg["market"] == market
                assert Decimal(msg["price"]) == Decimal(item["price"])
                assert Decimal(msg["amount"]) == Decimal(item["amount"])
                assert msg["executed_at"] == item["executed_at"]
                trimmed_somewhere |= msg["amount"] != item["amount"]
            assert trimmed_somewhere


async def test_executions_during_an_outage_are_in_the_truth_and_on_rest() -> None:
    """What a backfill test builds on: the feed is down, trading goes on, REST has it all."""
    with trio.fail_after(30):
        async with serving(fast(execution_ratio=0.3), paused=True) as sim, rest_client(sim) as http:
            async with client(sim.url + "/executiondata") as ws:
                await ws.wait_for(len(FEW))
                sim.resume()
                await sim.wait_for_events(sim.events_generated + 500)
                sim.pause()
                await sim.wait_idle()
                await ws.wait_for(sim.connections[0].messages_sent)
                sim.refuse_upgrades(503)  # no reconnect either
                assert sim.drop_all() == 1
                await ws.wait_closed()
            await sim.wait_until(lambda: not sim.connections)
            before = len(sim.executions())
            sim.resume()
            await sim.wait_for_events(sim.events_generated + 500)
            sim.pause()
            assert len(sim.executions()) > before  # generated with nobody connected
            received = {parse(text)["match_number"] for text in ws.messages}
            on_rest = set()
            for market in FEW:
                items = (await get_json(http, f"/markets/{market}/recent-executions"))["items"]
                on_rest |= {item["match_number"] for item in items}
            truth = {e.match_number for e in sim.executions()}
            missed = truth - received
            assert missed and missed <= on_rest
            assert received | on_rest == truth
            assert {e.match_number for e in sim.executions()[before:]} == missed


async def test_unknown_market_is_a_paxos_problem_404() -> None:
    with trio.fail_after(10):
        async with serving(fast(), paused=True) as sim, rest_client(sim) as http:
            for path in (
                "/markets/DOGEUSD/ticker",
                "/markets/USDCUSD/order-book",  # a stablecoin index, not a market
                "/markets/btcusd/recent-executions",
            ):
                response = await http.get(path)
                assert response.status_code == 404
                assert response.headers["content-type"] == "application/problem+json"
                body = response.json()
                assert list(body) == ["type", "title", "status", "detail", "instance"]
                assert body["status"] == 404 and body["title"] == "Not Found"
                assert body["type"].startswith("https://") and body["instance"] == "/v2" + path
                assert path.split("/")[2] in body["detail"]


async def test_halt_delist_and_list_markets() -> None:
    config = fast(markets=("BTCUSD", "ETHUSD", "PAXGUSD"), execution_ratio=0.5)
    with trio.fail_after(30):
        async with (
            serving(config, paused=True) as sim,
            rest_client(sim) as http,
            client(sim.url + "/marketdata") as books,
        ):
            await books.wait_for(3)

            async def run(events: int) -> None:
                sim.resume()
                await sim.wait_for_events(sim.events_generated + events)
                sim.pause()

            async def listed() -> dict[str, Any]:
                markets = (await get_json(http, "/markets"))["markets"]
                return {m["market"]: m["market_status"] for m in markets}

            sim.halt("BTCUSD")
            status = (await listed())["BTCUSD"]
            assert (status["buy_status"], status["sell_status"]) == ("UNAVAILABLE", "UNAVAILABLE")
            assert status["buy_reason"] == "MARKET_HALTED"
            frozen = (sim.truth("BTCUSD"), len(sim.executions("BTCUSD")))
            await run(300)
            assert (sim.truth("BTCUSD"), len(sim.executions("BTCUSD"))) == frozen
            await get_json(http, "/markets/BTCUSD/order-book")  # still served

            sim.delist("ETHUSD")
            assert list(await listed()) == ["BTCUSD", "PAXGUSD"]
            await get_json(http, "/markets/ETHUSD/recent-executions", 404)
            async with client(sim.url + "/marketdata/ETHUSD") as gone:
                await gone.wait_for(1)
                assert parse(gone.messages[0]) == {"error": "Not Found"}
            with pytest.raises(ValueError, match="last open market"):
                sim.halt("PAXGUSD")

            sim.list_market("BTCUSD")
            sim.list_market("ETHUSD")
            sim.list_market(MarketSpec("LTCUSD", Decimal("0.01"), Decimal("80")))
            markets = await listed()
            assert list(markets) == ["BTCUSD", "ETHUSD", "PAXGUSD", "LTCUSD"]
            assert all(s["buy_status"] == "AVAILABLE" for s in markets.values())
            (opening,) = sim.executions("LTCUSD")
            items = (await get_json(http, "/markets/LTCUSD/recent-executions"))["items"]
            assert [i["match_number"] for i in items] == [opening.match_number]
            assert items[0]["executed_at"] == opening.executed_at

            # the all-markets book connection gets LTCUSD's snapshot before its updates, and
            # no second ETHUSD snapshot: it had that book all along
            await run(300)
            await sim.wait_idle()
            await books.wait_for(sim.connections[0].messages_sent)
            seen = [parse(m) for m in books.messages]
            for market in ("LTCUSD", "ETHUSD", "BTCUSD"):
                mine = [m for m in seen if m["market"] == market]
                assert mine[0]["type"] == "SNAPSHOT" and len(mine) > 1
                assert sum(m["type"] == "SNAPSHOT" for m in mine) == 1


def test_the_tape_per_market_and_exchange_order() -> None:
    model = Simulator(fast(execution_ratio=0.5, timestamp_digits=None)).model
    for step in range(2000):
        model.step(1_700_000_000_000_000_000 + step * 1000)
    tape = model.executions
    for market in FEW:
        assert list(model.executions_of(market)) == [e for e in tape if e.market == market]
    # cut stamps and shared clock readings: exchange order is not generation order
    assert sorted(tape, key=lambda e: e.exchange_key) != tape
    assert len({e.match_number for e in tape}) == len(tape)


async def test_a_naive_backfilling_client_can_get_every_execution() -> None:
    """The shape of the gateway's later test: the feed drops often, the client backfills from
    REST after every connect, and the union matches the truth, one entry per match_number."""
    config = fast(
        rate=2000.0,
        execution_ratio=0.3,
        faults=FaultConfig(drop_probability=0.03),
        rest=RestConfig(rate_limit=0.0),
    )
    got: dict[str, tuple[Decimal, Decimal]] = {}
    live: set[str] = set()

    def keep(match_number: str, price: str, amount: str) -> None:
        value = (Decimal(price), Decimal(amount))
        assert got.setdefault(match_number, value) == value

    async def backfill(http: httpx.AsyncClient) -> None:
        for market in (await get_json(http, "/markets"))["markets"]:
            path = f"/markets/{market['market']}/recent-executions"
            for item in (await get_json(http, path))["items"]:
                keep(item["match_number"], item["price"], item["amount"])

    with trio.fail_after(60):
        async with serving(config) as sim, rest_client(sim) as http:
            for _ in range(10):
                async with client(sim.url + "/executiondata") as ws:
                    await backfill(http)  # what the last outage missed (live ones overlap)
                    await ws.wait_closed()  # a random drop, sooner or later
                for text in ws.messages:
                    msg = parse(text)
                    keep(msg["match_number"], msg["price"], msg["amount"])
                    live.add(msg["match_number"])
            sim.pause()
            await backfill(http)
            truth = sim.executions()
            assert len(truth) > 200
            assert got == {e.match_number: (e.price, e.amount) for e in truth}
            assert live < set(got)  # ten outages: the feed alone missed some
