"""schemas/ is generated from the msgspec types and must be current and truthful."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.contract import schemagen
from gateway.contract.protocol import Encoding
from gateway.fanout.hub import Hub
from tests.support.fake_feed import EPOCH, FakeFeed


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
        '{"op":"subscribe","id":2,"streams":["book.*"],"resume":{"book.BTCUSD":{"epoch":1,"seq":1}}}',
        '{"op":"subscribe","id":1,"streams":["*.BTCUSD"]}',
        '{"op":"unsubscribe","id":"u","streams":["*.BTCUSD"]}',
        '{"op":"subscribe","streams":["trades.BTCUSD"],"resume":{"trades.BTCUSD":'
        f'{{"epoch":{EPOCH},"seq":1}}}}}}',
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
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((schemagen.SCHEMA_DIR / schemagen.DOWNSTREAM).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
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
