from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.contract.records import Level, Side
from gateway.ingest.book import OrderBook
from gateway.ingest.decimals import parse


def D(text: str) -> Decimal:
    return Decimal(text)


def levels(*pairs: tuple[str, str]) -> list[Level]:
    return [(D(p), D(a)) for p, a in pairs]


def test_empty_book() -> None:
    book = OrderBook("BTCUSD")
    assert not book.has_snapshot
    assert book.best_bid() is None and book.best_ask() is None
    assert not book.is_crossed()
    assert book.bids() == [] and book.asks() == [] and len(book) == 0


def test_replace_orders_sides_best_first() -> None:
    book = OrderBook("BTCUSD")
    book.replace(
        levels(("19993.75", "0.8"), ("19994.25", "0.7755"), ("19990", "2")),
        levels(("19996", "1.135"), ("19994.5", "0.97548541")),
    )
    assert book.has_snapshot
    assert book.best_bid() == (D("19994.25"), D("0.7755"))
    assert book.best_ask() == (D("19994.5"), D("0.97548541"))
    assert [p for p, _ in book.bids()] == [D("19994.25"), D("19993.75"), D("19990")]
    assert [p for p, _ in book.asks()] == [D("19994.5"), D("19996")]
    assert book.bids(2) == book.bids()[:2] and book.asks(1) == book.asks()[:1]
    assert book.bids(0) == [] and book.asks(-1) == [] and book.bids(10) == book.bids()
    assert len(book) == 5 and book.bid_count() == 3 and book.ask_count() == 2


def test_replace_drops_zero_levels_and_last_duplicate_wins() -> None:
    book = OrderBook("X")
    book.replace(levels(("1", "0"), ("2", "1"), ("2.0", "3"), ("3", "1"), ("3", "0")), [])
    assert book.bids() == [(D("2"), D("3"))]


def test_replace_discards_everything_before() -> None:
    book = OrderBook("X")
    book.replace(levels(("1", "1"), ("2", "1")), levels(("5", "1")))
    book.replace([], levels(("7", "2")))
    assert book.bids() == [] and book.asks() == [(D("7"), D("2"))]


def test_replace_with_negative_amount_leaves_book_unchanged() -> None:
    book = OrderBook("X")
    book.replace(levels(("1", "1")), [])
    with pytest.raises(ValueError):
        book.replace(levels(("2", "1")), levels(("3", "-1")))
    assert book.bids() == [(D("1"), D("1"))] and book.asks() == []


def test_apply_absolute_sizes_and_removal() -> None:
    book = OrderBook("X")
    book.replace(levels(("100", "1")), levels(("101", "1")))
    book.apply("bid", D("100"), D("2.5"))
    assert book.best_bid() == (D("100"), D("2.5"))
    book.apply("bid", D("99.5"), D("1"))
    book.apply("bid", D("100.0"), D("0"))  # padded spelling, same level
    assert book.bids() == [(D("99.5"), D("1"))]
    book.apply("ask", D("150"), D("0"))  # missing level: no-op
    assert book.asks() == [(D("101"), D("1"))]
    with pytest.raises(ValueError):
        book.apply("ask", D("101"), D("-1"))
    assert book.asks() == [(D("101"), D("1"))]


def test_crossing() -> None:
    book = OrderBook("X")
    book.replace(levels(("100", "1")), levels(("101", "1")))
    assert not book.is_crossed()
    book.apply("bid", D("101"), D("1"))
    assert book.is_crossed()  # equal prices cross
    book.apply("bid", D("101"), D("0"))
    assert not book.is_crossed()
    book.apply("ask", D("99"), D("1"))
    assert book.is_crossed()


def test_depth_queries_are_fast_at_thousands_of_levels() -> None:
    book = OrderBook("X")
    book.replace(
        [(Decimal(i) / 4, Decimal(1)) for i in range(1, 20001)],
        [(Decimal(i) / 4, Decimal(1)) for i in range(20001, 40001)],
    )
    start = time.perf_counter()
    for _ in range(2000):
        book.bids(10)
        book.asks(10)
        book.best_bid()
        book.is_crossed()
    elapsed = time.perf_counter() - start
    assert book.bids(2) == [(D("5000"), D("1")), (D("4999.75"), D("1"))]
    # ~20 us per round on a slow CI core would be 0.04 s; a linear scan would be seconds.
    assert elapsed < 1.0


prices = st.integers(1, 60).map(lambda i: f"{i // 4}.{(i % 4) * 25:02d}")
amounts = st.integers(0, 5).map(str) | st.sampled_from(["0.0", "0.00", "1.50", "2.500000"])
ops = st.lists(
    st.tuples(st.sampled_from(["bid", "ask"]), prices, amounts, st.booleans()), max_size=200
)


@given(ops)
def test_any_update_sequence_matches_a_dict_model(
    operations: list[tuple[Side, str, str, bool]],
) -> None:
    book = OrderBook("X")
    book.replace([], [])
    model: dict[Side, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
    for side, price_text, amount_text, pad in operations:
        if pad and "." not in price_text:
            price_text += ".000"
        price, amount = parse(price_text), parse(amount_text)
        # The book must not care how the price was spelled: use the raw value too.
        book.apply(side, Decimal(price_text) if pad else price, amount)
        if amount:
            model[side][price] = amount
        else:
            model[side].pop(price, None)
    assert book.bids() == sorted(model["bid"].items(), reverse=True)
    assert book.asks() == sorted(model["ask"].items())
    assert len(book) == len(model["bid"]) + len(model["ask"])
    best_bid = max(model["bid"], default=None)
    best_ask = min(model["ask"], default=None)
    assert book.best_bid() == (None if best_bid is None else (best_bid, model["bid"][best_bid]))
    assert book.best_ask() == (None if best_ask is None else (best_ask, model["ask"][best_ask]))
    crossed = best_bid is not None and best_ask is not None and best_bid >= best_ask
    assert book.is_crossed() is crossed


@given(ops)
def test_padded_and_trimmed_spellings_build_the_same_book(
    operations: list[tuple[Side, str, str, bool]],
) -> None:
    trimmed, padded = OrderBook("X"), OrderBook("X")
    for side, price_text, amount_text, _ in operations:
        trimmed.apply(side, parse(price_text), parse(amount_text))
        padded.apply(side, Decimal(price_text + ("0" if "." in price_text else ".0")),
                     Decimal(amount_text))  # fmt: skip
    assert trimmed.bids() == padded.bids() and trimmed.asks() == padded.asks()
    assert [str(p) for p, _ in trimmed.bids()] == [str(parse(str(p))) for p, _ in padded.bids()]


@given(ops, st.sampled_from(["bid", "ask"]), prices)
def test_crosses_predicts_is_crossed_for_an_uncrossed_book(
    operations: list[tuple[Side, str, str, bool]], side: Side, price_text: str
) -> None:
    book = OrderBook("X")
    for op_side, op_price, op_amount, _ in operations:
        book.apply(op_side, parse(op_price), parse(op_amount))
        if book.is_crossed():
            book.apply(op_side, parse(op_price), parse("0"))
    assert not book.is_crossed()
    price = parse(price_text)
    predicted = book.crosses(side, price)
    book.apply(side, price, parse("1"))
    assert book.is_crossed() is predicted
