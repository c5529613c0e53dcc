"""Masking of card data for anything a person or a log can see.

PANs keep the first six and last four digits (``622588******0019``); track
data keeps only the masked PAN; PIN blocks and keys are never shown.
"""

from __future__ import annotations

import re

_PAN_RUN = re.compile(r"(?<![0-9])([0-9]{6})([0-9]{3,})([0-9]{4})(?![0-9])")


def mask_pan(pan: str) -> str:
    """``6225880000000019`` -> ``622588******0019``; short numbers keep only the last 4."""
    digits = pan.strip()
    if len(digits) >= 13:
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
    if len(digits) > 4:
        return "*" * (len(digits) - 4) + digits[-4:]
    return "*" * len(digits)


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
