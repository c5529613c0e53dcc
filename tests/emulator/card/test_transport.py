"""The in-process card transport."""

from __future__ import annotations

import pytest

from drivers.transport import CardTransport
from emulator.card import InProcessCardTransport, VirtualCard
from emulator.card.app import PPSE_NAME, contact_atr, contactless_atr
from emulator.catalogue import card_by_name
from iso8583.errors import CardTransportError
from tests.emulator.card.test_app import apdu, read_record, select


def test_is_a_card_transport() -> None:
    t = InProcessCardTransport(VirtualCard(card_by_name("cup-debit")))
    assert isinstance(t, CardTransport)
    assert t.atr == contact_atr()
    assert not t.contactless


def test_contactless_interface() -> None:
    t = InProcessCardTransport(VirtualCard(card_by_name("visa-credit")), contactless=True)
    assert t.contactless
    assert t.atr == contactless_atr()
    data, sw = t.transmit(select(PPSE_NAME))
    assert sw == 0x9000
    assert bytes.fromhex("A0000000031010") in data


def test_contact_only_card_refuses_contactless() -> None:
    with pytest.raises(ValueError, match="no contactless"):
        InProcessCardTransport(VirtualCard(card_by_name("cup-blocked")), contactless=True)


def test_t0_card_is_transparent_by_default() -> None:
    card = VirtualCard(card_by_name("cup-debit"), t0=True)
    t = InProcessCardTransport(card)
    data, sw = t.transmit(select(card.aid))
    assert sw == 0x9000
    assert data[0] == 0x6F
    assert t.transmit(apdu(0x00, 0xA4, 0x04, 0x00, card.aid, 0))[1] == 0x9000
    data, sw = t.transmit(read_record(1, 1))  # wrong SFI for an application: 6A82 as is
    assert sw == 0x6A82


def test_le_correction_on_a_case_1_get_data() -> None:
    card = VirtualCard(card_by_name("cup-debit"), t0=True)
    t = InProcessCardTransport(card)
    assert t.transmit(bytes.fromhex("80CA9F36")) == (bytes.fromhex("9F36020000"), 0x9000)


def test_raw_mode_shows_61xx() -> None:
    card = VirtualCard(card_by_name("cup-debit"), t0=True)
    t = InProcessCardTransport(card, auto_get_response=False)
    assert t.transmit(select(card.aid))[1] >> 8 == 0x61


def test_close_powers_off() -> None:
    card = VirtualCard(card_by_name("cup-debit"))
    t = InProcessCardTransport(card)
    t.close()
    t.close()
    assert not card.powered
    with pytest.raises(CardTransportError, match="closed"):
        t.transmit(select(PPSE_NAME))
