"""Fuzzing the subscriber request parser (``request_parser.parse_request``) and ``Hub.receive``.

Inputs: arbitrary bytes and text (JSON and MessagePack connections), and structure-aware
mutations of valid requests (fields deleted, types changed, unknown fields, out-of-range ids and
sequence numbers, bad stream names and patterns, oversized requests, deep nesting, truncation,
duplicated keys, wrapping, raw byte damage).

Invariants: the parser never raises and returns either a typed request that is really valid
(every stream name parses, within the per-request limit, resume only for concrete names of the
request) or an ``Error`` with a known code that can be encoded for the wire; a mutation that must
fail fails with the expected code; and the hub answers every request with exactly one response,
while a refused request changes no subscription, stream or subscriber state.
"""

from __future__ import annotations

import json
from decimal import Decimal
from random import Random
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contract.protocol import (
    REQUEST_TYPES,
    Encoding,
    Error,
    ErrorCode,
    ListRequest,
    PingRequest,
    Pong,
    Request,
    StreamList,
    Subscribed,
    SubscribeRequest,
    Unsubscribed,
    UnsubscribeRequest,
    parse_stream,
)
from gateway.contract.records import BookSnapshot, Status, Trade
from gateway.contract.request_parser import parse_request
from gateway.fanout.hub import Hub, Subscriber
from gateway.ingest.book import OrderBook

EPOCH = "1700000000000000000"
MAX_BYTES = 65536
MAX_STREAMS = 6
CODES = frozenset(get_args(ErrorCode))

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Json = Any

json_encoder = msgspec.json.Encoder()
msgpack_encoder = msgspec.msgpack.Encoder()


def parse(data: bytes | str, msgpack: bool = False) -> Request | Error:
    return parse_request(data, max_bytes=MAX_BYTES, max_streams=MAX_STREAMS, msgpack=msgpack)


def check_result(result: object) -> None:
    """The parser's contract, whatever the input was."""
    if isinstance(result, Error):
        assert result.code in CODES
        assert result.message
        assert result.id is None or isinstance(result.id, int | str)
        # The error is answered on the wire: both encodings must be able to carry it.
        json_encoder.encode(result)
        msgpack_encoder.encode(result)
        return
    assert isinstance(result, REQUEST_TYPES), result
    rid = result.id
    assert (
        rid is None
        or (isinstance(rid, str) and len(rid) <= 64)
        or (isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) <= 2**53)
    )
    if isinstance(result, SubscribeRequest | UnsubscribeRequest):
        assert 1 <= len(result.streams) <= MAX_STREAMS
        assert len(set(result.streams)) == len(result.streams)
        parsed = [parse_stream(name) for name in result.streams]  # must not raise
        if isinstance(result, SubscribeRequest) and result.resume:
            for name, point in result.resume.items():
                target = parse_stream(name)
                assert not target.is_pattern
                assert any(p.matches(name) for p in parsed)
                assert 0 <= point.seq <= 2**63 - 1 and 0 <= int(point.epoch) <= 2**63 - 1


# -- arbitrary input ------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)), st.booleans())
def test_arbitrary_input_parses_or_errors(data: bytes | str, msgpack: bool) -> None:
    check_result(parse(data, msgpack))


@FUZZ
@given(
    st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.one_of(
                    st.sampled_from(["op", "id", "streams", "resume", "epoch", "seq"]),
                    st.text(max_size=6),
                ),
                inner,
                max_size=4,
            ),
        ),
        max_leaves=20,
    ),
    st.booleans(),
)
def test_arbitrary_json_and_msgpack_values_parse_or_error(value: Json, msgpack: bool) -> None:
    try:
        data: bytes | str = (
            msgpack_encoder.encode(value) if msgpack else json.dumps(value, allow_nan=True)
        )
    except (OverflowError, TypeError, ValueError):
        return  # e.g. integers MessagePack cannot carry
    check_result(parse(data, msgpack))


# -- structure-aware mutations -------------------------------------------------------------------

GOOD_STREAMS = [
    "book.BTCUSD",
    "trades.BTCUSD",
    "price.USDCUSD",
    "status.book",
    "book.*",
    "*.BTCUSD",
    "*.*",
    "trades.*",
    "status.*",
    "book.ETHUSD",
]
BAD_STREAMS = [
    "",
    "book",
    "BOOK.BTCUSD",
    "book.btcusd",
    "book.BTC-USD",
    "candles.BTCUSD",
    "book.B",
    "book." + "X" * 21,
    "book.**",
    "book.BTC*",
    "status.-x",
    "*.",
    ".*",
    "x" * 200,
    "book.BTCUSD ",
    "book.BTCUSD.x",
    "\u0000.BTCUSD",
    "book.\u00c4BC",
]


def valid_request(rng: Random) -> dict[str, Json]:
    op = rng.choice(["subscribe", "unsubscribe", "ping", "list"])
    req: dict[str, Json] = {"op": op}
    if rng.random() < 0.7:
        req["id"] = rng.choice([rng.randint(-(2**53), 2**53), f"r{rng.randint(0, 99)}", None])
    if op in ("subscribe", "unsubscribe"):
        streams = rng.sample(GOOD_STREAMS, rng.randint(1, MAX_STREAMS))
        req["streams"] = streams
        concrete = [s for s in streams if "*" not in s]
        if op == "subscribe" and concrete and rng.random() < 0.4:
            req["resume"] = {
                name: {"epoch": EPOCH, "seq": rng.randint(0, 30)}
                for name in rng.sample(concrete, rng.randint(1, len(concrete)))
            }
    return req


def scalar(rng: Random) -> Json:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            2**53 + 1,
            -(2**53) - 1,
            2**63,
            -(2**63) - 1,
            1.5,
            "",
            "x" * 70,
            "book.BTCUSD",
            [],
            {},
            ["book.BTCUSD"],
            {"epoch": 1},
        ]
    )


NESTED = "\u2603nested\u2603"  # replaced by deeply nested arrays in the request text

MUTATIONS = (
    "delete",
    "type",
    "unknown",
    "bad_stream",
    "too_many",
    "empty_streams",
    "bad_op",
    "bad_id",
    "bad_resume",
    "nested",
    "truncate",
    "duplicate",
    "wrap",
    "byte",
    "oversize",
    "msgpack",
)


def mutated(rng: Random) -> tuple[bytes | str, bool, ErrorCode | None]:
    """(data, msgpack, the error code the parser must give or None if either outcome is fine)."""
    req = valid_request(rng)
    how = rng.choice(MUTATIONS)
    expect: ErrorCode | None = None
    streams = "streams" in req
    if how == "delete":
        key = rng.choice(list(req))
        del req[key]
        expect = "invalid_request" if key in ("op", "streams") else None
    elif how == "type":
        key = rng.choice(list(req))
        req[key] = scalar(rng)
    elif how == "unknown":
        req[rng.choice(["x", "Op", "stream", "resume_from", "ID", ""])] = scalar(rng)
        expect = "invalid_request"
    elif how == "bad_stream" and streams:
        req["streams"] = [*req["streams"][:-1], rng.choice(BAD_STREAMS)]
        req.pop("resume", None)
        # Lengths outside 1..128 fail the request's type (like any ill-typed field); a name
        # of a valid length fails the stream grammar.
        expect = "bad_stream" if 1 <= len(req["streams"][-1]) <= 128 else "invalid_request"
    elif how == "too_many" and streams:
        req["streams"] = [f"book.M{i:04d}" for i in range(MAX_STREAMS + 1)]
        req.pop("resume", None)
        expect = "too_many_subscriptions"
    elif how == "empty_streams" and streams:
        req["streams"] = []
        req.pop("resume", None)
        expect = "invalid_request"
    elif how == "bad_op":
        req["op"] = rng.choice(["Subscribe", "sub", "", "subscribe ", "LIST", "pong"])
        expect = "unknown_op"
    elif how == "bad_id":
        req["id"] = rng.choice([2**53 + 1, -(2**53) - 1, True, 1.5, "x" * 65, [], {}])
        expect = "invalid_request"
    elif how == "bad_resume" and req["op"] == "subscribe":
        name = rng.choice(["book.*", "book.ETHUSD2", "nonsense", "trades.ZZZ9"])
        req["resume"] = {name: {"epoch": EPOCH, "seq": rng.choice([0, -1, 2**63, "1"])}}
    elif how == "nested":
        req[rng.choice(list(req))] = NESTED
        expect = None  # malformed when too deep for the decoder, invalid_request otherwise
    elif how == "wrap":
        return json.dumps(rng.choice([[req], "subscribe", 1, None])), False, "invalid_request"
    text = json.dumps(req, separators=(",", ":"))
    if how == "nested":
        depth = rng.choice([1, 10, 100, 1000, 5000, 100_000])
        text = text.replace(json.dumps(NESTED), "[" * depth + "1" + "]" * depth)
        return text, False, "too_large" if len(text) > MAX_BYTES else None
    if how == "truncate":
        return text[: rng.randrange(len(text))], False, "malformed"
    if how == "duplicate":
        key = rng.choice(list(req))
        return text[:-1] + f',"{key}":' + json.dumps(scalar(rng)) + "}", False, None
    if how == "byte":
        raw = text.encode()
        pos = rng.randint(0, len(raw))
        return raw[:pos] + bytes([rng.randrange(256)]) + raw[pos:], rng.random() < 0.5, None
    if how == "oversize":
        req["pad"] = "x" * MAX_BYTES
        return json.dumps(req), rng.random() < 0.5, "too_large"
    if how == "msgpack":
        try:
            return msgpack_encoder.encode(req), True, expect
        except OverflowError:
            return text, False, expect
    return (text.encode() if rng.random() < 0.5 else text), False, expect


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=10, max_size=60))
def test_mutated_requests_parse_or_error_precisely(seeds: list[int]) -> None:
    for seed in seeds:
        data, msgpack, expect = mutated(Random(seed))
        result = parse(data, msgpack)
        check_result(result)
        if expect is not None:
            assert isinstance(result, Error), (data, result)
            assert result.code == expect, (data, result)


@pytest.mark.parametrize("msgpack", [False, True])
def test_valid_requests_parse_to_the_same_request(msgpack: bool) -> None:
    rng = Random(7)
    for _ in range(500):
        req = valid_request(rng)
        data = msgpack_encoder.encode(req) if msgpack else json.dumps(req)
        result = parse(data, msgpack)
        check_result(result)
        assert not isinstance(result, Error), (req, result)
        assert result.id == req.get("id")
        assert type(result).__name__.lower().startswith(req["op"])
        if isinstance(result, SubscribeRequest | UnsubscribeRequest):
            assert result.streams == req["streams"]
        if isinstance(result, SubscribeRequest):
            resume = result.resume or {}
            assert {k: (v.epoch, v.seq) for k, v in resume.items()} == {
                k: (v["epoch"], v["seq"]) for k, v in req.get("resume", {}).items()
            }


# -- the hub -------------------------------------------------------------------------------------


def new_hub() -> tuple[Hub, Subscriber]:
    hub = Hub(EPOCH, max_subscriptions=MAX_STREAMS, max_request_bytes=MAX_BYTES)
    # As a normalizer would: the book of the snapshot below, registered before it is published.
    book = OrderBook("BTCUSD")
    book.replace([], [])
    hub.register_book("book.BTCUSD", book)
    hub.publish(
        [
            Status(
                stream="status.book",
                seq=1,
                epoch=EPOCH,
                receive_time="1",
                feed="book",
                state="connected",
                reason="up",
            ),
            BookSnapshot(
                stream="book.BTCUSD",
                seq=1,
                epoch=EPOCH,
                receive_time="1",
                market="BTCUSD",
                bids=[],
                asks=[],
                resync=False,
                reason="initial",
            ),
            Trade(
                stream="trades.BTCUSD",
                seq=1,
                epoch=EPOCH,
                receive_time="1",
                market="BTCUSD",
                price=Decimal(1),
                amount=Decimal(1),
                match_number="M1",
                exchange_time="1",
            ),
        ]
    )
    hub.declare_stream("price.USDCUSD")
    sub = hub.connect()
    hub.receive(sub, '{"op":"subscribe","streams":["status.*"]}')
    return hub, sub


def hub_state(hub: Hub) -> Json:
    return (
        {n: (st.seq, frozenset(s.id for s in st.subscribers)) for n, st in hub._streams.items()},
        {n: frozenset(s.id for s in subs) for n, (_, subs) in hub.patterns._by_pattern.items()},
        {
            s.id: (
                frozenset(s.streams),
                frozenset(s.conversation.exact if s.conversation else ()),
                frozenset(s.conversation.patterns if s.conversation else ()),
                s.close_code,
            )
            for s in hub._subscribers
        },
    )


ANSWERS: dict[type[Any], type[Any]] = {
    SubscribeRequest: Subscribed,
    UnsubscribeRequest: Unsubscribed,
    PingRequest: Pong,
    ListRequest: StreamList,
}


def hub_request(rng: Random) -> tuple[bytes | str, bool]:
    roll = rng.random()
    if roll < 0.45:
        data, msgpack, _ = mutated(rng)
        return data, msgpack
    if roll < 0.9:
        req = valid_request(rng)
        if rng.random() < 0.3:
            return msgpack_encoder.encode(req), True
        return json.dumps(req), False
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, 40)), rng.random() < 0.5
    return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 40))), False


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=60))
def test_hub_answers_once_and_refusals_change_nothing(seeds: list[int]) -> None:
    hub, json_sub = new_hub()
    msgpack_sub = hub.connect(Encoding.MSGPACK)
    for seed in seeds:
        rng = Random(seed)
        data, msgpack = hub_request(rng)
        sub = msgpack_sub if msgpack else json_sub
        before = hub_state(hub)
        queued = len(sub.queue)
        errors = hub.stats.request_errors
        result = hub.receive(sub, data)
        new = [frame.message for frame in list(sub.queue)[queued:]]
        assert new, "every request gets an answer"
        if result is not None:
            check_result(result)
            assert new == [result]
            assert hub.stats.request_errors == errors + 1
            assert hub_state(hub) == before
        else:
            request = parse_request(
                data,
                max_bytes=MAX_BYTES,
                max_streams=MAX_STREAMS,
                msgpack=sub.encoding == Encoding.MSGPACK,
            )
            assert not isinstance(request, Error)
            assert isinstance(new[0], ANSWERS[type(request)])
            assert new[0].id == request.id
            assert not any(isinstance(m, Error) for m in new)
        assert sub.conversation is not None
        assert len(sub.conversation.exact) + len(sub.conversation.patterns) <= MAX_STREAMS
        # Keep the buffers small; what was sent is not the point here.
        for s in (json_sub, msgpack_sub):
            while s.take():
                s.sent()
