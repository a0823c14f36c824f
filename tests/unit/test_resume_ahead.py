from __future__ import annotations

import json
from decimal import Decimal

from gateway.contract.protocol import Encoding, ResumeFrom
from gateway.contract.records import Trade
from gateway.fanout.hub import Hub
from gateway.fanout.resume_ahead import ahead, resume_points

E1, E2 = "1700000000000000000", "1700000000000000001"


def hub_at(seq: int, epoch: str = E1) -> Hub:
    hub = Hub(epoch)
    hub.seed_stream("trades.BTCUSD", epoch, seq)
    return hub


def point(seq: int, epoch: str = E1) -> dict[str, ResumeFrom]:
    return {"trades.BTCUSD": ResumeFrom(epoch=epoch, seq=seq)}


def test_points_of_a_subscribe_frame_only() -> None:
    hub = Hub(E1)
    frame = {"op": "subscribe", "streams": ["trades.BTCUSD"],
             "resume": {"trades.BTCUSD": {"epoch": E1, "seq": 5}}}  # fmt: skip
    assert resume_points(hub, json.dumps(frame), Encoding.JSON) == point(5)
    assert resume_points(hub, json.dumps(frame).encode(), Encoding.JSON) == point(5)
    assert resume_points(hub, '{"op":"ping"}', Encoding.JSON) == {}
    assert resume_points(hub, '{"op":"subscribe","streams":["x.Y"]}', Encoding.JSON) == {}
    assert resume_points(hub, "resume garbage", Encoding.JSON) == {}


def test_ahead_when_unknown_behind_or_an_epoch_not_seen_yet() -> None:
    assert ahead(Hub(E1), point(1))  # the stream is not here yet
    hub = hub_at(10)
    assert ahead(hub, point(11))
    assert not ahead(hub, point(10))
    assert not ahead(hub, point(3))
    assert ahead(hub, point(1, E2))  # a newer epoch than this edge has seen
    assert not ahead(hub_at(10, E2), point(50, E1))  # an older epoch never comes back


def test_seed_stream_continues_without_a_break() -> None:
    hub = hub_at(10)
    trade = Trade(
        stream="trades.BTCUSD", seq=11, epoch=E1, receive_time="1", market="BTCUSD",
        price=Decimal(1), amount=Decimal(1), match_number="m", exchange_time="1",
    )  # fmt: skip
    hub.publish([trade])
    assert hub.head("trades.BTCUSD") == 11 and hub.stats.sequence_breaks == 0
    hub.seed_stream("trades.BTCUSD", E1, 99)  # history there: left alone
    assert hub.head("trades.BTCUSD") == 11
