"""Amounts as a cashier types them: parse, format, keypad entry (DESIGN.md section 5)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.core.errors import AmountError
from terminal.core.money import MAX_AMOUNT, format_amount, keypad_amount, parse_amount

#: Canonical cashier text: no leading zeros, exactly two decimals, more than zero.
CANONICAL = st.from_regex(r"\A(0|[1-9][0-9]{0,9})\.[0-9]{2}\Z").filter(
    lambda s: s != "0.00")


@given(CANONICAL)
def test_format_of_parse_is_the_text_typed(text: str) -> None:
    assert format_amount(parse_amount(text)) == text


@given(st.integers(min_value=1, max_value=MAX_AMOUNT))
def test_parse_of_format_is_the_amount(fen: int) -> None:
    assert parse_amount(format_amount(fen)) == fen


@given(st.integers(min_value=1, max_value=9_999_999_999), st.integers(0, 99))
def test_one_decimal_and_no_decimals_mean_what_a_cashier_means(whole: int, frac: int) -> None:
    assert parse_amount(str(whole)) == whole * 100
    assert parse_amount(f"{whole}.{frac:02d}") == whole * 100 + frac
    assert parse_amount(f"{whole}.{frac // 10}") == whole * 100 + (frac // 10) * 10


@pytest.mark.parametrize(("text", "fen"), [
    ("12.34", 1234), ("0.01", 1), ("1", 100), ("1.5", 150), ("007.00", 700),
    ("  12.34\n", 1234), ("9999999999.99", MAX_AMOUNT),
])
def test_good_amounts(text: str, fen: int) -> None:
    assert parse_amount(text) == fen


@pytest.mark.parametrize(("text", "why"), [
    ("0", "more than 0.00"), ("0.00", "more than 0.00"), ("0.0", "more than 0.00"),
    ("000", "more than 0.00"),
    ("-1", "negative"), ("-0.01", "negative"), ("-12.34", "negative"),
    ("", "no amount"), ("   ", "no amount"),
    ("abc", "not an amount"), ("12a", "not an amount"), ("1e3", "not an amount"),
    ("+1", "not an amount"), ("1 2", "not an amount"), ("1,000.00", "not an amount"),
    ("12.", "not an amount"), (".5", "not an amount"), ("1.2.3", "not an amount"),
    ("0x10", "not an amount"), ("nan", "not an amount"), ("inf", "not an amount"),
    ("12.345", "not an amount"), ("0.001", "not an amount"),
    ("12345678901", "not an amount|more than a message can carry"),
    ("99999999999.99", "not an amount|more than a message can carry"),
])
def test_bad_amounts_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(text)
    assert re.search(why, caught.value.message)
    assert caught.value.cashier_en
    assert caught.value.cashier_zh


@given(st.text(max_size=16))
def test_parse_never_raises_anything_but_amount_error(text: str) -> None:
    try:
        fen = parse_amount(text)
    except AmountError:
        return
    assert 0 < fen <= MAX_AMOUNT


@given(st.text(alphabet="0123456789.-+ e", max_size=16))
def test_whatever_parses_is_positive_and_fits_f4(text: str) -> None:
    try:
        fen = parse_amount(text)
    except AmountError:
        return
    assert 0 < fen <= MAX_AMOUNT
    assert len(f"{fen:012d}") == 12


@pytest.mark.parametrize(("fen", "text"), [(0, "0.00"), (5, "0.05"), (1234, "12.34"),
                                           (-1234, "-12.34"), (100, "1.00")])
def test_format_amount(fen: int, text: str) -> None:
    assert format_amount(fen) == text


@pytest.mark.parametrize(("digits", "fen"), [("123", 123), ("0", 0), ("", 0), ("000050", 50),
                                             ("999999999999", 999_999_999_999)])
def test_keypad_amount(digits: str, fen: int) -> None:
    assert keypad_amount(digits) == fen


@pytest.mark.parametrize("digits", ["1234567890123", "12a", "-5"])
def test_keypad_amount_refuses(digits: str) -> None:
    with pytest.raises(AmountError):
        keypad_amount(digits)
