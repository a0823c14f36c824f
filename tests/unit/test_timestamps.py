from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest.timestamps import TimestampError, format_ns, parse_ns

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_ns(moment: datetime, nanos: int) -> int:
    """Whole seconds from datetime arithmetic (exact: timedelta is integral) plus nanos."""
    return (moment - EPOCH) // timedelta(seconds=1) * 1_000_000_000 + nanos


def whole_seconds(d: datetime) -> str:
    # strftime("%Y") does not zero-pad years below 1000 on every platform.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000000001Z", 1),
        ("2023-03-13T18:46:53.386Z", 1678733213_386000000),
        ("2024-11-04T18:11:09.042391267Z", 1730743869_042391267),
        ("2024-11-04T17:23:52.05566422Z", 1730741032_055664220),
        ("2024-11-04T17:23:52.05566422+00:00", 1730741032_055664220),
        ("2024-11-04T17:23:52.05566422-00:00", 1730741032_055664220),
        ("2024-11-04t17:23:52z", 1730741032_000000000),
        ("2024-11-04T19:23:52.5+02:00", 1730741032_500000000),
        ("2024-11-04T12:53:52-04:30", 1730741032_000000000),
        ("1969-12-31T23:59:59.999999999Z", -1),
        # A leap second is the first instant of the next day, as in POSIX time.
        ("2016-12-31T23:59:60Z", 1483228800_000000000),
        ("2016-12-31T23:59:60.5Z", 1483228800_500000000),
    ],
)
def test_parse(text: str, expected: int) -> None:
    assert parse_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "2024-11-04", "2024-11-04T17:23:52", "2024-11-04T17:23:52.123",
        "2024-11-04 17:23:52Z", "2024-11-04T17:23:52.Z", "2024-11-04T17:23:52.1234567890Z",
        "2024-13-04T17:23:52Z", "2024-02-30T17:23:52Z", "2024-11-04T24:00:00Z",
        "2024-11-04T17:60:00Z", "2024-11-04T17:23:60Z", "2024-11-04T17:23:52+0000",
        "2024-11-04T17:23:52+24:00", "2024-11-04T17:23:52+00:60", "2024-11-04T17:23:52*00:00",
        "2024-11-04T17:23:52.1a3Z", "2024-11-04T17:23:52.-1Z", "2024-11-04T17:23:52.+1Z",
        "2024-11-04T17:23:52 Z", "2024-11-04T17:23:5_Z", "+024-11-04T17:23:52Z",
        "2024-11-04T17:23:52.٣Z", "0000-01-01T00:00:00Z", "2024/11/04T17:23:52Z",
        "2024-11-04T17:23:52X", "2024-11-04T17:23:52.123456789+00:00x",
    ],
)  # fmt: skip
def test_parse_rejects(text: str) -> None:
    with pytest.raises(TimestampError):
        parse_ns(text)
    assert issubclass(TimestampError, ValueError)


def test_cached_prefix_does_not_mask_a_bad_suffix() -> None:
    assert parse_ns("2024-11-04T17:23:52.1Z") == 1730741032_100000000
    with pytest.raises(TimestampError):
        parse_ns("2024-11-04T17:23:52.1x")
    assert parse_ns("2024-11-04T17:23:52.25Z") == 1730741032_250000000


moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=0, tzinfo=UTC))


@given(moments, st.integers(0, 9), st.integers(0, 999_999_999), st.sampled_from(["Z", "+00:00"]))
def test_any_fraction_length_parses_exactly(
    moment: datetime, digits: int, nanos: int, zone: str
) -> None:
    fraction = str(nanos).zfill(9)[:digits]
    exact_nanos = int(fraction.ljust(9, "0")) if digits else 0
    text = whole_seconds(moment)
    if digits:
        text += "." + fraction
    text += zone
    assert parse_ns(text) == reference_ns(moment, exact_nanos)


@given(
    moments,
    st.integers(0, 999_999_999),
    st.integers(-23 * 60 - 59, 23 * 60 + 59).filter(lambda m: m != 0),
)
def test_offsets_are_converted(moment: datetime, nanos: int, offset_minutes: int) -> None:
    shifted = moment + timedelta(minutes=offset_minutes)
    if not datetime(1, 1, 1, tzinfo=UTC) <= shifted <= datetime(9999, 12, 31, tzinfo=UTC):
        return
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = whole_seconds(shifted) + f".{nanos:09d}{sign}{hours:02d}:{minutes:02d}"
    assert parse_ns(text) == reference_ns(moment, nanos)


@given(st.integers(min_value=-62135596800 * 10**9, max_value=253402300799 * 10**9 + 999_999_999))
def test_format_round_trips(ns: int) -> None:
    text = format_ns(ns)
    assert text.endswith("Z")
    assert parse_ns(text) == ns
    if "." in text:
        assert not text[:-1].endswith("0")


def test_format_matches_paxos_style() -> None:
    assert format_ns(1678733213_386000000) == "2023-03-13T18:46:53.386Z"
    assert format_ns(1730741032_055664220) == "2024-11-04T17:23:52.05566422Z"
    assert format_ns(0) == "1970-01-01T00:00:00Z"


@given(st.text(max_size=40))
def test_garbage_raises_only_timestamp_error(text: str) -> None:
    with contextlib.suppress(TimestampError):
        parse_ns(text)
