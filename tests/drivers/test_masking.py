"""Tests of PAN / track-2 masking for display and for recorded traces."""

from __future__ import annotations

import doctest
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import masking
from drivers.masking import (
    MaskingFilter,
    install_masking_filter,
    luhn_valid,
    mask_digits_in_text,
    mask_pan,
    mask_track2,
    substitute_pan,
    substitute_track2,
)
from emulator.catalogue import CARDS


def test_doctests() -> None:
    result = doctest.testmod(masking)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    ("pan", "masked"),
    [
        ("6225880000000019", "622588******0019"),
        ("6225880000000000019", "622588*********0019"),
        ("4761739001010", "476173***1010"),
        ("123456789012", "1234******12"),
        ("12345678", "******78"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_pan(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked


@given(st.text(alphabet="0123456789", min_size=0, max_size=19))
def test_mask_pan_hides_at_least_half(pan: str) -> None:
    masked = mask_pan(pan)
    assert len(masked) == len(pan)
    if len(pan) < 13:
        assert masked.count("*") * 2 >= len(pan)
    else:
        assert masked[:6] == pan[:6]
        assert masked[-4:] == pan[-4:]
        assert set(masked[6:-4]) == {"*"}


def test_mask_track2_hides_tail() -> None:
    assert mask_track2("6225880000000019D30122200000000000") == (
        "622588******0019D" + "*" * 17
    )
    assert mask_track2("6225880000000019=3012") == "622588******0019=****"
    assert mask_track2("6225880000000019") == "622588******0019"


def test_mask_digits_in_text() -> None:
    text = "pan=6225880000000019 t2=6225880000000019D30122200000000000 amount 000000001234"
    out = mask_digits_in_text(text)
    assert "6225880000000019" not in out
    assert "3012220" not in out
    assert "622588******0019" in out
    assert "000000001234" in out  # 12 digits: an amount, not a PAN


@given(st.sampled_from([c.pan for c in CARDS]))
def test_substitute_pan_is_valid_and_different(pan: str) -> None:
    sub = substitute_pan(pan)
    assert sub != pan
    assert len(sub) == len(pan)
    assert luhn_valid(sub)
    assert mask_pan(sub) == mask_pan(pan)


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_substitute_pan_any_number(pan: str) -> None:
    sub = substitute_pan(pan)
    assert sub != pan
    assert luhn_valid(sub)
    assert sub[:6] == pan[:6]
    assert sub[-4:] == pan[-4:]


def test_substitute_track2_keeps_expiry_and_service_code() -> None:
    t2 = "6225880000000019D30122201234567890"
    sub = substitute_track2(t2)
    pan, rest = sub.split("D")
    assert pan == substitute_pan("6225880000000019")
    assert rest == "3012220" + "0" * 10


def test_masking_filter_masks_message_and_args(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.masking.filter")
    install_masking_filter(logger)
    install_masking_filter(logger)
    assert sum(isinstance(f, MaskingFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("read card %s track %s", "6225880000000019", "6225880000000019D3012220000")
        logger.info("inline 4761739001010010")
    text = caplog.text
    assert "6225880000000019" not in text
    assert "4761739001010010" not in text
    assert "622588******0019" in text
    assert "476173******0010" in text


def test_masking_filter_masks_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.masking.exc")
    install_masking_filter(logger)
    with caplog.at_level(logging.ERROR, logger=logger.name):
        try:
            raise ValueError("bad card 6225880000000019")
        except ValueError:
            logger.exception("failed")
    assert "6225880000000019" not in caplog.text
    assert "622588******0019" in caplog.text
