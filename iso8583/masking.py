"""Masking of card data for anything a person or a log can see.

PANs keep the first six and last four digits (``622588******0019``); track
data keeps only the masked PAN; PIN blocks and keys are never shown.

Recorded traces (APDU traces in :mod:`drivers.trace`, ISO 8583 traces in
:mod:`iso8583.trace`) cannot use stars where the bytes must still decode and
replay: they keep :func:`substitute_pan` / :func:`substitute_track2` instead
(same length, BIN and last four, Luhn-valid; the one rule for both kinds of trace).
"""

from __future__ import annotations

import re
from typing import Final

PAN_FILLER_DIGIT: Final = "9"
"""Digit written over the hidden middle of a PAN in recorded traces."""

_KEEP_HEAD: Final = 6
_KEEP_TAIL: Final = 4

_PAN_RUN = re.compile(r"(?<![0-9])([0-9]{6})([0-9]{3,})([0-9]{4})(?![0-9])")


def mask_pan(pan: str) -> str:
    """Mask a PAN for display: first 6 and last 4 digits kept, ``*`` in between.

    Short numbers keep at least half of their digits hidden: a 12-digit number
    keeps 4 + 2, 5 to 8 digits keep only the last 2, 4 or fewer keep nothing.

    >>> mask_pan("6225880000000019")
    '622588******0019'
    >>> mask_pan("1234")
    '****'
    """
    n = len(pan)
    if n >= 13:
        head, tail = 6, 4
    elif n >= 9:
        head, tail = max(0, n // 2 - 2), 2
    elif n >= 5:
        head, tail = 0, 2
    else:
        head, tail = 0, 0
    return pan[:head] + "*" * (n - head - tail) + pan[n - tail:]


def mask_track(track: str) -> str:
    """Track 2/3 data: the masked PAN, then the rest hidden."""
    for sep in ("D", "=", "d", "^"):
        if sep in track:
            pan, rest = track.split(sep, 1)
            return f"{mask_pan(pan)}{sep}{'*' * len(rest)}"
    return "*" * len(track)


def mask_text(text: str) -> str:
    """Mask every run of 13 or more digits (a PAN, possibly inside hex) in free text."""
    return _PAN_RUN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (all decimal) passes the Luhn (mod 10) check."""
    if not digits.isdigit():
        return False
    return _luhn_sum(digits) % 10 == 0


def _luhn_sum(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def substitute_pan(pan: str, filler: str = PAN_FILLER_DIGIT) -> str:
    """A replay-safe stand-in for ``pan``: same length, BIN and last four, Luhn-valid.

    The hidden middle digits become ``filler`` except the last of them, which is
    chosen so the whole number passes the Luhn check (card data that fails Luhn
    would be a different test than the one recorded). Non-digit input and numbers
    too short to have a middle are returned with every digit replaced by
    ``filler`` so nothing leaks.

    >>> substitute_pan("6225880000000019")
    '6225889999950019'
    >>> mask_pan(substitute_pan("6225880000000019"))
    '622588******0019'
    """
    n = len(pan)
    if not pan.isdigit() or n < 13:
        return "".join(filler if c.isdigit() else c for c in pan)
    middle = n - _KEEP_HEAD - _KEEP_TAIL
    candidate = pan[:_KEEP_HEAD] + filler * middle + pan[n - _KEEP_TAIL:]
    fix_at = n - _KEEP_TAIL - 1
    for d in "0123456789":
        trial = candidate[:fix_at] + d + candidate[fix_at + 1:]
        if luhn_valid(trial) and trial != pan:
            return trial
    # Only reachable when every Luhn-valid choice equals the real PAN (one digit
    # position has exactly one valid value): fall back to another filler.
    alt = "8" if filler != "8" else "7"
    return substitute_pan(pan, alt)


def substitute_track2(track2: str, filler: str = PAN_FILLER_DIGIT) -> str:
    """A replay-safe stand-in for track-2 equivalent data (``D`` or ``=`` separated).

    PAN replaced by :func:`substitute_pan`; expiry and service code kept (the
    dialogue checks them against 5F24); the discretionary data (verification
    values) replaced by zeros of the same length.
    """
    for i, ch in enumerate(track2):
        if ch in "D=d":
            pan, rest = track2[:i], track2[i + 1:]
            keep = rest[:7]  # YYMM + service code
            tail = "".join("0" if c.isdigit() else c for c in rest[7:])
            return substitute_pan(pan, filler) + ch + keep + tail
    return substitute_pan(track2, filler)
