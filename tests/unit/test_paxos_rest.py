"""ingest/paxos_rest.py: REST answers → typed values; padded numbers → the WebSocket's decimals."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gateway.ingest import decimals, paxos_rest
from gateway.ingest.paxos_rest import MarketInfo, RestAnswerError, RestExecution


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_padded_numbers_equal_the_trimmed_websocket_ones() -> None:
    items = [
        {"match_number": "H7WILBDENCD1", "price": "64997.25", "amount": "1.72100000",
         "executed_at": "2026-11-30T02:36:36Z"},
        {"match_number": "UDTO023ANUS6", "price": "9248.00", "amount": "0.00000001",
         "executed_at": "2026-11-30T02:36:36.09092116Z", "unknown": "ignored"},
    ]  # fmt: skip
    parsed = paxos_rest.parse_executions(body({"items": items}))
    assert parsed == [
        RestExecution("H7WILBDENCD1", Decimal("64997.25"), Decimal("1.721"), 1796006196 * 10**9),
        RestExecution("UDTO023ANUS6", Decimal("9248"), Decimal("0.00000001"), 1796006196_090921160),
    ]
    # the canonical form: the same text a WebSocket "9248" or "1.721" gives
    assert decimals.to_str(parsed[1].price) == "9248"
    assert str(parsed[0].amount) == "1.721"
    assert str(parsed[1].amount) == "0.00000001"  # never "1E-8"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"not json", "recent-executions: JSON is malformed"),
        (b'{"items": 5}', "Expected `array`"),
        (b'{"data": []}', "missing required field `items`"),
        (body({"items": [{"match_number": "A", "price": 1, "amount": "1",
                          "executed_at": "2026-11-30T02:36:36Z"}]}), "Expected `str`"),
        (body({"items": [{"match_number": "A", "price": "-1", "amount": "1",
                          "executed_at": "2026-11-30T02:36:36Z"}]}), "not a non-negative"),
        (body({"items": [{"match_number": "A", "price": "0.00", "amount": "1",
                          "executed_at": "2026-11-30T02:36:36Z"}]}), "items[0]: zero price"),
        (body({"items": [{"match_number": "", "price": "1", "amount": "1",
                          "executed_at": "2026-11-30T02:36:36Z"}]}), "bad match_number"),
        (body({"items": [{"match_number": "A", "price": "1", "amount": "1",
                          "executed_at": "yesterday"}]}), "items[0]: not an RFC 3339"),
    ],
)  # fmt: skip
def test_bad_execution_answers_are_clear_errors(answer: bytes, message: str) -> None:
    with pytest.raises(RestAnswerError) as caught:
        paxos_rest.parse_executions(answer)
    assert message in str(caught.value)


def test_markets_open_halted_and_bad() -> None:
    status = {"buy_status": "AVAILABLE", "sell_status": "AVAILABLE", "updated_at": "x"}
    halted = {"buy_status": "UNAVAILABLE", "sell_status": "UNAVAILABLE",
              "buy_reason": "MARKET_HALTED", "sell_reason": "MARKET_HALTED"}  # fmt: skip
    answer = {
        "markets": [
            {"market": "BTCUSD", "tick_rate": "0.25", "market_status": status},
            {"market": "ETHUSD", "market_status": halted},
            {"market": "PAXGUSD", "market_status": {**status, "sell_status": "UNAVAILABLE"}},
        ]
    }
    assert paxos_rest.parse_markets(body(answer)) == [
        MarketInfo("BTCUSD", True, ""),
        MarketInfo("ETHUSD", False, "MARKET_HALTED"),
        MarketInfo("PAXGUSD", False, "UNAVAILABLE"),
    ]
    with pytest.raises(RestAnswerError, match=r"bad market name 'btc\.usd'"):
        paxos_rest.parse_markets(
            body({"markets": [{"market": "btc.usd", "market_status": status}]})
        )
    with pytest.raises(RestAnswerError, match="markets: "):
        paxos_rest.parse_markets(b"[]")


def test_problem_documents() -> None:
    problem = body({"type": "x", "title": "Not Found", "status": 404, "detail": "market X"})
    parsed = paxos_rest.parse_problem(problem)
    assert parsed is not None and (parsed.status, parsed.title) == (404, "Not Found")
    assert paxos_rest.parse_problem(b"<html>") is None
