"""Amounts as a cashier types and reads them; inside, money is an ``int`` of fen."""

from __future__ import annotations

import re

from terminal.core.errors import AmountError

#: F4 is n12: 9,999,999,999.99 is the largest amount a message can carry.
MAX_AMOUNT = 999_999_999_999
_AMOUNT = re.compile(r"^([0-9]{1,10})(?:\.([0-9]{1,2}))?$")  # ASCII digits only


def parse_amount(text: str) -> int:
    """``"12.34"`` -> 1234 fen. Raises :class:`AmountError` for anything else.

    Zero, negatives, signs, spaces inside, more than two decimals or more
    digits than F4 can carry are refused with a reason the cashier can read.
    """
    raw = text.strip()
    if not raw:
        raise AmountError("no amount given", cashier_zh="请输入金额", cashier_en="Enter an amount")
    if raw.startswith("-"):
        raise AmountError(f"negative amount {raw!r}", cashier_zh="金额不能为负",
                          cashier_en="Amount cannot be negative")
    match = _AMOUNT.match(raw)
    whole_digits = raw.split(".", 1)[0]
    if match is None and whole_digits.isascii() and whole_digits.isdigit() \
            and len(whole_digits) > 10:
        raise AmountError(f"amount {raw} is more than a message can carry",
                          cashier_zh="金额过大", cashier_en="Amount too large")
    if match is None:
        raise AmountError(f"not an amount: {raw!r} (use digits and at most two decimals, "
                          "e.g. 12.34)", cashier_zh="金额格式错误（例：12.34）",
                          cashier_en="Amount format: 12.34")
    whole, frac = match.group(1), (match.group(2) or "").ljust(2, "0")
    fen = int(whole) * 100 + int(frac)
    if fen == 0:
        raise AmountError("amount must be more than 0.00", cashier_zh="金额必须大于零",
                          cashier_en="Amount must be more than 0.00")
    if fen > MAX_AMOUNT:
        raise AmountError(f"amount {raw} is more than a message can carry",
                          cashier_zh="金额过大", cashier_en="Amount too large")
    return fen


def format_amount(fen: int) -> str:
    """1234 -> ``"12.34"`` (negative amounts keep their sign)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def keypad_amount(digits: str) -> int:
    """The right-shifting entry of a POS keypad: ``"123"`` -> 1.23 yuan (123 fen)."""
    clean = digits.lstrip("0")
    if not clean:
        return 0
    if not clean.isdigit() or len(clean) > 12:
        raise AmountError(f"keypad entry {digits!r} is not up to 12 digits")
    return int(clean)
