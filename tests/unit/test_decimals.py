from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest import decimals
from gateway.ingest.decimals import DecimalError, FixedDecimal, ParseCache, canonical, parse, to_str


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19958.0", "19958"),
        ("19958", "19958"),
        ("9248.00", "9248"),
        ("19994.5", "19994.5"),
        ("0.00000412", "0.00000412"),
        ("0.00000001", "0.00000001"),
        ("0", "0"),
        ("0.000", "0"),
        ("000.0", "0"),
        ("007.50", "7.5"),
        ("1.0000", "1"),
        ("100", "100"),
        ("24228.75", "24228.75"),
    ],
)
def test_parse_canonical_text(text: str, expected: str) -> None:
    value = parse(text)
    assert value == Decimal(text)
    assert str(value) == expected
    assert to_str(value) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "-1", "+1", "1e5", "1E-8", "NaN", "nan", "Infinity", "inf", " 1", "1 ", "1_000",
        ".5", "5.", "1.2.3", "0x10", "١٢", "1,5", "--1", "1.-5", "½",
        "1" * 19, "0." + "1" * 19, "1" * 70,
    ],
)  # fmt: skip
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DecimalError):
        parse(text)
    assert issubclass(DecimalError, ValueError)


def test_precision_limits_count_after_trimming() -> None:
    assert parse("1" * 18) == Decimal("1" * 18)
    assert parse("0." + "1" * 18) == Decimal("0." + "1" * 18)
    # Padding beyond the limit is fine: the value itself is short.
    assert str(parse("1." + "0" * 40)) == "1"


def test_tiny_values_never_print_with_an_exponent() -> None:
    value = parse("0.00000001")
    assert isinstance(value, FixedDecimal)
    assert str(value) == "0.00000001"
    assert value == Decimal("1E-8")
    assert hash(value) == hash(Decimal("1E-8"))
    # Ordinary values stay plain Decimal: msgspec encodes them natively.
    assert type(parse("0.000001")) is Decimal
    assert type(parse("19958")) is Decimal


def test_enc_hook_encodes_fixed_decimals() -> None:
    values = [parse("0.00000001"), parse("1.5"), parse("0.00000412")]
    assert msgspec.json.encode(values, enc_hook=decimals.enc_hook) == (
        b'["0.00000001","1.5","0.00000412"]'
    )
    with pytest.raises(TypeError):
        msgspec.json.encode(values)  # a forgotten hook fails loudly
    with pytest.raises(NotImplementedError):
        decimals.enc_hook(object())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("19958.0"), "19958"),
        (Decimal("1E+2"), "100"),
        (Decimal("-0"), "0"),
        (Decimal("0E-8"), "0"),
        (Decimal("-1.50"), "-1.5"),
        (Decimal("1E-8"), "0.00000001"),
        (Decimal("123456789012345678901234567890.10"), "123456789012345678901234567890.1"),
    ],
)
def test_canonical(value: Decimal, expected: str) -> None:
    result = canonical(value)
    assert result == value
    assert str(result) == expected


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_canonical_rejects_non_finite(value: Decimal) -> None:
    with pytest.raises(DecimalError):
        canonical(value)


decimal_texts = st.builds(
    lambda i, f, pad: i + ("." + f + "0" * pad if f or pad else ""),
    st.text("0123456789", min_size=1, max_size=18),
    st.text("0123456789", max_size=18).map(lambda f: f.rstrip("0")),
    st.integers(0, 6),
)


@given(decimal_texts)
def test_parse_is_exact_and_canonical(text: str) -> None:
    value = parse(text)
    assert value == Decimal(text)
    out = str(value)
    assert "E" not in out and "e" not in out
    assert Decimal(out) == value
    assert parse(out) == value and str(parse(out)) == out  # idempotent
    if "." in out:
        assert not out.endswith("0") and not out.endswith(".")
    assert canonical(Decimal(text)) == value and str(canonical(Decimal(text))) == out


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_canonical_round_trips_any_finite_decimal(value: Decimal) -> None:
    result = canonical(value)
    assert result == value
    text = str(result)
    assert "E" not in text
    assert Decimal(text) == value


@given(st.text(max_size=30))
def test_parse_never_accepts_what_it_should_not(text: str) -> None:
    try:
        value = parse(text)
    except DecimalError:
        return
    assert text.replace(".", "", 1).isdigit() and text.isascii()
    assert value == Decimal(text) and value >= 0


def test_parse_cache_is_bounded_and_equivalent() -> None:
    cache = ParseCache(capacity=4)
    for i in range(10):
        assert cache.parse(f"{i}.50") == Decimal(f"{i}.5")
        assert len(cache) <= 4
    assert str(cache.parse("9.50")) == "9.5"
    with pytest.raises(DecimalError):
        cache.parse("bad")
    with pytest.raises(ValueError):
        ParseCache(0)
