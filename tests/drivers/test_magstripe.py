"""Tests of magstripe swipe parsing, the entry-mode rules and the reader over a pty."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import CardDataError, CardTimeoutError, ReaderError
from drivers.magstripe import (
    ChipCardSwipedError,
    MagstripeReader,
    Swipe,
    SwipeReadError,
    entry_mode,
    parse_swipe,
)
from emulator import catalogue
from emulator.catalogue import CARDS, card_by_name
from emulator.pinpad import VirtualMagstripeReader, swipe_line


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_catalogue_swipes_parse(card: catalogue.TestCard) -> None:
    s = parse_swipe(swipe_line(card))
    assert (s.pan, s.expiry, s.service_code) == (card.pan, card.expiry, card.service_code)
    assert s.track2_equivalent == card.track2
    assert s.chip_card == (card.service_code[0] in "26")


def test_repr_masks_the_pan() -> None:
    s = parse_swipe(swipe_line(card_by_name("cup-debit")))
    assert "6225880000000019" not in repr(s)
    assert "622588******0019" in repr(s)
    assert "0000000000" not in str(s)


def test_track2_only_swipe() -> None:
    assert parse_swipe(b";6222000000000090=30081010000000000?").service_code == "101"


@pytest.mark.parametrize("line", [
    b"%E?;E?",
    b"%B6222000000000090^X^3008101?",
    b";6222000000000091=30081010000?",  # Luhn wrong
    b";6222000000000090=30131010000?",  # month 13
    b"\xff\xfe",
    b"",
])
def test_unreadable_swipes(line: bytes) -> None:
    with pytest.raises(SwipeReadError):
        parse_swipe(line)


@given(st.binary(max_size=120))
def test_random_lines_raise_only_card_data_errors(blob: bytes) -> None:
    with contextlib.suppress(CardDataError):
        parse_swipe(blob)


def _swipe(name: str) -> Swipe:
    return parse_swipe(swipe_line(card_by_name(name)))


def test_entry_modes() -> None:
    stripe_only = _swipe("cup-magstripe")  # service code 101
    chip = _swipe("cup-debit")  # 220
    assert entry_mode(stripe_only, chip_failed=False, pin_entered=True) == "021"
    assert entry_mode(stripe_only, chip_failed=False, pin_entered=False) == "022"
    assert entry_mode(chip, chip_failed=True, pin_entered=True) == "801"
    assert entry_mode(chip, chip_failed=True, pin_entered=False) == "802"
    with pytest.raises(ChipCardSwipedError) as info:
        entry_mode(chip, chip_failed=False, pin_entered=True)
    assert info.value.cashier_zh == "请插入芯片卡"


def test_international_chip_card_service_code_201_is_chip() -> None:
    with pytest.raises(ChipCardSwipedError):
        entry_mode(_swipe("visa-credit"), chip_failed=False, pin_entered=False)


def test_reader_over_a_pty() -> None:
    with VirtualMagstripeReader() as virtual, MagstripeReader.open(virtual.path) as reader:
        virtual.send_raw(b"\r\n")  # an empty line is skipped
        virtual.swipe(card_by_name("cup-magstripe"))
        assert reader.read_swipe(2.0).pan == "6222000000000090"
        virtual.swipe(card_by_name("cup-debit"), damaged=True)
        with pytest.raises(SwipeReadError):
            reader.read_swipe(2.0)
        with pytest.raises(CardTimeoutError):
            reader.read_swipe(0.1)


def test_reader_open_failure() -> None:
    with pytest.raises(ReaderError):
        MagstripeReader.open("/dev/no-such-reader")
