"""RFC 3339 timestamps <-> integer nanoseconds since the Unix epoch, exactly.

Paxos formats times with trailing fractional zeros trimmed, so a feed's
timestamps carry anywhere from 0 to 9 fractional digits ("...:09Z",
"...:53.386Z", "...:52.05566422Z"). Parsing goes through integers only: a
float has 15-16 significant digits, and nanoseconds since 1970 need 19.

Consecutive messages nearly always share their "YYYY-MM-DDTHH:MM:SS" part, so
its conversion to epoch seconds is memoized; the per-message work is then a
dict lookup and one ``int()`` of the fraction.
"""

from __future__ import annotations

from datetime import date

__all__ = ["TimestampError", "format_ns", "parse_ns"]

_NS = 1_000_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Multiplier turning k fractional digits into nanoseconds, indexed by k.
_SCALE: tuple[int, ...] = tuple(10 ** (9 - k) for k in range(10))
# "YYYY-MM-DDTHH:MM:SS" + "." + 9 digits + "+HH:MM"
_MAX_LEN = 19 + 1 + 9 + 6
_CACHE_CAPACITY = 4096
_seconds_cache: dict[str, int] = {}


class TimestampError(ValueError):
    """Not an RFC 3339 timestamp this gateway accepts."""


def parse_ns(text: str) -> int:
    """``"2024-11-04T18:11:09.042391267Z"`` -> nanoseconds since 1970-01-01T00:00:00Z.

    Accepts 0-9 fractional digits, ``Z``/``z`` or a numeric offset (``+00:00``
    is what non-Paxos producers write for UTC; other offsets are converted).
    A leap second (``23:59:60``) maps to the first instant of the next day,
    as POSIX time does.
    """
    n = len(text)
    if n < 20 or n > _MAX_LEN or not text.isascii():
        raise TimestampError(f"not an RFC 3339 timestamp: {text[: _MAX_LEN + 1]!r}")
    prefix = text[:19]
    seconds = _seconds_cache.get(prefix)
    if seconds is None:
        seconds = _civil_seconds(prefix, text)
        if len(_seconds_cache) >= _CACHE_CAPACITY:
            _seconds_cache.clear()
        _seconds_cache[prefix] = seconds
    last = text[n - 1]
    if last == "Z" or last == "z":
        end = n - 1
    else:
        end = n - 6
        if end < 19:
            raise TimestampError(f"timestamp lacks a time zone ('Z' or +HH:MM): {text!r}")
        seconds -= _offset_seconds(text, end)
    if end == 19:
        return seconds * _NS
    digits = text[20:end]
    k = len(digits)
    if text[19] != "." or k == 0 or k > 9 or not digits.isdigit():
        raise TimestampError(f"bad fractional seconds or time zone in timestamp: {text!r}")
    return seconds * _NS + int(digits) * _SCALE[k]


def _civil_seconds(prefix: str, text: str) -> int:
    if (
        prefix[4] != "-"
        or prefix[7] != "-"
        or prefix[10] not in "Tt"
        or prefix[13] != ":"
        or prefix[16] != ":"
    ):
        raise TimestampError(f"not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS...): {text!r}")
    fields = (prefix[0:4], prefix[5:7], prefix[8:10], prefix[11:13], prefix[14:16], prefix[17:19])
    if not all(f.isdigit() for f in fields):
        raise TimestampError(f"non-digit in date or time of timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(f) for f in fields)
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise TimestampError(f"invalid date in timestamp {text!r}: {exc}") from None
    leap_second = second == 60 and hour == 23 and minute == 59
    if hour > 23 or minute > 59 or (second > 59 and not leap_second):
        raise TimestampError(f"invalid time of day in timestamp: {text!r}")
    return days * 86400 + hour * 3600 + minute * 60 + second


def _offset_seconds(text: str, start: int) -> int:
    sign = text[start]
    hours, minutes = text[start + 1 : start + 3], text[start + 4 : start + 6]
    if (
        sign not in "+-"
        or text[start + 3] != ":"
        or not hours.isdigit()
        or not minutes.isdigit()
        or int(hours) > 23
        or int(minutes) > 59
    ):
        raise TimestampError(f"bad time zone in timestamp (want 'Z' or +HH:MM): {text!r}")
    offset = int(hours) * 3600 + int(minutes) * 60
    return offset if sign == "+" else -offset


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch -> RFC 3339 UTC, fraction trimmed the Paxos way.

    ``parse_ns(format_ns(t)) == t`` for every ``t`` from year 1 to 9999.
    """
    seconds, fraction = divmod(ns, _NS)
    days, second_of_day = divmod(seconds, 86400)
    day = date.fromordinal(_EPOCH_ORDINAL + days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    text = f"{day.year:04d}-{day.month:02d}-{day.day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"
