from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cluster import subjects
from gateway.cluster.subjects import RecordId, SubjectError


def test_subjects_of_a_gateway_stream() -> None:
    assert subjects.record_subject("book.BTCUSD") == "pgw.v1.rec.book.BTCUSD"
    assert subjects.checkpoint_subject("book.BTCUSD") == "pgw.v1.snap.book.BTCUSD"
    assert subjects.record_subject("status.marketdata-BTCUSD") == (
        "pgw.v1.rec.status.marketdata-BTCUSD"
    )
    assert subjects.stream_of_subject("pgw.v1.rec.trades.ETHUSD") == "trades.ETHUSD"
    assert subjects.stream_of_subject("pgw.v1.snap.book.ETHUSD") == "book.ETHUSD"


@pytest.mark.parametrize("bad", ["", "book", "book.", ".BTC", "book.*", "book.>", "book.BT C"])
def test_names_a_subject_cannot_carry_are_refused(bad: str) -> None:
    with pytest.raises(SubjectError):
        subjects.record_subject(bad)


def test_a_foreign_subject_is_refused() -> None:
    with pytest.raises(SubjectError):
        subjects.stream_of_subject("other.v1.rec.book.BTCUSD")


def test_message_id_is_derived_from_epoch_stream_seq() -> None:
    # protocol v1 has an int epoch, v2 a digit string: one id for both.
    assert subjects.message_id(1795582622048325592, "book.BTCUSD", 7) == (
        "1795582622048325592:book.BTCUSD:7"
    )
    assert subjects.message_id("1795582622048325592", "book.BTCUSD", 7) == (
        subjects.message_id(1795582622048325592, "book.BTCUSD", 7)
    )
    with pytest.raises(SubjectError):
        subjects.message_id(1, "book.BTCUSD", 0)
    with pytest.raises(SubjectError):
        subjects.message_id("-1", "book.BTCUSD", 1)


_streams = st.builds(
    lambda kind, market: f"{kind}.{market}",
    st.sampled_from(["book", "trades", "price", "status"]),
    st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True),
)


@given(epoch=st.integers(0, 2**63), stream=_streams, seq=st.integers(1, 2**53 - 1))
def test_message_id_round_trips(epoch: int, stream: str, seq: int) -> None:
    text = subjects.message_id(epoch, stream, seq)
    assert subjects.parse_message_id(text) == RecordId(str(epoch), stream, seq)


def test_headers_carry_the_id_and_the_fence() -> None:
    headers = subjects.publish_headers(5, "trades.BTCUSD", 9, 120)
    assert headers == {
        "Nats-Msg-Id": "5:trades.BTCUSD:9",
        "Pgw-Epoch": "5",
        "Pgw-Seq": "9",
        "Nats-Expected-Last-Subject-Sequence": "120",
    }
    assert "Nats-Expected-Last-Subject-Sequence" not in subjects.publish_headers(5, "a.b", 1, None)
    assert subjects.record_id_of_headers("pgw.v1.rec.trades.BTCUSD", headers) == RecordId(
        "5", "trades.BTCUSD", 9
    )


@pytest.mark.parametrize(
    "headers", [None, {}, {"Pgw-Epoch": "5"}, {"Pgw-Epoch": "5", "Pgw-Seq": "0"}]
)
def test_a_message_without_its_id_headers_is_refused(headers: dict[str, str] | None) -> None:
    with pytest.raises(SubjectError):
        subjects.record_id_of_headers("pgw.v1.rec.trades.BTCUSD", headers)


def test_own_write_needs_the_id_and_the_term() -> None:
    headers = subjects.publish_headers(5, "a.b", 9, 3, writer="ingest-0:12")
    assert subjects.is_own_write(headers, "5:a.b:9", "ingest-0:12")
    assert not subjects.is_own_write(headers, "5:a.b:9", "ingest-1:13")
    assert not subjects.is_own_write(headers, "5:a.b:8", "ingest-0:12")
    assert not subjects.is_own_write(None, "5:a.b:9", "ingest-0:12")
