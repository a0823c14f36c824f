"""Paxos's public REST market data, answered from the model (sans-IO: request in, response out).

``respond(model, method, target, now_ns=..., settings=...)`` is a pure function of the model
at that moment: the trio edge (``rest_server``) only parses HTTP, applies the rate limit and
the faults, and writes what this returns. Paths, under ``/v2`` as on ``api.paxos.com``:

- ``GET /v2/markets`` -> ``{"markets":[{market, base_asset, quote_asset, tick_rate,
  market_status:{buy_status, sell_status, [buy_reason, sell_reason,] updated_at,
  scheduled_maintenance}, min_base_amount, min_quote_amount, max_base_amount,
  max_quote_amount}]}``: the listed markets, open ones ``AVAILABLE``, halted ones
  ``UNAVAILABLE``; a delisted market is not there at all.
- ``GET /v2/markets/{m}/recent-executions`` -> ``{"items":[{match_number, price, amount,
  executed_at}]}``: the ``recent_executions`` (2,000) most recent executions of ``m``,
  newest first by default (``RestConfig.executions_order``), no ``market`` per item.
- ``GET /v2/markets/{m}/order-book`` -> ``{"market", "asks":[{price, amount}], "bids":[...]}``,
  asks lowest first, bids highest first, the whole book.
- ``GET /v2/markets/{m}/ticker`` -> ``{market, best_bid, best_ask, last_execution, last_day,
  today, snapshot_at}``; the day windows carry ``high, low, open, volume, start_time,
  end_time``.

Numbers are decimal strings padded as Paxos REST pads them: prices to the market's tick
scale (``"65000.25"``, ``"3200.00"``), amounts to 8 decimals (``"0.15370106"``). An
execution's ``executed_at`` is the very string its WebSocket message carries, so a client
sees one instant per ``match_number`` whichever way it learnt of it.

Errors are RFC 7807 problem documents (``application/problem+json``) the way Paxos's APIs
write them: ``{"type", "title", "status", "detail", "instance"}``; an unknown or delisted
market is a 404. Guessed where Paxos documents nothing: the ``problems/...`` type URIs,
``buy_reason``/``sell_reason`` (``"MARKET_HALTED"``), the min/max amounts (placeholders,
the same for every market), ``scheduled_maintenance`` (always empty), ticker windows with no
execution (zeros), and ``last_day``/``today`` ending at ``snapshot_at``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gateway.simulator.config import RestConfig
from gateway.simulator.events import Execution
from gateway.simulator.formatting import TimestampFormatter, format_units
from gateway.simulator.markets import AMOUNT_SCALE
from gateway.simulator.model import MarketModel

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://docs.paxos.com/problems/"
ENDPOINTS = ("recent-executions", "order-book", "ticker")

_DAY_NS = 86_400 * 10**9
# an execution's stamp is cut to 0..9 fractional digits, so it may read up to a second
# earlier than it happened: a window scan may stop once stamps are this far before it
_STAMP_SLACK_NS = 10**9
_QUOTES = ("USDC", "USDP", "USD", "EUR", "SGD", "GBP", "BRL", "MXN")
_LIMITS = {  # placeholders: Paxos lists these per market, their values are not documented
    "min_base_amount": "0.00000001",
    "min_quote_amount": "0.01",
    "max_base_amount": "100000.00000000",
    "max_quote_amount": "10000000.00",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    """Beyond content type and length (``Retry-After``, ``Allow``)."""


def respond(
    model: MarketModel, method: str, target: str, *, now_ns: int, settings: RestConfig
) -> Response:
    """The answer to one request, from the model as it is now."""
    path = target.split("?", 1)[0]
    match [p for p in path.split("/") if p]:
        case ["v2", "markets"]:
            handler = "markets"
            market = ""
        case ["v2", "markets", market, endpoint] if endpoint in ENDPOINTS:
            handler = endpoint
        case _:
            return problem(404, f"no such resource: {path}", path)
    if method != "GET":
        return problem(405, f"{method} is not allowed here; use GET", path, (("Allow", "GET"),))
    if handler == "markets":
        return _json({"markets": [_market(model, m) for m in model.markets]})
    if market not in model.markets:
        return problem(404, f"market {market} not found", path)
    if handler == "recent-executions":
        return _json({"items": _recent_executions(model, market, settings)})
    if handler == "order-book":
        return _json(_order_book(model, market))
    return _json(_ticker(model, market, now_ns))


def problem(
    status: int, detail: str, instance: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """An RFC 7807 problem document with Paxos's fields."""
    title = phrase(status)
    body = {
        "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return Response(status, _dump(body), PROBLEM_JSON, headers)


def phrase(status: int) -> str:
    """The status's reason phrase; "Error" for a code with none (a 599 fault, say)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def too_many_requests(instance: str, wait: float) -> Response:
    """429 with ``Retry-After`` in whole seconds, rounded up (at least 1)."""
    seconds = max(1, math.ceil(wait))
    return problem(
        429,
        f"rate limit exceeded: retry after {seconds} s",
        instance,
        (("Retry-After", str(seconds)),),
    )


# -- bodies -------------------------------------------------------------------------------


def _market(model: MarketModel, market: str) -> dict[str, Any]:
    spec = model.spec(market)
    base, quote = _split_symbol(market)
    halted = model.status(market) == "halted"
    status: dict[str, Any] = {
        "buy_status": "UNAVAILABLE" if halted else "AVAILABLE",
        "sell_status": "UNAVAILABLE" if halted else "AVAILABLE",
    }
    if halted:
        status["buy_reason"] = status["sell_reason"] = "MARKET_HALTED"
    status["updated_at"] = _stamp(model.status_since_ns(market))
    status["scheduled_maintenance"] = []
    return {
        "market": market,
        "base_asset": base,
        "quote_asset": quote,
        "tick_rate": format_units(spec.tick_units, spec.scale, pad=True),
        "market_status": status,
        **_LIMITS,
    }


def _recent_executions(
    model: MarketModel, market: str, settings: RestConfig
) -> list[dict[str, str]]:
    tape = model.executions_of(market)
    recent = tape[-settings.recent_executions :]
    ordered = reversed(recent) if settings.executions_order == "newest_first" else iter(recent)
    return [
        {
            "match_number": e.match_number,
            "price": format_units(e.price_units, e.scale, pad=True),
            "amount": format_units(e.amount_units, AMOUNT_SCALE, pad=True),
            "executed_at": e.executed_at,
        }
        for e in ordered
    ]


def _order_book(model: MarketModel, market: str) -> dict[str, Any]:
    bids, asks = model.book_units(market)
    scale = model.spec(market).scale
    return {"market": market, "asks": _levels(asks, scale), "bids": _levels(bids, scale)}


def _ticker(model: MarketModel, market: str, now_ns: int) -> dict[str, Any]:
    bids, asks = model.book_units(market)
    scale = model.spec(market).scale
    tape = model.executions_of(market)
    body: dict[str, Any] = {"market": market}
    for name, side in (("best_bid", bids), ("best_ask", asks)):
        if side:
            body[name] = _levels(side[:1], scale)[0]
    if tape:  # always, today: every market starts with one execution
        last = tape[-1]
        body["last_execution"] = {
            "price": format_units(last.price_units, last.scale, pad=True),
            "amount": format_units(last.amount_units, AMOUNT_SCALE, pad=True),
        }
    midnight = now_ns - now_ns % _DAY_NS
    body["last_day"] = _window(tape, now_ns - _DAY_NS, now_ns, scale)
    body["today"] = _window(tape, midnight, now_ns, scale)
    body["snapshot_at"] = _stamp(now_ns)
    return body


def _window(tape: Sequence[Execution], start_ns: int, end_ns: int, scale: int) -> dict[str, str]:
    """Open, high, low and volume of the executions stamped within [start, end]."""
    inside: list[Execution] = []
    for e in reversed(tape):  # newest first: a day is a small tail of a long run
        if e.executed_at_ns < start_ns - _STAMP_SLACK_NS:
            break
        if start_ns <= e.executed_at_ns <= end_ns:
            inside.append(e)
    prices = [e.price_units for e in inside]
    return {
        "high": format_units(max(prices, default=0), scale, pad=True),
        "low": format_units(min(prices, default=0), scale, pad=True),
        "open": format_units(inside[-1].price_units if inside else 0, scale, pad=True),
        "volume": format_units(sum(e.amount_units for e in inside), AMOUNT_SCALE, pad=True),
        "start_time": _stamp(start_ns),
        "end_time": _stamp(end_ns),
    }


# -- helpers ------------------------------------------------------------------------------


def _levels(levels: Iterable[tuple[int, int]], scale: int) -> list[dict[str, str]]:
    return [
        {
            "price": format_units(price, scale, pad=True),
            "amount": format_units(amount, AMOUNT_SCALE, pad=True),
        }
        for price, amount in levels
    ]


def _split_symbol(market: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if market.endswith(quote) and len(market) > len(quote):
            return market[: -len(quote)], quote
    return market[:-3], market[-3:]


def _stamp(ns: int) -> str:
    return TimestampFormatter().format(ns, 9)


def _json(body: dict[str, Any]) -> Response:
    return Response(200, _dump(body))


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
