"""The client core (``gateway.client.ClientSession``) with hand-made gateway messages: late
joins, gaps, duplicates, resumes, epoch changes, conflation and garbage."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gateway.client import (
    BookChanged,
    ClientSession,
    Connected,
    Duplicate,
    EpochMismatch,
    Gap,
    ProtocolProblem,
    RecordReceived,
    RequestRefused,
    Resumed,
    ResumeFailed,
    Snapshot,
    StatusChanged,
)
from gateway.contract.protocol import Resumed as ResumedMsg
from gateway.contract.protocol import ResumeFailed as ResumeFailedMsg
from gateway.contract.protocol import Unsubscribed
from tests.support.gateway_messages import (
    BOOK,
    EPOCH,
    NEW_EPOCH,
    bids,
    feed,
    hello,
    joined,
    records,
    sent,
    snap,
    status,
    subscribed,
    trade,
    upd,
)


def test_late_join_builds_the_book_from_snapshot_and_updates() -> None:
    session = joined([BOOK], (BOOK, 10))
    events = feed(session, status(9), snap(10), upd(11), upd(12, "100", "0"))
    assert records(events) == [(BOOK, 9), (BOOK, 10), (BOOK, 11), (BOOK, 12)]
    kinds = [type(e) for e in events]
    assert kinds == [
        RecordReceived, StatusChanged, RecordReceived, Snapshot, BookChanged,
        RecordReceived, BookChanged, RecordReceived, BookChanged,
    ]  # fmt: skip
    assert bids(session) == [(Decimal("99"), Decimal("5"))]
    book = session.book(BOOK)
    assert book is not None and book.asks() == [(Decimal("101"), Decimal("0.00000001"))]
    assert session.positions() == {BOOK: (EPOCH, 12)}
    assert session.stats.gaps == 0 and session.stats.records == 4


def test_a_book_update_gap_is_reported_dropped_and_resubscribed_for_a_fresh_snapshot() -> None:
    session = joined([BOOK, "trades.*"], (BOOK, 10), ("trades.BTCUSD", 3))
    feed(session, snap(10), upd(11))
    events = feed(session, upd(13), upd(14))
    assert [e for e in events if isinstance(e, Gap)] == [Gap(BOOK, 12, 13)]
    assert records(events) == []  # nothing is applied on top of a hole
    assert session.book(BOOK) is None
    assert session.stats.gaps == 1
    assert sent(session) == [{"op": "unsubscribe", "id": "r2", "streams": [BOOK]}]
    # Records queued before the answer are still dropped; then a fresh subscription.
    feed(session, upd(15))
    feed(session, Unsubscribed(id="r2", streams=[BOOK], patterns=[]))
    assert sent(session) == [{"op": "subscribe", "id": "s3", "streams": [BOOK], "resume": None}]
    events = feed(session, subscribed((BOOK, 20), id="s3"), snap(20, price="98"), upd(21))
    assert records(events) == [(BOOK, 20), (BOOK, 21)]
    assert bids(session) == [(Decimal("99"), Decimal("5")), (Decimal("98"), Decimal("1"))]
    assert session.stats.gaps == 1


def test_a_gap_under_a_pattern_resumes_the_other_streams_exactly() -> None:
    session = joined(["trades.*"], ("trades.BTCUSD", 0), ("trades.ETHUSD", 0))
    feed(session, trade(1), trade(1, "trades.ETHUSD"), trade(2, "trades.ETHUSD"))
    events = feed(session, trade(3))
    assert [e for e in events if isinstance(e, Gap)] == [Gap("trades.BTCUSD", 2, 3)]
    assert sent(session) == [{"op": "unsubscribe", "id": "r2", "streams": ["trades.*"]}]
    feed(session, trade(3, "trades.ETHUSD"))  # still coming until the answer: applied
    feed(session, Unsubscribed(id="r2", streams=["trades.BTCUSD", "trades.ETHUSD"], patterns=[]))
    assert sent(session) == [
        {"op": "subscribe", "id": "s3", "streams": ["trades.*"],
         "resume": {"trades.ETHUSD": {"epoch": EPOCH, "seq": 3}}},
    ]  # fmt: skip
    events = feed(
        session,
        subscribed(("trades.BTCUSD", 5), ("trades.ETHUSD", 4), id="s3"),
        ResumedMsg(stream="trades.ETHUSD", epoch=EPOCH, from_seq=4, to_seq=4),
        trade(4, "trades.ETHUSD"),
        trade(5),  # the last value of the restarted stream
        trade(6),
    )
    assert records(events) == [("trades.ETHUSD", 4), ("trades.BTCUSD", 5), ("trades.BTCUSD", 6)]
    assert Resumed("trades.ETHUSD", 4, 4) in events


def test_without_gap_detection_this_would_pass_silently() -> None:
    """A trade stream that skips: the skipped record is a ``Gap``, the record after the hole
    is never delivered as if nothing happened, and the session asks for a fresh state."""
    session = joined(["trades.BTCUSD"], ("trades.BTCUSD", 0))
    events = feed(session, trade(1), trade(2), trade(4))
    assert records(events) == [("trades.BTCUSD", 1), ("trades.BTCUSD", 2)]
    assert Gap("trades.BTCUSD", 3, 4) in events
    assert sent(session)[0]["op"] == "unsubscribe"


def test_duplicates_are_dropped_and_reported() -> None:
    session = joined(["trades.BTCUSD"], ("trades.BTCUSD", 0))
    events = feed(session, trade(1), trade(2), trade(2), trade(1), trade(3))
    assert records(events) == [("trades.BTCUSD", 1), ("trades.BTCUSD", 2), ("trades.BTCUSD", 3)]
    assert [e for e in events if isinstance(e, Duplicate)] == [
        Duplicate("trades.BTCUSD", 3, 2), Duplicate("trades.BTCUSD", 3, 1),
    ]  # fmt: skip
    assert session.data_to_send() == []  # a repeat loses nothing: no resubscription


def test_reconnect_resumes_every_stream_from_its_exact_position() -> None:
    session = joined([BOOK, "trades.*"], (BOOK, 10), ("trades.BTCUSD", 2))
    feed(session, snap(10), upd(11), trade(2), trade(3))
    session.connection_lost(None, "reset")
    session.connection_made()
    frames = session.data_to_send()
    # The epoch goes back digit for digit (no float on the way).
    assert f'"epoch":"{EPOCH}","seq":11' in frames[0]
    assert json.loads(frames[0])["resume"] == {
        BOOK: {"epoch": EPOCH, "seq": 11}, "trades.BTCUSD": {"epoch": EPOCH, "seq": 3},
    }  # fmt: skip
    events = feed(
        session,
        hello(),
        subscribed((BOOK, 13), ("trades.BTCUSD", 3), id="s2"),
        ResumedMsg(stream=BOOK, epoch=EPOCH, from_seq=12, to_seq=13),
        ResumedMsg(stream="trades.BTCUSD", epoch=EPOCH, from_seq=4, to_seq=3),
        upd(12),
        upd(13, "98", "3"),
        trade(4),
    )
    assert isinstance(events[0], Connected) and not events[0].epoch_changed
    assert records(events) == [(BOOK, 12), (BOOK, 13), ("trades.BTCUSD", 4)]
    assert bids(session)[-1] == (Decimal("98"), Decimal("3"))
    assert session.stats.resumes == 2 and session.stats.gaps == 0


def test_gateway_restart_fails_the_resume_and_rebuilds_the_book_from_the_new_snapshot() -> None:
    session = joined([BOOK, "trades.BTCUSD"], (BOOK, 10), ("trades.BTCUSD", 7))
    feed(session, snap(10), upd(11), trade(7))
    session.connection_lost(1001, "gateway shutting down, reconnect elsewhere")
    session.connection_made()
    session.data_to_send()
    events = feed(
        session,
        hello(NEW_EPOCH),
        subscribed((BOOK, 3), ("trades.BTCUSD", 1), epoch=NEW_EPOCH, id="s2"),
        ResumeFailedMsg(stream=BOOK, epoch=NEW_EPOCH, seq=3, reason="epoch_changed", message="m"),
        snap(3, "resume_failed", NEW_EPOCH, price="90"),
        upd(4, "90", "7", NEW_EPOCH),
        ResumeFailedMsg(
            stream="trades.BTCUSD", epoch=NEW_EPOCH, seq=1, reason="epoch_changed", message="m"
        ),
        trade(1, epoch=NEW_EPOCH),  # the last value: seq 1 of the new epoch is new to us
        trade(2, epoch=NEW_EPOCH),
    )
    assert isinstance(events[0], Connected) and events[0].epoch_changed
    failed = [e for e in events if isinstance(e, ResumeFailed)]
    assert [(f.stream, f.reason, f.epoch, f.seq) for f in failed] == [
        (BOOK, "epoch_changed", NEW_EPOCH, 3), ("trades.BTCUSD", "epoch_changed", NEW_EPOCH, 1),
    ]  # fmt: skip
    assert records(events) == [(BOOK, 3), (BOOK, 4), ("trades.BTCUSD", 1), ("trades.BTCUSD", 2)]
    assert bids(session) == [(Decimal("99"), Decimal("2")), (Decimal("90"), Decimal("7"))]
    assert session.positions()[BOOK] == (NEW_EPOCH, 4)
    assert session.stats.gaps == 0


def test_resume_failed_does_not_redeliver_the_last_value_already_held() -> None:
    session = joined(["trades.BTCUSD"], ("trades.BTCUSD", 0))
    feed(session, trade(1), trade(2))
    session.connection_lost(4008, "slow subscriber: buffer overflow")
    session.connection_made()
    session.data_to_send()
    events = feed(
        session,
        hello(),
        subscribed(("trades.BTCUSD", 9), id="s2"),
        ResumeFailedMsg(
            stream="trades.BTCUSD", epoch=EPOCH, seq=9, reason="history_exhausted", message="m"
        ),
        trade(2),  # an initial value we hold already
        trade(10),
    )
    assert records(events) == [("trades.BTCUSD", 10)]
    assert any(isinstance(e, ResumeFailed) and e.reason == "history_exhausted" for e in events)


def test_conflation_status_then_snapshot_is_not_a_gap() -> None:
    session = joined([BOOK], (BOOK, 10))
    feed(session, snap(10), upd(11))
    conflated = snap(40, "conflation", price="95")
    events = feed(session, status(30, state="resynced"), conflated, upd(41))
    assert records(events) == [(BOOK, 30), (BOOK, 40), (BOOK, 41)]
    assert Snapshot(BOOK, "conflation", True, conflated) in events
    assert session.stats.gaps == 0
    assert bids(session)[0] == (Decimal("99"), Decimal("5"))
    # A status ahead of the position that no snapshot follows is a gap.
    events = feed(session, status(50), upd(51))
    assert Gap(BOOK, 42, 50) in events
    assert records(events) == []


def test_a_snapshot_ahead_of_the_position_resets_it() -> None:
    session = joined([BOOK], (BOOK, 10))
    events = feed(session, snap(10), upd(11), snap(30, "reconnect"), upd(31))
    assert records(events)[-2:] == [(BOOK, 30), (BOOK, 31)]
    assert session.stats.gaps == 0


def test_a_record_of_another_epoch_mid_stream_is_a_mismatch() -> None:
    session = joined(["trades.BTCUSD"], ("trades.BTCUSD", 0))
    events = feed(session, trade(1), trade(2, epoch=NEW_EPOCH))
    assert EpochMismatch("trades.BTCUSD", EPOCH, NEW_EPOCH) in events
    assert records(events) == [("trades.BTCUSD", 1)]
    assert sent(session)[0]["op"] == "unsubscribe"


@pytest.mark.parametrize(
    "frame",
    [
        "not json", "[1, 2]", '{"type": "trade"}', '{"type": "from_the_future", "x": 1}',
        '{"type": "book_update", "stream": "book.BTCUSD", "seq": "x"}', b"\xc1", "", "{" * 5000,
    ],
)  # fmt: skip
def test_garbage_is_a_problem_event_never_an_exception(frame: str | bytes) -> None:
    session = joined([BOOK], (BOOK, 10))
    events = session.receive(frame)
    assert len(events) == 1 and isinstance(events[0], ProtocolProblem)
    assert session.stats.problems == 1
    assert records(feed(session, snap(10), upd(11))) == [(BOOK, 10), (BOOK, 11)]


def test_unknown_types_are_named() -> None:
    session = ClientSession()
    (event,) = session.receive('{"type": "from_the_future", "x": 1}')
    assert isinstance(event, ProtocolProblem) and "unknown message type" in event.detail


def test_an_update_that_cannot_apply_is_a_problem_and_resubscribes() -> None:
    session = joined([BOOK], (BOOK, 10))
    events = feed(session, snap(10), upd(11, amount="-1"))
    assert any(isinstance(e, ProtocolProblem) for e in events) or session.stats.problems == 1
    assert session.book(BOOK) is None
    assert sent(session)[0]["op"] == "unsubscribe"


def test_msgpack_frames() -> None:
    session = ClientSession([BOOK], encoding="msgpack")
    session.connection_made()
    events = feed(session, hello(), subscribed((BOOK, 10)), snap(10), upd(11), encoding="msgpack")
    assert records(events) == [(BOOK, 10), (BOOK, 11)]
    assert bids(session) == [(Decimal("100"), Decimal("1")), (Decimal("99"), Decimal("5"))]


def test_refused_resume_asks_for_a_new_connection() -> None:
    session = joined(["trades.BTCUSD"], ("trades.BTCUSD", 0))
    feed(session, trade(1))
    session.connection_lost(None, "")
    session.connection_made()
    assert sent(session)[0]["id"] == "s2"
    session.receive('{"type":"error","id":"s2","code":"bad_resume","message":"m"}')
    assert session.reconnect_wanted


def test_subscribe_and_unsubscribe_while_connected() -> None:
    session = joined(["trades.BTCUSD"], ("trades.BTCUSD", 0))
    session.subscribe(["price.*", "trades.BTCUSD"])
    session.unsubscribe(["trades.BTCUSD", "book.NOPE"])
    assert [(m["op"], m["streams"]) for m in sent(session)] == [
        ("subscribe", ["price.*"]), ("unsubscribe", ["trades.BTCUSD"]),
    ]  # fmt: skip
    assert session.subscriptions == ["price.*"]
    session.subscribe(["nope"])  # the gateway is the judge: its refusal says what is wrong
    assert sent(session)[0]["streams"] == ["nope"]
    (refused,) = session.receive('{"type":"error","id":"s4","code":"bad_stream","message":"m"}')
    assert refused == RequestRefused("s4", "bad_stream", "m")
