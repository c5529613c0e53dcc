"""Masking of card numbers and track data for logs, screens and traces.

Two kinds of masking live here:

* **Display masking** (:func:`mask_pan`, :func:`mask_track2`,
  :class:`MaskingFilter`): what a person may see. The first six and last four
  digits of a PAN stay, the rest becomes ``*``: ``622588******0019``.
* **Trace substitution** (:func:`substitute_pan`, :func:`substitute_track2`, defined in
  :mod:`iso8583.masking` so the ISO 8583 traces use the same rule):
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

from iso8583.masking import (
    PAN_FILLER_DIGIT,
    luhn_valid,
    mask_pan,
    substitute_pan,
    substitute_track2,
)

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
