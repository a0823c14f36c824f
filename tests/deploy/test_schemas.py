"""schemas/ is generated from the msgspec types and must be current and truthful."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from gateway.contract import schemagen
from gateway.contract.protocol import Encoding
from gateway.contract.records import DECIMAL_PATTERN, DIGITS_PATTERN, JS_SAFE_MAX
from gateway.fanout.hub import Hub
from gateway.ingest import decimals
from tests.support.fake_feed import EPOCH, FakeFeed
from tests.support.metrics_traffic import running_gateway
from tests.support.wire_capture import ANSWER_TYPES, RECORD_TYPES, capture

ASYNCAPI_SPEC = Path(__file__).parent / "asyncapi" / "3.0.0.json"


def _downstream_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((schemagen.SCHEMA_DIR / schemagen.DOWNSTREAM).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, message: Any) -> list[str]:
    return [e.message for e in validator.iter_errors(message)]


def test_schema_files_are_current() -> None:
    for name, content in schemagen.generate().items():
        path = schemagen.SCHEMA_DIR / name
        assert path.exists(), f"{path} missing: run python -m gateway.contract.schemagen"
        assert path.read_text(encoding="utf-8") == content, (
            f"{path} is stale: run python -m gateway.contract.schemagen"
        )


def test_descriptions_do_not_depend_on_how_msgspec_copies_docstrings() -> None:
    """msgspec 0.22 copies docstrings indented, 0.23 dedented: both must give one file."""
    indented = {"A": {"description": "First line.\n\n    More, indented.\n    ", "x": [{}]}}
    dedented = {"A": {"description": "First line.\n\nMore, indented.", "x": [{}]}}
    nested = {"B": {"properties": {"p": {"description": "p.\n    deeper\n    "}}}}
    for schema in (indented, dedented, nested):
        schemagen._clean_descriptions(schema)
    assert indented == dedented
    assert nested["B"]["properties"]["p"]["description"] == "p.\ndeeper"


def test_check_mode_detects_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert schemagen.main(["--dir", str(tmp_path)]) == 0
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / schemagen.ASYNCAPI).write_text("{}\n", encoding="utf-8")
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 1


def _wire_messages() -> list[Any]:
    """Real messages from a hub, in JSON: records of every type and every kind of answer."""
    hub = Hub(EPOCH, history=2)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.update(), feed.trade(), feed.price())
    feed.publish(*feed.status("disconnected", ("book", "trades")))
    sub = hub.connect(Encoding.JSON)
    requests = [
        '{"op":"subscribe","id":2,"streams":["book.*"],"resume":{"book.BTCUSD":{"epoch":"1","seq":1}}}',
        '{"op":"subscribe","id":1,"streams":["*.BTCUSD"]}',
        '{"op":"unsubscribe","id":"u","streams":["*.BTCUSD"]}',
        '{"op":"subscribe","streams":["trades.BTCUSD"],"resume":{"trades.BTCUSD":'
        f'{{"epoch":"{EPOCH}","seq":1}}}}}}',
        '{"op":"ping"}',
        '{"op":"list"}',
        "garbage",
    ]
    for r in requests:
        hub.receive(sub, r)
        feed.publish(feed.update())
    messages = [json.loads(p) for p in sub.take(10**9)]
    return messages + [json.loads(r) for r in requests[:-1]]


def test_real_messages_validate_against_the_published_schema() -> None:
    validator = _downstream_validator()
    messages = _wire_messages()
    types = {m.get("type") or m.get("op") for m in messages}
    assert types >= {
        "hello", "subscribed", "unsubscribed", "resumed", "resume_failed", "pong", "streams",
        "error", "book_snapshot", "book_update", "trade", "price", "status",
        "subscribe", "unsubscribe", "ping", "list",
    }  # fmt: skip
    for message in messages:
        errors = list(validator.iter_errors(message))
        assert errors == [], (message, errors[0].message)
    # And the schema is not vacuous: a wrong type is rejected.
    bad = dict(next(m for m in messages if m.get("type") == "trade"), seq="1")
    assert list(validator.iter_errors(bad))


async def test_a_real_gateways_output_validates_in_both_encodings() -> None:
    """Frames from a real gateway fed by the simulator, over real sockets: every record and
    answer of a JSON and of a MessagePack connection, and the requests sent, validate."""
    async with running_gateway() as r:
        captured = await capture(r)
    validator = _downstream_validator()
    json_messages = captured.json_messages()
    for messages in (json_messages, captured.msgpack_messages):
        assert {m["type"] for m in messages} >= RECORD_TYPES
        for message in messages:
            assert _errors(validator, message) == [], message
    assert {m["type"] for m in json_messages} >= RECORD_TYPES | ANSWER_TYPES
    for request in captured.requests:
        parsed = json.loads(request)
        expected_valid = parsed["op"] != "nonsense"
        assert (_errors(validator, parsed) == []) is expected_valid, parsed


def _valid_samples() -> dict[str, dict[str, Any]]:
    e, t = EPOCH, "1732500000123456789"
    base = {"stream": "trades.BTCUSD", "seq": 7, "epoch": e, "receive_time": t}
    return {
        "trade": {"type": "trade", **base, "market": "BTCUSD", "price": "64998.75",
                  "amount": "0.00000001", "match_number": "M1", "exchange_time": t},
        "book_snapshot": {"type": "book_snapshot", **base, "stream": "book.BTCUSD",
                          "market": "BTCUSD", "bids": [["64998.75", "1.5"]],
                          "asks": [["65000", "0.1"]], "resync": False, "reason": "initial"},
        "book_update": {"type": "book_update", **base, "stream": "book.BTCUSD",
                        "market": "BTCUSD", "side": "bid", "price": "100", "amount": "0"},
        "price": {"type": "price", **base, "stream": "price.USDCUSD", "market": "USDCUSD",
                  "price": "1", "exchange_time": t},
        "hello": {"type": "hello", "version": 2, "server": "paxos-gateway/x", "epoch": e,
                  "encoding": "json", "max_request_bytes": 65536, "max_subscriptions": 1000,
                  "buffer_bytes": 4194304, "slow_policy": "conflate"},
        "subscribed": {"type": "subscribed", "id": 1, "streams": [
            {"stream": "book.BTCUSD", "epoch": e, "seq": 0}], "patterns": []},
        "resumed": {"type": "resumed", "stream": "book.BTCUSD", "epoch": e, "from_seq": 5,
                    "to_seq": 4},
        "subscribe": {"op": "subscribe", "id": 2, "streams": ["book.BTCUSD"],
                      "resume": {"book.BTCUSD": {"epoch": e, "seq": 4}}},
    }  # fmt: skip


# (message type, JSON pointer-ish path, wrong value): each is something the gateway never sends.
WRONG: list[tuple[str, tuple[str | int, ...], Any]] = [
    ("trade", ("price",), "abc"),
    ("trade", ("price",), "1E-8"),
    ("trade", ("price",), "1e-8"),
    ("trade", ("price",), "+1"),
    ("trade", ("price",), "-1"),
    ("trade", ("price",), "01.5"),
    ("trade", ("price",), "1.50"),
    ("trade", ("price",), "1."),
    ("trade", ("price",), ".5"),
    ("trade", ("price",), " 1"),
    ("trade", ("price",), "1" * 19),
    ("trade", ("amount",), "0." + "0" * 18 + "1"),
    ("trade", ("price",), 1.5),
    ("book_snapshot", ("bids", 0, 0), "NaN"),
    ("book_snapshot", ("asks", 0, 1), "Infinity"),
    ("book_update", ("amount",), "0.0"),
    ("trade", ("seq",), -5),
    ("trade", ("seq",), 0),
    ("trade", ("seq",), 2**53),
    ("trade", ("seq",), "1"),
    ("trade", ("epoch",), int(EPOCH)),
    ("trade", ("epoch",), "01"),
    ("trade", ("epoch",), "1.7e18"),
    ("trade", ("receive_time",), 1732500000123456789),
    ("trade", ("exchange_time",), "-1"),
    ("price", ("exchange_time",), ""),
    ("trade", ("extra",), "unknown field"),
    ("book_snapshot", ("extra",), 1),
    ("hello", ("epoch",), 1795582622048325592),
    ("hello", ("extra",), True),
    ("hello", ("buffer_bytes",), -1),
    ("subscribed", ("streams", 0, "seq"), -1),
    ("subscribed", ("streams", 0, "epoch"), 5),
    ("subscribed", ("streams", 0, "extra"), 5),
    ("resumed", ("from_seq",), 0),
    ("subscribe", ("resume", "book.BTCUSD", "epoch"), "abc"),
    ("subscribe", ("resume", "book.BTCUSD", "seq"), -1),
    ("subscribe", ("extra",), 1),
]


def test_every_sample_is_valid_so_the_rejections_below_mean_something() -> None:
    validator = _downstream_validator()
    for name, message in _valid_samples().items():
        assert _errors(validator, message) == [], name


@pytest.mark.parametrize(("kind", "path", "value"), WRONG)
def test_wrong_records_are_rejected(kind: str, path: tuple[str | int, ...], value: Any) -> None:
    message = copy.deepcopy(_valid_samples()[kind])
    node: Any = message
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert _errors(_downstream_validator(), message), message


def test_the_patterns_are_the_canonical_forms_the_gateway_writes() -> None:
    decimal_re, digits_re = re.compile(DECIMAL_PATTERN), re.compile(DIGITS_PATTERN)
    # The decimal pattern admits exactly what ingest/decimals.py produces and no more digits.
    big = "9" * decimals.MAX_INTEGER_DIGITS + "." + "9" * decimals.MAX_FRACTION_DIGITS
    for text in ("0", "19958", "19958.0", "9248.00", "0.00000001", "0.10", big, "007"):
        written = decimals.to_str(decimals.parse(text))
        assert decimal_re.fullmatch(written), (text, written)
    for value in (Decimal("1E+2"), Decimal("-0"), Decimal("1.000"), Decimal("1E-8")):
        written = decimals.to_str(decimals.canonical(value))
        assert decimal_re.fullmatch(written), (value, written)
    assert not decimal_re.fullmatch("1" * (decimals.MAX_INTEGER_DIGITS + 1))
    assert not decimal_re.fullmatch("0." + "1" * (decimals.MAX_FRACTION_DIGITS + 1))
    for n in (0, 1, 2**53 + 1, 1795582622048325592, 2**63 - 1, 2**64 - 1):
        assert digits_re.fullmatch(str(n))
    assert JS_SAFE_MAX == 2**53 - 1


def _offline_registry() -> Registry[Any]:
    """AsyncAPI's schema refers to JSON Schema draft-07's meta-schema by URL: serve it from
    jsonschema's own copy, and fail (not fetch) on anything else."""

    def refuse(uri: str) -> Resource[Any]:
        raise LookupError(f"not available offline: {uri}")

    meta = DRAFT7.create_resource(jsonschema.Draft7Validator.META_SCHEMA)
    return Registry(retrieve=refuse).with_resources(
        [("http://json-schema.org/draft-07/schema", meta),
         ("http://json-schema.org/draft-07/schema#", meta)]
    )  # fmt: skip


def _asyncapi_validator() -> jsonschema.Draft7Validator:
    spec = json.loads(ASYNCAPI_SPEC.read_text(encoding="utf-8"))
    assert spec["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(spec, registry=_offline_registry())


def test_asyncapi_document_is_valid_asyncapi_3_0_0() -> None:
    """Against AsyncAPI's published JSON Schema for 3.0.0 (tests/deploy/asyncapi/README.md)."""
    doc = json.loads((schemagen.SCHEMA_DIR / schemagen.ASYNCAPI).read_text())
    validator = _asyncapi_validator()
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []
    # Not vacuous: the OpenAPI-style discriminator object of protocol v1's document is refused.
    broken = copy.deepcopy(doc)
    broken["components"]["schemas"]["ServerMessage"]["discriminator"] = {"propertyName": "type"}
    assert list(validator.iter_errors(broken))


def test_asyncapi_document_is_self_contained() -> None:
    doc = json.loads((schemagen.SCHEMA_DIR / schemagen.ASYNCAPI).read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["stream"]["address"] == "/v1/stream"
    assert "/v1/book/{name}" in {c["address"] for c in doc["channels"].values()}

    def resolve(ref: str) -> Any:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def walk(node: Any) -> int:
        count = 0
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
                count += 1
            count += sum(walk(v) for v in node.values())
        elif isinstance(node, list):
            count += sum(walk(v) for v in node)
        return count

    assert walk(doc) > 50
