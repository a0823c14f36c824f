"""Gateway messages made by hand for the client core's tests: the contract's own types,
encoded as the gateway encodes them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from gateway.client import ClientSession, Event, RecordReceived
from gateway.contract.protocol import Hello, StreamState, Subscribed
from gateway.contract.records import BookSnapshot, BookUpdate, Level, Status, Trade
from gateway.ingest.decimals import enc_hook
from gateway.ingest.decimals import parse as dec

# Above 2**53 on purpose: a JavaScript double would round it; the client must not.
EPOCH = "1795582622048325593"
NEW_EPOCH = "1795582622048325594"
BOOK = "book.BTCUSD"


def wire(msg: Any, encoding: str = "json") -> str | bytes:
    if encoding == "msgpack":
        return msgspec.msgpack.encode(msg, enc_hook=enc_hook)
    return msgspec.json.encode(msg, enc_hook=enc_hook).decode()


def hello(epoch: str = EPOCH) -> Hello:
    return Hello(
        version=2, server="paxos-gateway/test", epoch=epoch, encoding="json",
        max_request_bytes=65536, max_subscriptions=1000, buffer_bytes=1 << 22,
        slow_policy="conflate",
    )  # fmt: skip


def subscribed(*heads: tuple[str, int], epoch: str = EPOCH, id: str | None = "s1") -> Subscribed:
    return Subscribed(
        id=id, streams=[StreamState(stream=s, epoch=epoch, seq=q) for s, q in heads], patterns=[]
    )


def levels(*pairs: tuple[str, str]) -> list[Level]:
    return [(dec(p), dec(a)) for p, a in pairs]


def snap(
    seq: int, reason: str = "subscribe", epoch: str = EPOCH, price: str = "100"
) -> BookSnapshot:
    return BookSnapshot(
        stream=BOOK, seq=seq, epoch=epoch, receive_time="1", market="BTCUSD",
        bids=levels((price, "1"), ("99", "2")), asks=levels(("101", "0.00000001")),
        resync=reason != "initial", reason=reason,
    )  # fmt: skip


def upd(seq: int, price: str = "99", amount: str = "5", epoch: str = EPOCH) -> BookUpdate:
    return BookUpdate(
        stream=BOOK, seq=seq, epoch=epoch, receive_time="1", market="BTCUSD", side="bid",
        price=dec(price), amount=Decimal(amount),
    )  # fmt: skip


def trade(seq: int, stream: str = "trades.BTCUSD", epoch: str = EPOCH) -> Trade:
    return Trade(
        stream=stream, seq=seq, epoch=epoch, receive_time="1", market=stream.partition(".")[2],
        price=dec("100.5"), amount=dec("0.1"), match_number=f"M{seq}", exchange_time="1",
    )  # fmt: skip


def status(seq: int, stream: str = BOOK, state: str = "connected") -> Status:
    return Status(
        stream=stream, seq=seq, epoch=EPOCH, receive_time="1", feed="marketdata",
        state=state, reason="test",  # type: ignore[arg-type]
    )  # fmt: skip


def feed(session: ClientSession, *messages: Any, encoding: str = "json") -> list[Event]:
    out: list[Event] = []
    for msg in messages:
        out += session.receive(wire(msg, encoding))
    return out


def records(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.record.stream, e.record.seq) for e in events if isinstance(e, RecordReceived)]


def sent(session: ClientSession) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in session.data_to_send()]


def joined(streams: list[str], *heads: tuple[str, int]) -> ClientSession:
    session = ClientSession(streams)
    session.connection_made()
    assert sent(session) == [{"op": "subscribe", "id": "s1", "streams": streams, "resume": None}]
    feed(session, hello(), subscribed(*heads))
    return session


def bids(session: ClientSession) -> list[Level]:
    book = session.book(BOOK)
    assert book is not None
    return book.bids()
