"""The payload an edge gets is the JSON body the hub sends a subscriber, byte for byte."""

from __future__ import annotations

from decimal import Decimal

from gateway.cluster.codec import decode_record, encode_record
from gateway.contract.records import BookSnapshot, Record, Trade
from gateway.fanout.hub import Encoding, OutFrame


def _records() -> list[Record]:
    trade = Trade(
        stream="trades.BTCUSD",
        seq=3,
        epoch="1795582622048325592",
        receive_time="1795582622048325999",
        market="BTCUSD",
        price=Decimal("64998.75"),
        amount=Decimal("0.15370106"),
        match_number="DRJ78JKWIDG8",
        exchange_time="1795582622048000000",
    )
    snapshot = BookSnapshot(
        stream="book.BTCUSD",
        seq=45,
        epoch="1795582622048325592",
        receive_time="1795582622048325999",
        market="BTCUSD",
        bids=[(Decimal("64998.75"), Decimal("0.1"))],
        asks=[(Decimal("65000"), Decimal("2"))],
        resync=True,
        reason="reconnect",
    )
    return [trade, snapshot]


def test_payload_is_the_hubs_json_and_round_trips() -> None:
    for record in _records():
        payload = encode_record(record)
        frame = OutFrame(message=record, stream=record.stream, seq=record.seq)
        assert payload.decode() == frame.payload(Encoding.JSON)
        again = decode_record(payload)
        assert again == record
        assert encode_record(again) == payload
