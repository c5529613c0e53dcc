"""Masking of card numbers and track data for logs, screens and traces.

Two kinds of masking live here:

* **Display masking** (:func:`mask_pan`, :func:`mask_track2`,
  :class:`MaskingFilter`): what a person may see. The first six and last four
  digits of a PAN stay, the rest becomes ``*``: ``622588******0019``.
* **Trace substitution** (:func:`substitute_pan`, :func:`substitute_track2`):
  what a recorded APDU trace keeps in place of card data. A trace must replay
  into a valid EMV dialogue, so stars would break it; instead the middle digits
  are replaced by a fixed filler digit and one of them is chosen so the result
  still passes the Luhn check. The substitute has the same length, BIN and last
  four digits, so ``mask_pan(substitute_pan(p)) == mask_pan(p)``, but it is not
  the cardholder's number.

Every driver logger gets :class:`MaskingFilter` through
:func:`install_masking_filter`, so a PAN that slips into a log message is
masked before any handler sees it.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from iso8583.masking import mask_pan

__all__ = [
    "PAN_FILLER_DIGIT",
    "MaskingFilter",
    "install_masking_filter",
    "luhn_valid",
    "mask_digits_in_text",
    "mask_pan",
    "mask_track2",
    "substitute_pan",
    "substitute_track2",
]

PAN_FILLER_DIGIT: Final = "9"
"""Digit written over the hidden middle of a PAN in recorded traces."""

_KEEP_HEAD: Final = 6
_KEEP_TAIL: Final = 4

# A run of 13-19 digits not touching other digits: the length range of ISO/IEC 7812
# card numbers. Track 2 (PAN, separator, expiry, service code, discretionary data)
# is matched first so its tail is hidden too.
_TRACK2_RE: Final = re.compile(r"(?<![0-9])([0-9]{12,19})([=Dd])([0-9]{0,30})(?![0-9])")
_PAN_RE: Final = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")


def mask_track2(track2: str) -> str:
    """Mask track-2 (equivalent) data: PAN masked, everything after the separator starred.

    Accepts ``D`` or ``=`` as separator. The expiry, service code and
    discretionary data are hidden too (they carry card verification data).

    >>> mask_track2("6225880000000019D30122200000000000")
    '622588******0019D*****************'
    """
    for i, ch in enumerate(track2):
        if ch in "D=d":
            return mask_pan(track2[:i]) + ch + "*" * (len(track2) - i - 1)
    return mask_pan(track2)


def mask_digits_in_text(text: str) -> str:
    """Mask every PAN-like digit run (13-19 digits) and track-2 string inside free text."""

    def _track(m: re.Match[str]) -> str:
        return mask_track2(m.group(0))

    def _pan(m: re.Match[str]) -> str:
        return mask_pan(m.group(0))

    return _PAN_RE.sub(_pan, _TRACK2_RE.sub(_track, text))


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


class MaskingFilter(logging.Filter):
    """A logging filter that masks PAN-like digit runs in every record it sees.

    It formats the record's message with its arguments, masks the result and
    stores it back (``record.args`` emptied), so handlers and formatters only
    ever see the masked text. Exception text is masked too. It never drops a
    record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A broken format string: keep the raw pieces, masked.
            message = f"{record.msg} {record.args}"
        masked = mask_digits_in_text(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            formatter = logging.Formatter()
            record.exc_text = mask_digits_in_text(formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_digits_in_text(record.exc_text)
        return True


def install_masking_filter(logger: logging.Logger) -> logging.Logger:
    """Attach one :class:`MaskingFilter` to ``logger`` (idempotent); returns the logger."""
    if not any(isinstance(f, MaskingFilter) for f in logger.filters):
        logger.addFilter(MaskingFilter())
    return logger
