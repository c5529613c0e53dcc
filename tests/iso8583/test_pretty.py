"""Listings mask PAN, track, PIN block and keys unless asked to reveal."""

from __future__ import annotations

from iso8583.dialects import get_dialect
from iso8583.masking import mask_pan, mask_text, mask_track
from iso8583.pretty import format_message, message_dict

CUP = get_dialect("cup")
PAN = "6225880000000019"


def _msg() -> object:
    return CUP.message("0200", {
        2: PAN, 4: 100, 35: f"{PAN}D30122200000000000", 52: bytes.fromhex("0123456789ABCDEF"),
        55: bytes.fromhex("5A08") + bytes.fromhex(PAN) + bytes.fromhex("9F360200AA"),
        62: bytes.fromhex("11" * 24)})


def test_masking_helpers() -> None:
    assert mask_pan(PAN) == "622588******0019"
    assert mask_track(f"{PAN}D3012") == "622588******0019D****"
    assert mask_text(f"card {PAN} ok") == "card 622588******0019 ok"


def test_listing_masks_everything_sensitive() -> None:
    m = _msg()
    text = format_message(m, CUP)  # type: ignore[arg-type]
    assert PAN not in text
    assert "622588******0019" in text
    assert "0123456789ABCDEF" not in text
    assert "11" * 24 not in text.replace(" ", "")
    assert PAN not in repr(m)
    assert PAN not in str(message_dict(m, CUP))  # type: ignore[arg-type]


def test_reveal_shows_values() -> None:
    text = format_message(_msg(), CUP, reveal=True)  # type: ignore[arg-type]
    assert PAN in text
    assert "0123456789ABCDEF" in text
