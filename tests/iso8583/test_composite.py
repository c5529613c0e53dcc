"""F60/F61/F63/F90 subfield helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583 import composite
from iso8583.composite import F60, F61, F63, F90
from iso8583.dialects import get_dialect
from iso8583.errors import DecodeError, EncodeError

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


def test_f60_refund_layout() -> None:
    text = F60(msg_type="25", batch="000123", net_code="000").encode()
    assert text == "25000123000"
    assert F60.decode(text) == F60("25", "000123", "000")
    full = F60("22", "000001", "000", read_capability="6", ic_condition="0").encode()
    assert full == "2200000100060"
    assert get_dialect("cup").decode(get_dialect("cup").encode(
        get_dialect("cup").message("0200", {60: full})))[60] == full


@given(st.builds(F60, msg_type=st.text("0123456789", min_size=2, max_size=2),
                 batch=st.text("0123456789", min_size=6, max_size=6),
                 net_code=st.text("0123456789", min_size=3, max_size=3),
                 read_capability=digits, ic_condition=digits))
def test_f60_round_trip(f60: F60) -> None:
    assert F60.decode(f60.encode()) == f60
    assert F60.decode(f60.encode()) == f60  # the second time, decoded before


@given(st.text("0123456789x", max_size=16))
def test_f60_decoded_again_is_what_it_was_the_first_time(text: str) -> None:
    """F60.decode keeps what it decoded (a frozen F60 per text): equal to a fresh
    decode's fields, and a text it refused is refused again."""
    first: F60 | str
    try:
        first = F60.decode(text)
    except DecodeError as exc:
        first = str(exc)
    for _ in range(2):
        try:
            again: F60 | str = F60.decode(text)
        except DecodeError as exc:
            again = str(exc)
        assert again == first
    if isinstance(first, F60):
        assert first == F60(text[0:2], text[2:8], text[8:11] if len(text) >= 11 else "000",
                            text[11:12], text[12:13], text[13:])


def test_f60_decoded_are_bounded() -> None:
    for n in range(3000):
        assert F60.decode(f"22{n:06d}000").batch == f"{n:06d}"
    assert 0 < len(composite._F60_DECODED) <= composite._DECODED_MAX


def test_f61_void_and_refund() -> None:
    assert F61("000001", "000042").encode() == "000001000042"
    refund = F61("000001", "000042", "1123")
    assert F61.decode(refund.encode()) == refund
    with pytest.raises(DecodeError):
        F61.decode("12345")
    with pytest.raises(EncodeError):
        F61("1", "000042").encode()


def test_f63_and_f90() -> None:
    assert F63("CUP").encode() == "CUP"
    assert F63.decode("VIS extra") == F63("VIS", " extra")
    with pytest.raises(EncodeError):
        F63("CUPX").encode()
    f90 = F90("0200", "000005", "1123101500", "12345")
    assert len(f90.encode()) == 42
    assert F90.decode(f90.encode()) == F90("0200", "000005", "1123101500", "00000012345",
                                           "00000000000")
