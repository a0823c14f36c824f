"""The sans-IO market model: invariants, truth vs. its own wire text, determinism."""

from __future__ import annotations

import random
import re
from collections import Counter
from decimal import Decimal

import pytest

from gateway.simulator import DEFAULT_MARKETS, Execution, LevelUpdate, MarketModel, MarketSpec
from gateway.simulator.markets import MarketError, resolve_markets
from tests.support.simulator_support import (
    TIMESTAMP,
    TRIMMED,
    Replica,
    assert_compact_all_strings,
    parse,
)

T0 = 1_700_000_000_123_456_789
SPECS = tuple(DEFAULT_MARKETS.values())
MATCH = re.compile(r"^[0-9A-Z]{12}$")


def model(seed: int = 7, **kw: object) -> MarketModel:
    return MarketModel(SPECS, seed=seed, now_ns=T0, **kw)  # type: ignore[arg-type]


def run(m: MarketModel, steps: int) -> list[LevelUpdate | Execution]:
    events: list[LevelUpdate | Execution] = []
    for i in range(steps):
        events.extend(m.step(T0 + i * 1_234_567))
    return events


def test_default_markets_and_ticks() -> None:
    ticks = {s.symbol: s.tick for s in SPECS}
    assert ticks == {
        "BTCUSD": Decimal("0.25"), "ETHUSD": Decimal("0.05"), "PAXGUSD": Decimal("0.01"),
        "BCHUSD": Decimal("0.05"), "LTCUSD": Decimal("0.01"), "LINKUSD": Decimal("0.01"),
        "AAVEUSD": Decimal("0.01"), "UNIUSD": Decimal("0.01"),
    }  # fmt: skip
    assert (DEFAULT_MARKETS["BTCUSD"].scale, DEFAULT_MARKETS["BTCUSD"].tick_units) == (2, 25)
    assert model().stablecoins == ("USDCUSD",)


def test_market_spec_validation() -> None:
    with pytest.raises(MarketError):
        MarketSpec("btcusd", Decimal("0.25"), Decimal("100"))
    with pytest.raises(MarketError):
        MarketSpec("XUSD", Decimal("0"), Decimal("100"))
    with pytest.raises(MarketError):
        resolve_markets(["NOPEUSD"])
    with pytest.raises(MarketError):
        resolve_markets(["BTCUSD", "BTCUSD"])


def test_initial_books_have_the_configured_depth_and_are_uncrossed() -> None:
    m = model(levels=300)
    for market in m.markets:
        bids, asks = m.truth(market)
        assert len(asks) == 300
        assert len(bids) == 300
        assert bids[0][0] < asks[0][0]
        assert not m.is_crossed(market)


def test_books_stay_uncrossed_sorted_on_grid_and_near_depth() -> None:
    m = model(levels=100)
    for chunk in range(20):
        run(m, 1000)
        for market in m.markets:
            tick = m.spec(market).tick
            bids, asks = m.truth(market)
            assert not m.is_crossed(market), (chunk, market)
            assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
            assert [p for p, _ in asks] == sorted(p for p, _ in asks)
            for price, amount in bids + asks:
                assert price > 0 and price % tick == 0, (market, price)
                assert amount > 0 and amount == amount.quantize(Decimal("1e-8"))
            assert 40 <= len(bids) <= 200 and 40 <= len(asks) <= 200, (market, len(bids))


def test_truth_equals_replaying_its_own_snapshot_and_updates() -> None:
    m = model(number_style="mixed")
    replicas: dict[str, Replica] = {}
    for market in m.markets:
        replicas[market] = Replica()
        for text in m.snapshot_texts(market, split=37, style="string"):
            replicas[market].apply(assert_compact_all_strings(text))
    for event in run(m, 20_000):
        if isinstance(event, LevelUpdate):
            obj = assert_compact_all_strings(event.text)
            assert (obj["side"], Decimal(obj["price"]), Decimal(obj["amount"])) == (
                event.side, event.price, event.amount,
            )  # fmt: skip
            replicas[event.market].apply(obj)
    for market in m.markets:
        assert replicas[market].levels() == m.truth(market), market


def test_snapshot_fragments() -> None:
    m = model(levels=100)
    texts = m.snapshot_texts("BTCUSD", split=30, style="bool")
    objs = [parse(t) for t in texts]
    assert len(objs) == 4  # 100 levels per side, 30 per fragment
    assert [o["final_snapshot"] for o in objs] == [False, False, False, True]
    assert sum(len(o["bids"]) for o in objs) == 100
    missing = [parse(t) for t in m.snapshot_texts("BTCUSD", split=30, style="missing")]
    assert [o.get("final_snapshot") for o in missing] == [False, False, False, None]
    whole = m.snapshot_texts("BTCUSD", split=0)
    assert len(whole) == 1 and parse(whole[0])["final_snapshot"] is True


def test_executions_move_the_book_and_are_well_formed() -> None:
    m = model(execution_ratio=0.5)
    events = run(m, 5000)
    executions = [e for e in events if isinstance(e, Execution)]
    assert len(executions) > 1500
    assert m.executions[-len(executions) :] == executions
    numbers = [e.match_number for e in m.executions]
    assert len(set(numbers)) == len(numbers)
    for i, event in enumerate(events):
        if not isinstance(event, Execution):
            continue
        obj = assert_compact_all_strings(event.text)
        assert list(obj) == ["market", "price", "amount", "executed_at", "match_number"]
        assert MATCH.match(obj["match_number"])
        assert TIMESTAMP.match(obj["executed_at"])
        assert Decimal(obj["price"]) == event.price and Decimal(obj["amount"]) == event.amount
        assert event.amount > 0
        # the UPDATE that follows is the level the execution consumed, on the taken side
        update = events[i + 1]
        assert isinstance(update, LevelUpdate)
        assert (update.market, update.price) == (event.market, event.price)


def test_timestamps_use_0_to_9_fractional_digits() -> None:
    m = model(execution_ratio=1.0)
    run(m, 3000)
    digits: Counter[int] = Counter()
    for e in m.executions:
        match = TIMESTAMP.match(e.executed_at)
        assert match, e.executed_at
        digits[len(match.group(2) or "")] += 1
    assert set(digits) == set(range(10))
    fixed = model(execution_ratio=1.0, timestamp_digits=3)
    run(fixed, 200)
    assert all(len(e.executed_at) <= len("2023-11-14T22:13:20.123Z") for e in fixed.executions)


def test_number_styles() -> None:
    trimmed = model(number_style="trim")
    padded = model(number_style="pad")
    for ev in run(trimmed, 2000):
        obj = parse(ev.text)
        assert TRIMMED.match(obj["price"]) and TRIMMED.match(obj["amount"]), ev.text
    for ev in run(padded, 2000):
        obj = parse(ev.text)
        assert len(obj["amount"].split(".")[1]) == 8, ev.text
        assert len(obj["price"].split(".")[1]) == 2, ev.text  # every default tick has scale 2
    mixed = {ev.text.count(".00000000") > 0 for ev in run(model(number_style="mixed"), 3000)}
    assert mixed == {True, False}


def test_same_seed_same_events_different_seed_different_events() -> None:
    a = [e.text for e in run(model(seed=3, number_style="mixed"), 3000)]
    # snapshots taken in between must not disturb the event sequence
    m = model(seed=3, number_style="mixed")
    b: list[str] = []
    for i in range(3000):
        if i % 500 == 0:
            m.snapshot_texts("ETHUSD", split=10)
            m.crossing_update_text("ETHUSD", random.Random(i))
        b.extend(e.text for e in m.step(T0 + i * 1_234_567))
    c = [e.text for e in run(model(seed=4, number_style="mixed"), 3000)]
    assert a == b
    assert a != c


def test_stablecoin_prices() -> None:
    m = model()
    ticks = [t for i in range(500) for t in m.stablecoin_tick(T0 + i * 10**9)]
    assert {t.market for t in ticks} == {"USDCUSD"}
    for t in ticks:
        obj = assert_compact_all_strings(t.text)
        assert list(obj) == ["market", "price", "timestamp"]
        assert re.match(r"^\d\.\d{4}$", obj["price"]), obj
        assert Decimal("0.9980") <= Decimal(obj["price"]) <= Decimal("1.0020")
        assert TIMESTAMP.match(obj["timestamp"])
    assert len({t.price for t in ticks}) > 1
    assert m.last_price("USDCUSD") is ticks[-1]


def test_crossing_update_is_not_applied() -> None:
    m = model()
    before = m.truth("BTCUSD")
    obj = parse(m.crossing_update_text("BTCUSD", random.Random(1)) or "")
    best_ask = before[1][0][0]
    assert obj["type"] == "UPDATE" and obj["side"] == "BUY"
    assert Decimal(obj["price"]) >= best_ask
    assert m.truth("BTCUSD") == before


def test_small_books_survive_being_eaten() -> None:
    m = MarketModel(
        [MarketSpec("TINYUSD", Decimal("1"), Decimal("10"))],
        seed=1, now_ns=T0, levels=1, execution_ratio=0.6,
    )  # fmt: skip
    for _ in range(5000):
        m.step(T0)
        assert not m.is_crossed("TINYUSD")
        bids, _asks = m.truth("TINYUSD")
        assert all(price >= 1 for price, _ in bids)
