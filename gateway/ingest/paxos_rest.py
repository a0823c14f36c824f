"""Paxos REST answers → typed values (sans-IO): the market list and recent executions.

The REST API pads every number (``"9248.00"``, ``"0.17000000"``); the values are parsed with
``decimals.parse``, the very function the WebSocket path uses, so an execution learnt over
REST equals the one the feed sent, level for level and digit for digit (``"65000.50"`` and
``"65000.5"`` are one canonical ``Decimal``). Times go through ``timestamps.parse_ns`` (0 to 9
fractional digits).

A bad answer (not JSON, a missing field, a number that is not a decimal, a market name that
could not be a stream name) raises ``RestAnswerError`` naming what was wrong: the caller logs
it, counts it and announces the backfill as failed; it never crashes the gateway. Unknown
fields are ignored (Paxos adds fields; a reader that refused them would break on the day it
does). Shapes: ``/work/shared/paxos/PROTOCOL.md`` "Market discovery" and docs/simulator.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from gateway.ingest import decimals, timestamps

__all__ = [
    "MarketInfo",
    "Problem",
    "RestAnswerError",
    "RestExecution",
    "parse_executions",
    "parse_markets",
    "parse_problem",
]

# The rule feeds.py and the normalizer apply: a market becomes part of a stream name.
_MARKET = re.compile(r"[A-Z0-9]{2,20}")
_MAX_MATCH_NUMBER = 64
_EXCERPT = 200


class RestAnswerError(ValueError):
    """A REST answer the gateway cannot use; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class RestExecution:
    """One item of ``recent-executions``: the fields of a WebSocket execution but ``market``."""

    match_number: str
    price: Decimal
    amount: Decimal
    executed_at_ns: int


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """One listed market; ``available`` is false when Paxos has stopped buying or selling it
    (``UNAVAILABLE``: a halt), ``reason`` says why (``MARKET_HALTED``) when Paxos says."""

    market: str
    available: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Problem:
    """An RFC 7807 problem document, as Paxos's APIs answer errors."""

    status: int | None
    title: str
    detail: str


# -- wire shapes (msgspec validates types; values are checked below) -------------------------


class _Execution(msgspec.Struct):
    match_number: str
    price: str
    amount: str
    executed_at: str


class _Executions(msgspec.Struct):
    items: list[_Execution]


class _MarketStatus(msgspec.Struct):
    buy_status: str
    sell_status: str
    buy_reason: str = ""
    sell_reason: str = ""


class _Market(msgspec.Struct):
    market: str
    market_status: _MarketStatus


class _Markets(msgspec.Struct):
    markets: list[_Market]


class _Problem(msgspec.Struct):
    status: int | None = None
    title: str = ""
    detail: str = ""


_executions_decoder = msgspec.json.Decoder(_Executions)
_markets_decoder = msgspec.json.Decoder(_Markets)
_problem_decoder = msgspec.json.Decoder(_Problem)


def parse_executions(body: bytes) -> list[RestExecution]:
    """``GET /markets/{m}/recent-executions`` → its executions, in the answer's order (Paxos
    documents none: callers sort by (``executed_at``, ``match_number``) themselves)."""
    try:
        answer = _executions_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RestAnswerError(f"recent-executions: {exc}: {_excerpt(body)}") from None
    result: list[RestExecution] = []
    for i, item in enumerate(answer.items):
        try:
            result.append(_execution(item))
        except ValueError as exc:  # DecimalError, TimestampError, the checks
            raise RestAnswerError(f"recent-executions: items[{i}]: {exc}") from None
    return result


def _execution(item: _Execution) -> RestExecution:
    match_number = item.match_number
    if not match_number or len(match_number) > _MAX_MATCH_NUMBER:
        raise ValueError(f"bad match_number {match_number[:_MAX_MATCH_NUMBER]!r}")
    price = decimals.parse(item.price)
    amount = decimals.parse(item.amount)
    if not price or not amount:
        raise ValueError(f"zero price or amount: {item.price} x {item.amount}")
    return RestExecution(match_number, price, amount, timestamps.parse_ns(item.executed_at))


def parse_markets(body: bytes) -> list[MarketInfo]:
    """``GET /markets`` → the listed markets (a delisted one is simply not there)."""
    try:
        answer = _markets_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RestAnswerError(f"markets: {exc}: {_excerpt(body)}") from None
    result: list[MarketInfo] = []
    for i, item in enumerate(answer.markets):
        if not _MARKET.fullmatch(item.market):
            raise RestAnswerError(f"markets: markets[{i}]: bad market name {item.market[:40]!r}")
        status = item.market_status
        available = status.buy_status == "AVAILABLE" and status.sell_status == "AVAILABLE"
        reason = "" if available else (status.buy_reason or status.sell_reason or "UNAVAILABLE")
        result.append(MarketInfo(item.market, available, reason))
    return result


def parse_problem(body: bytes) -> Problem | None:
    """The problem document of an error answer, or None if the body is not one."""
    try:
        problem = _problem_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    return Problem(problem.status, problem.title[:_EXCERPT], problem.detail[:_EXCERPT])


def _excerpt(body: bytes) -> str:
    text = body[:_EXCERPT].decode("utf-8", "replace")
    return repr(text) + ("..." if len(body) > _EXCERPT else "")
