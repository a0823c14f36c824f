"""Real frames from a real gateway: the simulator and the gateway run in-process, subscribers
connect over 127.0.0.1 and keep every frame exactly as it arrived (text frames unparsed, so a
JavaScript parser can read the very bytes a browser would).

Shared by the schema check (``tests/deploy/test_schemas.py``) and the JavaScript check
(``tests/e2e/test_javascript.py``). Every wait is bounded by ``TIMEOUT`` and ends on a message,
never on elapsed time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.support.metrics_traffic import TIMEOUT, Running, wait_ready

RECORD_TYPES = frozenset({"trade", "book_snapshot", "book_update", "price", "status"})
ANSWER_TYPES = frozenset(
    {"hello", "subscribed", "unsubscribed", "resumed", "resume_failed", "pong", "streams", "error"}
)


@dataclass
class Captured:
    json_frames: list[str] = field(default_factory=list)
    """Every text frame of the JSON connections, as received."""
    msgpack_messages: list[Any] = field(default_factory=list)
    """Every binary frame of a ``?encoding=msgpack`` connection, decoded."""
    requests: list[str] = field(default_factory=list)
    """Every request sent (all valid but one), as sent."""

    def json_messages(self) -> list[Any]:
        return [json.loads(frame) for frame in self.json_frames]


class _Reader:
    def __init__(self, ws: WebSocketConnection, out: Captured, msgpack: bool = False) -> None:
        self.ws, self.out, self.msgpack = ws, out, msgpack
        self.messages: list[dict[str, Any]] = []

    async def send(self, request: str) -> None:
        self.out.requests.append(request)
        await self.ws.send_message(request)

    async def until(self, what: str, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        try:
            with trio.fail_after(TIMEOUT):
                while not done(self.messages):
                    frame = await self.ws.get_message()
                    if self.msgpack:
                        assert isinstance(frame, bytes), frame
                        message = msgspec.msgpack.decode(frame)
                        self.out.msgpack_messages.append(message)
                    else:
                        assert isinstance(frame, str), frame
                        self.out.json_frames.append(frame)
                        message = json.loads(frame)
                    self.messages.append(message)
        except trio.TooSlowError:
            seen = sorted({str(m.get("type")) for m in self.messages})
            raise AssertionError(f"never got {what}; types seen: {seen}") from None


def _types(messages: list[dict[str, Any]]) -> set[str]:
    return {str(m.get("type")) for m in messages}


def _has_all_record_types(messages: list[dict[str, Any]]) -> bool:
    return _types(messages) >= RECORD_TYPES


async def capture(r: Running) -> Captured:
    """Records of every type and every kind of answer, in both encodings, from ``r``."""
    gw = r.gateway
    await wait_ready(gw)
    out = Captured()
    url = gw.subscriber_url
    async with open_websocket_url(url + "/v1/stream") as ws:
        a = _Reader(ws, out)
        await a.until("hello", lambda ms: "hello" in _types(ms))
        await a.send('{"op":"subscribe","id":1,"streams":["*.*"]}')
        await a.until("every record type", _has_all_record_types)
        await a.send('{"op":"ping","id":"p"}')
        await a.send('{"op":"list","id":2}')
        await a.send('{"op":"nonsense","id":3}')
        await a.send('{"op":"unsubscribe","id":4,"streams":["*.*"]}')
        await a.until(
            "the answers", lambda ms: {"pong", "streams", "error", "unsubscribed"} <= _types(ms)
        )
        book = [m for m in a.messages if m.get("stream") == "book.BTCUSD" and "seq" in m]
        held = book[-1]
    async with open_websocket_url(url + "/v1/stream") as ws:
        b = _Reader(ws, out)
        resume = {
            "book.BTCUSD": {"epoch": held["epoch"], "seq": held["seq"]},
            "trades.BTCUSD": {"epoch": "1", "seq": 1},
        }
        await b.send(
            json.dumps(
                {"op": "subscribe", "id": 5, "streams": list(resume), "resume": resume},
                separators=(",", ":"),
            )
        )
        await b.until(
            "resumed and resume_failed", lambda ms: {"resumed", "resume_failed"} <= _types(ms)
        )
    async with open_websocket_url(url + "/v1/stream?encoding=msgpack") as ws:
        c = _Reader(ws, out, msgpack=True)
        await c.send('{"op":"subscribe","id":1,"streams":["*.*"]}')
        await c.until("every record type in MessagePack", _has_all_record_types)
    return out
