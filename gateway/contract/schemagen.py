"""Generate ``schemas/`` from the msgspec types: the published downstream contract.

``python -m gateway.contract.schemagen`` writes ``schemas/downstream.schema.json`` (JSON
Schema 2020-12 of every message in both directions) and ``schemas/asyncapi.json`` (AsyncAPI
3.0: the endpoints and which messages flow on them, self-contained). ``--check`` writes nothing
and exits 1 if the files differ from what the code generates, so CI catches a type change
without a regenerate.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

from gateway import __version__
from gateway.contract import protocol
from gateway.contract.records import DIGITS_PATTERN, RECORD_TYPES, Record

__all__ = ["generate", "main"]

SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"
DOWNSTREAM: Final = "downstream.schema.json"
ASYNCAPI: Final = "asyncapi.json"

_SERVER_MESSAGES: Final[tuple[type, ...]] = (*RECORD_TYPES, *protocol.RESPONSE_TYPES)
_CLIENT_MESSAGES: Final[tuple[type, ...]] = protocol.REQUEST_TYPES

_MESSAGE_DOCS: Final[dict[str, str]] = {
    "Trade": "An execution (stream trades.MARKET).",
    "BookSnapshot": "A whole book; replaces what the client holds (stream book.MARKET).",
    "BookUpdate": "One level's new absolute size (stream book.MARKET).",
    "Price": "Stablecoin index price (stream price.MARKET).",
    "Status": "Upstream feed state, in status.FEED and in each data stream of the feed.",
}


def _components(ref_template: str) -> dict[str, Any]:
    """Every type's schema, plus the two unions ServerMessage and ClientRequest.

    Every object is closed (``additionalProperties: false``): the schema says exactly what this
    protocol version sends and accepts. The server-side types do not set msgspec's
    ``forbid_unknown_fields`` for that, because clients decode with them (gateway/client): a
    decoder built on them must keep accepting a newer gateway that adds a field.
    """
    (server, client), components = msgspec.json.schema_components(
        [Record | protocol.Response, protocol.Request], ref_template=ref_template
    )
    for schema in components.values():
        _clean_descriptions(schema)
        if schema.get("type") == "object":
            schema.setdefault("additionalProperties", False)
    components["ServerMessage"] = {
        "title": "ServerMessage",
        "description": "Everything the gateway sends on /v1 paths: records and answers.",
        **server,
    }
    components["ClientRequest"] = {
        "title": "ClientRequest",
        "description": "Everything a client may send on /v1 paths.",
        **client,
    }
    return components


def _clean_descriptions(node: Any) -> None:
    """Normalize every docstring-derived ``description`` with ``inspect.cleandoc``, in place.

    msgspec copies docstrings into the schema as they are until 0.22 and dedented from 0.23,
    so without this the committed files would depend on the installed msgspec, not only on
    our code. ``cleandoc`` is idempotent, so either input gives the same output.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = inspect.cleandoc(value)
            else:
                _clean_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            _clean_descriptions(item)


def downstream_schema() -> dict[str, Any]:
    components = _components("#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:paxos-gateway:downstream:v{protocol.PROTOCOL_VERSION}",
        "title": f"paxos-gateway subscriber protocol v{protocol.PROTOCOL_VERSION}",
        "description": (
            "Messages on the gateway's /v1 WebSocket paths, JSON or MessagePack "
            "(same structure). Decimals are canonical decimal strings; the epoch and times "
            "(nanoseconds since the Unix epoch) are strings of digits, so that every JSON "
            "parser reads every value exactly. See docs/protocol.md."
        ),
        "anyOf": [{"$ref": "#/$defs/ServerMessage"}, {"$ref": "#/$defs/ClientRequest"}],
        "$defs": components,
    }


def _asyncapi_discriminators(node: Any) -> None:
    """OpenAPI's ``discriminator`` object -> AsyncAPI 3.0's string (the property name), in place.

    msgspec writes ``{"propertyName": "type", "mapping": {...}}`` for tagged unions; an AsyncAPI
    3.0 Schema Object wants only the name (the mapping is implied by each member's ``const``).
    """
    if isinstance(node, dict):
        disc = node.get("discriminator")
        if isinstance(disc, dict):
            node["discriminator"] = disc["propertyName"]
        for value in node.values():
            _asyncapi_discriminators(value)
    elif isinstance(node, list):
        for item in node:
            _asyncapi_discriminators(item)


def asyncapi() -> dict[str, Any]:
    schemas = _components("#/components/schemas/{name}")
    _asyncapi_discriminators(schemas)
    messages: dict[str, Any] = {}
    for t in (*_SERVER_MESSAGES, *_CLIENT_MESSAGES):
        name = t.__name__
        doc = _MESSAGE_DOCS.get(name) or (t.__doc__ or name).strip().split("\n\n")[0]
        messages[name] = {
            "name": name,
            "title": name,
            "summary": " ".join(doc.split()),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }

    def refs(types: tuple[type, ...]) -> dict[str, Any]:
        return {t.__name__: {"$ref": f"#/components/messages/{t.__name__}"} for t in types}

    server_refs = refs(_SERVER_MESSAGES)
    client_refs = refs(_CLIENT_MESSAGES)
    encoding_property: dict[str, Any] = {
        "encoding": {
            "type": "string",
            "enum": ["json", "msgpack"],
            "default": "json",
            "description": "json: text frames; msgpack: binary frames (requests may be "
            "MessagePack in binary frames or JSON in text frames).",
        }
    }
    encoding = {"type": "object", "properties": encoding_property}
    shortcut_query = {
        "type": "object",
        "properties": {
            **encoding_property,
            "epoch": {
                "type": "string",
                "pattern": DIGITS_PATTERN,
                "description": "Resume: epoch of the last record held, as the gateway sent it.",
            },
            "seq": {
                "type": "string",
                "pattern": DIGITS_PATTERN,
                "description": "Resume: seq of the last record held.",
            },
        },
    }
    channels: dict[str, Any] = {
        "stream": {
            "address": "/v1/stream",
            "title": "Multiplexed stream endpoint",
            "description": (
                "Subscribe and unsubscribe with requests; every request is answered. The first "
                "message is hello."
            ),
            "messages": {**server_refs, **client_refs},
            "bindings": {"ws": {"query": encoding}},
        }
    }
    for kind, what in (
        ("book", "order book of a market (snapshot, then updates)"),
        ("trades", "executions of a market (last one, then new ones)"),
        ("price", "stablecoin price (last one, then new ones)"),
        ("status", "upstream state of a feed"),
    ):
        channels[f"{kind}Shortcut"] = {
            "address": f"/v1/{kind}/{{name}}",
            "title": f"/v1/{kind}/NAME shortcut",
            "description": (
                f"Like /v1/stream, subscribed at connect time to {kind}.NAME: the {what}. "
                "NAME may be * for all."
            ),
            "parameters": {"name": {"description": "Market (or feed) name, or *."}},
            "messages": {**server_refs, **client_refs},
            "bindings": {"ws": {"query": shortcut_query}},
        }
    operations: dict[str, Any] = {}
    for channel in channels:
        operations[f"{channel}Receive"] = {
            "action": "send",
            "title": "Records and answers from the gateway",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{t.__name__}"} for t in _SERVER_MESSAGES
            ],
        }
        operations[f"{channel}Request"] = {
            "action": "receive",
            "title": "Requests from the client",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{t.__name__}"} for t in _CLIENT_MESSAGES
            ],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "paxos-gateway subscriber API",
            "version": f"{protocol.PROTOCOL_VERSION}.0.0",
            "description": (
                f"Generated by gateway.schemagen (paxos-gateway {__version__}); do not edit. "
                "Mirror paths (/executiondata, /marketdata, /marketdata/stablecoin, each with an "
                "optional /MARKET) serve the Paxos feed format unchanged and are described by "
                "Paxos's own AsyncAPI document. Close codes: 1001 shutdown, 1009 request frame "
                "too big, 4008 slow subscriber, 4009 ping timeout; see docs/protocol.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:8765",
                "protocol": "ws",
                "description": "Default [server] host and port.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> content, exactly as written to ``schemas/``."""
    return {DOWNSTREAM: _dump(downstream_schema()), ASYNCAPI: _dump(asyncapi())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.contract.schemagen", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if schemas/ is stale")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, content in generate().items():
        path: Path = args.dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if args.check and stale:
        print(
            f"stale: {', '.join(stale)} in {args.dir}; run python -m gateway.contract.schemagen",
            file=sys.stderr,
        )
        return 1
    for name in stale:
        print(f"wrote {args.dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
