"""Exact decimal numbers: parsing Paxos number strings and the canonical form.

Paxos sends every price and amount as a JSON string, sometimes padded
(``"9248.00"``), usually trimmed (``"19996"``). Both spell one value, and one
book level, so the gateway keeps one canonical ``Decimal`` per value: trailing
fractional zeros trimmed, exponent 0 or negative, never scientific notation.

One wrinkle: ``str(Decimal("0.00000001"))`` is ``"1E-8"`` (Python switches to
scientific notation below 1e-6 whatever the exponent), and msgspec encodes a
``Decimal`` with ``str``. Satoshi-sized amounts are ordinary here, so values
below 1e-6 are returned as ``FixedDecimal``, a ``Decimal`` whose ``str`` is
fixed-point. It equals and hashes like the plain value; msgspec refuses to
encode the subclass unless the encoder is given ``enc_hook`` from this module,
so a forgotten hook fails loudly instead of leaking ``"1E-8"`` downstream.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "DecimalError",
    "FixedDecimal",
    "ParseCache",
    "canonical",
    "enc_hook",
    "parse",
    "to_str",
]

# Generous for any instrument (Paxos: prices to the tick, amounts to 8
# decimals) yet bounded, so a garbled value cannot make huge objects and sums
# of two values stay well inside what a consumer's decimal type can hold.
MAX_INTEGER_DIGITS = 18
MAX_FRACTION_DIGITS = 18
# Longest input looked at before trimming; padded zeros can make a legal value long.
_MAX_TEXT = 64


class DecimalError(ValueError):
    """A string or value that is not an acceptable exact decimal."""


class FixedDecimal(Decimal):
    """A ``Decimal`` below 1e-6 that prints fixed-point (see the module docstring)."""

    __slots__ = ()

    def __str__(self) -> str:
        return format(self, "f")

    def __repr__(self) -> str:
        return f"Decimal('{format(self, 'f')}')"


def to_str(value: Decimal) -> str:
    """The canonical text of a canonical value: fixed-point, never an exponent."""
    return format(value, "f")


def enc_hook(obj: object) -> object:
    """msgspec ``enc_hook`` that encodes ``FixedDecimal`` (and any Decimal subclass)."""
    if isinstance(obj, Decimal):
        return format(obj, "f")
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


def parse(text: str) -> Decimal:
    """Parse a non-negative decimal string exactly into its canonical ``Decimal``.

    Accepts ``DIGITS`` or ``DIGITS.DIGITS`` (ASCII only). Rejects signs,
    exponents, whitespace, underscores, ``NaN``/``Infinity`` (all of which
    ``Decimal()`` itself would accept), more than ``MAX_INTEGER_DIGITS``
    integer digits (leading zeros count) and more than ``MAX_FRACTION_DIGITS``
    fractional digits once trailing zeros are trimmed.
    """
    # Hot path (every price and amount of every message): only str methods
    # implemented in C before the one Decimal() call; the error branch below
    # works out what exactly was wrong.
    if text.isascii():
        if text.isdigit():
            if len(text) <= MAX_INTEGER_DIGITS:
                return Decimal(text)
        elif (
            0 < (dot := text.find(".")) <= MAX_INTEGER_DIGITS
            and len(text) <= _MAX_TEXT
            and text[-1] != "."
            and text.replace(".", "", 1).isdigit()
        ):
            trimmed = text.rstrip("0")
            if trimmed[-1] == ".":
                return Decimal(trimmed[:-1])
            if len(trimmed) - dot - 1 <= MAX_FRACTION_DIGITS:
                value = Decimal(trimmed)
                if text[0] == "0" and value.adjusted() < -6:
                    return FixedDecimal(value)
                return value
    raise _parse_error(text)


def _parse_error(text: str) -> DecimalError:
    shown = repr(text[:_MAX_TEXT]) + ("..." if len(text) > _MAX_TEXT else "")
    integer, dot, fraction = text.partition(".")
    if not (text.isascii() and integer.isdigit() and (not dot or fraction.isdigit())):
        return DecimalError(f"not a non-negative decimal number: {shown}")
    if len(text) > _MAX_TEXT:
        return DecimalError(f"decimal number longer than {_MAX_TEXT} characters: {shown}")
    if len(integer) > MAX_INTEGER_DIGITS:
        return DecimalError(f"too many integer digits (max {MAX_INTEGER_DIGITS}): {shown}")
    return DecimalError(f"too many fractional digits (max {MAX_FRACTION_DIGITS}): {shown}")


def canonical(value: Decimal) -> Decimal:
    """The canonical form of any finite ``Decimal``, exactly (no context rounding).

    ``Decimal("19958.0") -> 19958``, ``Decimal("1E+2") -> 100``, ``-0 -> 0``.
    """
    if not value.is_finite():
        raise DecimalError(f"not a finite number: {value!r}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, so never 'n'/'N'/'F'
    if not any(digits):
        return Decimal(0)
    if exponent > 0:
        digits = digits + (0,) * exponent
        exponent = 0
    else:
        strip = 0
        while strip < -exponent and digits[len(digits) - 1 - strip] == 0:
            strip += 1
        if strip:
            digits = digits[: len(digits) - strip]
            exponent += strip
    result = Decimal((sign, digits, exponent))
    if result.adjusted() < -6:
        return FixedDecimal(result)
    return result


class ParseCache:
    """``parse`` memoized for strings that repeat, such as a book's price levels.

    Bounded: when full it is simply cleared, which keeps every operation O(1)
    and costs one re-parse per live level afterwards. Only successful parses
    are stored, so bad input is re-checked (and re-reported) every time.
    """

    __slots__ = ("_capacity", "_values")

    def __init__(self, capacity: int = 16384) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._values: dict[str, Decimal] = {}

    def parse(self, text: str) -> Decimal:
        value = self._values.get(text)
        if value is None:
            value = parse(text)
            if len(self._values) >= self._capacity:
                self._values.clear()
            self._values[text] = value
        return value

    def __len__(self) -> int:
        return len(self._values)
