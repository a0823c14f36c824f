"""The request parser: every hostile input gets a precise error, nothing ever raises."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.contract.protocol import (
    Encoding,
    Error,
    ListRequest,
    PingRequest,
    ResumeFrom,
    StreamNameError,
    SubscribeRequest,
    UnsubscribeRequest,
    encoding_from_query,
    parse_stream,
)
from gateway.contract.request_parser import parse_request
from tests.support.hostile_requests import HOSTILE, MAX_BYTES, MAX_STREAMS


def parse(data: bytes | str, *, msgpack: bool = False) -> object:
    return parse_request(data, max_bytes=MAX_BYTES, max_streams=MAX_STREAMS, msgpack=msgpack)


@pytest.mark.parametrize(("data", "code"), HOSTILE)
def test_hostile_request_gets_precise_error(data: str | bytes, code: str) -> None:
    result = parse(data)
    assert isinstance(result, Error), result
    assert result.code == code, result.message
    assert result.message


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    data = "[" * 100_000 + "]" * 100_000
    result = parse_request(data, max_bytes=len(data), max_streams=MAX_STREAMS)
    assert isinstance(result, Error) and result.code == "malformed"
    assert "deeply" in result.message


def test_there_are_at_least_thirty_hostile_cases() -> None:
    assert len(HOSTILE) >= 30
    assert len({c for _, c in HOSTILE}) >= 7  # every parser-level code


def test_error_echoes_a_usable_id() -> None:
    result = parse('{"op":"subscribe","id":"req-7","streams":["nope"]}')
    assert isinstance(result, Error)
    assert result.id == "req-7"
    result = parse('{"op":"bogus","id":12}')
    assert isinstance(result, Error) and result.id == 12
    result = parse('{"op":"ping","id":true}')
    assert isinstance(result, Error) and result.id is None


def test_valid_requests() -> None:
    req = parse(
        '{"op":"subscribe","id":1,"streams":["book.BTCUSD","trades.*","book.BTCUSD"],'
        '"resume":{"book.BTCUSD":{"epoch":5,"seq":10}}}'
    )
    assert req == SubscribeRequest(
        id=1,
        streams=["book.BTCUSD", "trades.*"],  # duplicates dropped, order kept
        resume={"book.BTCUSD": ResumeFrom(epoch=5, seq=10)},
    )
    # A resume may name a concrete stream that one of the patterns covers.
    assert isinstance(
        parse('{"op":"subscribe","streams":["*.BTCUSD"],"resume":{"trades.BTCUSD":'
              '{"epoch":5,"seq":0}}}'),
        SubscribeRequest,
    )  # fmt: skip
    assert parse('{"op":"unsubscribe","streams":["*.*"]}') == UnsubscribeRequest(streams=["*.*"])
    assert parse('{"op":"ping"}') == PingRequest()
    assert parse(b'{"op":"list","id":"x"}') == ListRequest(id="x")
    assert parse(' {"op":"ping", "id": -3} ') == PingRequest(id=-3)
    assert isinstance(parse('{"op":"subscribe","streams":["status.marketdata-BTCUSD"]}'),
                      SubscribeRequest)  # fmt: skip


def test_msgpack_requests_in_binary_frames() -> None:
    data = msgspec.msgpack.encode({"op": "subscribe", "id": 3, "streams": ["price.USDCUSD"]})
    assert parse(data, msgpack=True) == SubscribeRequest(id=3, streams=["price.USDCUSD"])
    # Text frames stay JSON on a msgpack connection.
    assert parse('{"op":"ping"}', msgpack=True) == PingRequest()
    bad = parse(b"\xc1", msgpack=True)
    assert isinstance(bad, Error) and bad.code == "malformed" and "MessagePack" in bad.message
    weird_keys = parse(msgspec.msgpack.encode({1: 2, "op": "ping"}), msgpack=True)
    assert isinstance(weird_keys, Error) and weird_keys.code == "invalid_request"


@pytest.mark.parametrize(
    ("name", "kind", "key"),
    [
        ("book.BTCUSD", "book", "BTCUSD"),
        ("book.*", "book", None),
        ("*.BTCUSD", None, "BTCUSD"),
        ("*.*", None, None),
        ("status.marketdata-BTCUSD", "status", "marketdata-BTCUSD"),
    ],
)
def test_parse_stream(name: str, kind: str | None, key: str | None) -> None:
    parsed = parse_stream(name)
    assert (parsed.kind, parsed.key) == (kind, key)
    assert str(parsed) == name


def test_stream_patterns_match_whole_parts_only() -> None:
    assert parse_stream("book.*").matches("book.ETHUSD")
    assert not parse_stream("book.*").matches("trades.ETHUSD")
    assert parse_stream("*.ETHUSD").matches("price.ETHUSD")
    assert not parse_stream("*.ETHUSD").matches("price.ETHUSDX")
    with pytest.raises(StreamNameError):
        parse_stream("book.ETH*")


def test_encoding_from_query() -> None:
    assert encoding_from_query(None) is Encoding.JSON
    assert encoding_from_query("json") is Encoding.JSON
    assert encoding_from_query("msgpack") is Encoding.MSGPACK
    assert encoding_from_query("paxos") is None
    assert encoding_from_query("") is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048), st.booleans())
def test_any_bytes_parse_or_error(data: bytes, msgpack: bool) -> None:
    result = parse(data, msgpack=msgpack)
    assert isinstance(result, Error | SubscribeRequest | UnsubscribeRequest | PingRequest |
                      ListRequest)  # fmt: skip


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["op", "id", "streams", "resume", "x"]), _json_values, max_size=5
    ),
    st.sampled_from(["subscribe", "unsubscribe", "ping", "list", None]),
)
def test_structured_garbage_parses_or_errors(raw: dict[str, object], op: str | None) -> None:
    if op is not None:
        raw["op"] = op
    data = msgspec.json.encode(raw)
    result = parse(data)
    if isinstance(result, Error):
        assert result.code in {
            "too_large", "invalid_request", "bad_stream", "too_many_subscriptions",
            "bad_resume", "unknown_op", "malformed",
        }  # fmt: skip
    else:
        assert isinstance(result, SubscribeRequest | UnsubscribeRequest | PingRequest | ListRequest)
        assert result.id == raw.get("id")
    # The answer can always be encoded for the client.
    msgspec.json.encode(result)


def _resume_request(epoch_json: str) -> str:
    return (
        '{"op":"subscribe","id":7,"streams":["book.BTCUSD"],'
        f'"resume":{{"book.BTCUSD":{{"epoch":{epoch_json},"seq":3}}}}}}'
    )


def test_resume_epoch_is_the_string_the_gateway_sent() -> None:
    epoch = "1795582622048325592"  # above 2^53: JSON.parse would round it as a number
    req = parse(_resume_request(f'"{epoch}"'))
    assert isinstance(req, SubscribeRequest) and req.resume is not None
    assert req.resume["book.BTCUSD"] == ResumeFrom(epoch=epoch, seq=3)
    # Protocol v1's integer is still accepted (the transition), as the same digits.
    legacy = parse(_resume_request(epoch))
    assert isinstance(legacy, SubscribeRequest) and legacy.resume is not None
    assert legacy.resume["book.BTCUSD"].epoch == epoch
    assert ResumeFrom(epoch=5, seq=1).epoch == "5"


@pytest.mark.parametrize(
    "epoch_json",
    ['"abc"', '"0123"', '"1.7e18"', '" 1"', '"-1"', "1.7e18", "-1", "null", "true", "[]",
     "9223372036854775808", '"' + "9" * 21 + '"'],
)  # fmt: skip
def test_malformed_resume_epoch_gets_a_clear_bad_resume(epoch_json: str) -> None:
    result = parse(_resume_request(epoch_json))
    assert isinstance(result, Error), result
    assert (result.code, result.id) == ("bad_resume", 7)
    assert "$.resume[...].epoch" in result.message
    assert "epoch is the string the gateway sent" in result.message
