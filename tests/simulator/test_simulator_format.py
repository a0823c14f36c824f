"""SocketWriter formatting: numbers, timestamps and message text, exactly as PROTOCOL.md says."""

from __future__ import annotations

import calendar
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.simulator import formatting
from gateway.simulator.framing import text_frame
from tests.support.simulator_support import TIMESTAMP, TRIMMED, assert_compact_all_strings


@pytest.mark.parametrize(
    ("units", "scale", "trimmed", "padded"),
    [
        (1999600, 2, "19996", "19996.00"),
        (1999450, 2, "19994.5", "19994.50"),
        (0, 8, "0", "0.00000000"),
        (412, 8, "0.00000412", "0.00000412"),
        (77550000, 8, "0.7755", "0.77550000"),
        (924800, 2, "9248", "9248.00"),
        (10000, 4, "1", "1.0000"),
        (7, 0, "7", "7"),
    ],
)
def test_format_units_examples(units: int, scale: int, trimmed: str, padded: str) -> None:
    assert formatting.format_units(units, scale) == trimmed
    assert formatting.format_units(units, scale, pad=True) == padded


@given(st.integers(min_value=0, max_value=10**17), st.integers(min_value=0, max_value=8))
def test_format_units_is_exact_and_canonical(units: int, scale: int) -> None:
    trimmed = formatting.format_units(units, scale)
    padded = formatting.format_units(units, scale, pad=True)
    assert Decimal(trimmed) == Decimal(padded) == Decimal(units).scaleb(-scale)
    assert TRIMMED.match(trimmed), trimmed
    if scale:
        assert len(padded.split(".")[1]) == scale


def test_format_units_refuses_negative() -> None:
    with pytest.raises(ValueError):
        formatting.format_units(-1, 2)


def _ns_of(stamp: str) -> int:
    whole, _, frac = stamp.rstrip("Z").partition(".")
    dt = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(dt.timetuple()) * 10**9 + int((frac or "0").ljust(9, "0"))


@given(
    st.integers(min_value=0, max_value=4_102_444_800 * 10**9),
    st.integers(min_value=0, max_value=9),
)
def test_timestamp_trims_and_round_trips(ns: int, digits: int) -> None:
    stamp = formatting.TimestampFormatter().format(ns, digits)
    assert TIMESTAMP.match(stamp), stamp
    assert _ns_of(stamp) == formatting.truncate_ns(ns, digits)


def test_timestamp_examples() -> None:
    fmt = formatting.TimestampFormatter()
    base = calendar.timegm((2024, 11, 4, 18, 11, 9, 0, 0, 0)) * 10**9
    assert fmt.format(base + 42_391_267, 9) == "2024-11-04T18:11:09.042391267Z"
    assert fmt.format(base + 55_664_220, 9) == "2024-11-04T18:11:09.05566422Z"
    assert fmt.format(base + 386_000_000, 9) == "2024-11-04T18:11:09.386Z"
    assert fmt.format(base + 386_999_999, 3) == "2024-11-04T18:11:09.386Z"
    assert fmt.format(base, 9) == "2024-11-04T18:11:09Z"
    assert fmt.format(base + 999_999_999, 0) == "2024-11-04T18:11:09Z"
    # the cached prefix must follow the second
    assert fmt.format(base + 10**9, 9) == "2024-11-04T18:11:10Z"
    with pytest.raises(ValueError):
        fmt.format(base, 10)


def test_message_texts_match_the_documented_examples() -> None:
    assert (
        formatting.execution_text(
            "BTCUSD", "24228.75", "0.00000412", "2023-03-13T18:46:53.386Z", "6AJVAX7BTCH8"
        )
        == '{"market":"BTCUSD","price":"24228.75","amount":"0.00000412",'
        '"executed_at":"2023-03-13T18:46:53.386Z","match_number":"6AJVAX7BTCH8"}'
    )
    assert (
        formatting.update_text("BTCUSD", "SELL", "20115.25", "0")
        == '{"type":"UPDATE","market":"BTCUSD","side":"SELL","price":"20115.25","amount":"0"}'
    )
    assert (
        formatting.price_text("USDCUSD", "1.0001", "2024-11-04T18:11:09.042391267Z")
        == '{"market":"USDCUSD","price":"1.0001","timestamp":"2024-11-04T18:11:09.042391267Z"}'
    )
    snapshot = formatting.snapshot_text(
        "BTCUSD",
        [("19994.25", "0.7755"), ("19993.75", "0.83676985")],
        [("19994.5", "0.97548541"), ("19996", "1.135")],
        final=True,
        style="bool",
    )
    assert snapshot == (
        '{"type":"SNAPSHOT","market":"BTCUSD","bids":[{"price":"19994.25","amount":"0.7755"},'
        '{"price":"19993.75","amount":"0.83676985"}],"asks":[{"price":"19994.5","amount":'
        '"0.97548541"},{"price":"19996","amount":"1.135"}],"final_snapshot":true}'
    )


@pytest.mark.parametrize(
    ("style", "final", "tail"),
    [
        ("bool", True, ',"final_snapshot":true}'),
        ("bool", False, ',"final_snapshot":false}'),
        ("string", True, ',"final_snapshot":"true"}'),
        ("string", False, ',"final_snapshot":"false"}'),
        ("missing", True, '"asks":[]}'),
        ("missing", False, ',"final_snapshot":false}'),  # a fragment must say it is not last
    ],
)
def test_snapshot_final_flag_styles(
    style: formatting.FinalSnapshotStyle, final: bool, tail: str
) -> None:
    text = formatting.snapshot_text("ETHUSD", [], [], final=final, style=style)
    assert text.endswith(tail)
    assert_compact_all_strings(text)


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_header(size: int, header: bytes) -> None:
    frame = text_frame("x" * size)
    assert frame == header + b"x" * size


def test_text_frame_counts_utf8_bytes() -> None:
    assert text_frame("é") == b"\x81\x02\xc3\xa9"
