"""Masking of card data for anything a person or a log can see.

PANs keep the first six and last four digits (``622588******0019``); track
data keeps only the masked PAN; PIN blocks and keys are never shown.
"""

from __future__ import annotations

import re

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
