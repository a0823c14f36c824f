from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest.feeds import FeedKind
from gateway.ingest.paxos_messages import (
    BookSnapshot,
    BookUpdate,
    ErrorFrame,
    Execution,
    Level,
    StablecoinPrice,
    WireError,
    decode,
    decoder_for,
)

EXECUTION = (
    b'{"market":"BTCUSD","price":"24228.75","amount":"0.00000412",'
    b'"executed_at":"2023-03-13T18:46:53.386Z","match_number":"6AJVAX7BTCH8"}'
)
SNAPSHOT = (
    b'{"type":"SNAPSHOT","market":"BTCUSD","bids":[{"price":"19994.25","amount":"0.7755"},'
    b'{"price":"19993.75","amount":"0.83676985"}],"asks":[{"price":"19994.5",'
    b'"amount":"0.97548541"},{"price":"19996","amount":"1.135"}],"final_snapshot":true}'
)
UPDATE = b'{"type":"UPDATE","market":"BTCUSD","side":"BUY","price":"19958.5","amount":"0.62649999"}'
PRICE = b'{"market":"USDCUSD","price":"1.0001","timestamp":"2024-11-04T18:11:09.042391267Z"}'


def test_documented_examples() -> None:
    assert decode("executions", EXECUTION) == Execution(
        market="BTCUSD",
        price="24228.75",
        amount="0.00000412",
        executed_at="2023-03-13T18:46:53.386Z",
        match_number="6AJVAX7BTCH8",
    )
    snapshot = decode("book", SNAPSHOT)
    assert isinstance(snapshot, BookSnapshot)
    assert snapshot.market == "BTCUSD" and snapshot.is_final
    assert snapshot.bids == [Level("19994.25", "0.7755"), Level("19993.75", "0.83676985")]
    assert snapshot.asks[1] == Level("19996", "1.135")
    assert decode("book", UPDATE) == BookUpdate(
        market="BTCUSD", side="BUY", price="19958.5", amount="0.62649999"
    )
    assert decode("stablecoin", PRICE) == StablecoinPrice(
        market="USDCUSD", price="1.0001", timestamp="2024-11-04T18:11:09.042391267Z"
    )


def test_str_payloads_decode_too() -> None:
    assert decode("book", UPDATE.decode()) == decode("book", UPDATE)


@pytest.mark.parametrize(
    ("fragment", "final"),
    [
        (',"final_snapshot":true', True),
        (',"final_snapshot":false', False),
        (',"final_snapshot":"true"', True),
        (',"final_snapshot":"false"', False),
        ("", True),
    ],
)
def test_final_snapshot_forms(fragment: str, final: bool) -> None:
    payload = '{"type":"SNAPSHOT","market":"ETHUSD","bids":[],"asks":[]' + fragment + "}"
    message = decode("book", payload)
    assert isinstance(message, BookSnapshot)
    assert message.is_final is final
    assert message.bids == [] and message.asks == []


def test_extra_fields_are_tolerated() -> None:
    payload = EXECUTION[:-1] + b',"type":"EXECUTION","taker_side":"BUY","n":1}'
    assert isinstance(decode("executions", payload), Execution)
    update = UPDATE[:-1] + b',"sequence":"12"}'
    assert isinstance(decode("book", update), BookUpdate)


@pytest.mark.parametrize("kind", ["executions", "book", "stablecoin"])
def test_error_frame_on_every_channel(kind: FeedKind) -> None:
    assert decode(kind, b'{"error":"Not Found"}') == ErrorFrame(error="Not Found")
    # An odd shape is still an error frame, with its JSON as the text.
    assert decode(kind, '{"error":{"code":404}}') == ErrorFrame(error='{"code":404}')


@pytest.mark.parametrize(
    ("kind", "payload", "needle"),
    [
        ("book", b'{"type":"UPDATE","market":"BTCUSD","side":"BUY","price":19958.5,"amount":"1"}',
         "$.price"),
        ("book", b'{"type":"UPDATE","market":"BTCUSD","side":"HOLD","price":"1","amount":"1"}',
         "$.side"),
        ("book", b'{"type":"UPDATE","market":"BTCUSD","side":"BUY","price":"1"}', "amount"),
        ("book", b'{"type":"TRADE","market":"BTCUSD"}', "$.type"),
        ("book", b'{"market":"BTCUSD","side":"BUY","price":"1","amount":"1"}', "type"),
        ("book", b'{"type":"SNAPSHOT","market":"B","bids":[{"price":"1"}],"asks":[]}',
         "$.bids[0]"),
        ("book", b'{"type":"SNAPSHOT","market":"B","bids":[],"asks":[],"final_snapshot":"yes"}',
         "final_snapshot"),
        ("book", b'{"type":"SNAPSHOT","market":"B","bids":{},"asks":[]}', "$.bids"),
        ("executions", EXECUTION[:-20], "truncated"),
        ("executions", EXECUTION.replace(b'"0.00000412"', b"4.12e-6"), "$.amount"),
        ("executions", EXECUTION.replace(b'"market":"BTCUSD",', b""), "market"),
        ("stablecoin", PRICE.replace(b'"1.0001"', b"null"), "$.price"),
        ("stablecoin", b"[]", "object"),
        ("stablecoin", b"", "truncated"),
        ("stablecoin", b"\xff\xfe{}", "malformed"),
        ("executions", UPDATE, "executed_at"),
    ],
)  # fmt: skip
def test_bad_frames_raise_one_error_type(kind: FeedKind, payload: bytes, needle: str) -> None:
    with pytest.raises(WireError) as info:
        decode(kind, payload)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{kind} frame: ")


def test_decoders_are_shared_per_kind() -> None:
    assert decoder_for("book") is decoder_for("book")
    assert decoder_for("book") is not decoder_for("executions")


def test_structs_encode_back_to_the_wire_format() -> None:
    # mirror-style encoding: the Structs are the Paxos format.
    update = decode("book", UPDATE)
    assert msgspec.json.decode(msgspec.json.encode(update)) == msgspec.json.decode(UPDATE)


@given(st.binary(max_size=200) | st.text(max_size=200))
@pytest.mark.parametrize("kind", ["executions", "book", "stablecoin"])
def test_garbage_only_ever_raises_wire_error(kind: FeedKind, payload: bytes | str) -> None:
    with contextlib.suppress(WireError):
        decode(kind, payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["type", "market", "side", "price", "amount", "bids", "asks", "error"]),
        json_values | st.sampled_from(["SNAPSHOT", "UPDATE", "BUY", "SELL"]),
    )
)
def test_arbitrary_json_objects_only_ever_raise_wire_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(WireError):
        decode("book", msgspec.json.encode(obj))
