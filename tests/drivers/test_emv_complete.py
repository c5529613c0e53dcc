"""The second GENERATE AC (EmvKernel.complete) against the virtual card of each CVN.

The "host" here is the acquirer emulator's own answer builder
(:func:`emulator.host.security.issuer_answer_f55`, what AcquirerHost puts in F55).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from drivers.emv import (
    CardReadResult,
    CryptogramType,
    EmvKernel,
    TransactionData,
    TransactionType,
)
from drivers.errors import CardDataError
from emulator.card.app import VirtualCard
from emulator.card.transport import InProcessCardTransport
from emulator.catalogue import TestCard as CatalogueCard
from emulator.catalogue import card_by_name
from emulator.host import security
from iso8583 import tlv

VISA = card_by_name("visa-credit")
CARDS = [card_by_name("cup-debit"), VISA, card_by_name("mastercard"),
         dataclasses.replace(VISA, cvn="visa-10")]
KERNEL = EmvKernel()


def _ids(card: CatalogueCard) -> str:
    return card.cvn


def sale(card: CatalogueCard, contactless: bool = False
         ) -> tuple[InProcessCardTransport, CardReadResult, bytes]:
    transport = InProcessCardTransport(VirtualCard(card), contactless)
    txn = TransactionData(TransactionType.SALE, 12_345, dt.date(2026, 11, 23), dt.time(9, 30),
                          unpredictable_number=bytes.fromhex("0BADCAFE"))
    read = KERNEL.read_card(transport, txn)
    f55 = read.f55()
    assert security.card_arqc_matches(card, tlv.decode_flat(f55))
    return transport, read, f55


def tag91(card: CatalogueCard, f55: bytes, code: str) -> bytes:
    answer = security.issuer_answer_f55(card, f55, code)
    assert answer is not None
    return tlv.decode_flat(answer)[0x91]


@pytest.mark.parametrize("contactless", [False, True], ids=["contact", "contactless"])
@pytest.mark.parametrize("card", CARDS, ids=_ids)
def test_approved_sale_with_a_good_arpc_ends_with_a_tc(card: CatalogueCard,
                                                       contactless: bool) -> None:
    transport, read, f55 = sale(card, contactless)
    crypt = KERNEL.complete(transport, read, issuer_auth_data=tag91(card, f55, "00"),
                            approved=True, response_code="00")
    assert crypt.type is CryptogramType.TC
    assert crypt.atc == tlv.decode_flat(f55)[0x9F36]


@pytest.mark.parametrize("card", CARDS, ids=_ids)
def test_approved_sale_with_a_corrupted_arpc_ends_with_an_aac(card: CatalogueCard) -> None:
    transport, read, f55 = sale(card)
    good = tag91(card, f55, "00")
    spoilt = good[:3] + bytes([good[3] ^ 0x10]) + good[4:]
    crypt = KERNEL.complete(transport, read, issuer_auth_data=spoilt,
                            approved=True, response_code="00")
    assert crypt.type is CryptogramType.AAC  # the till reverses the approved sale


@pytest.mark.parametrize("card", CARDS, ids=_ids)
def test_declined_or_unanswered_sale_ends_with_an_aac(card: CatalogueCard) -> None:
    transport, read, f55 = sale(card)
    crypt = KERNEL.complete(transport, read, issuer_auth_data=tag91(card, f55, "51"),
                            approved=False, response_code="51")
    assert crypt.type is CryptogramType.AAC
    transport, read, _ = sale(card)
    crypt = KERNEL.complete(transport, read, issuer_auth_data=None, approved=False)
    assert crypt.type is CryptogramType.AAC


def test_approved_without_any_arpc_ends_with_an_aac() -> None:
    card = card_by_name("cup-debit")
    transport, read, _ = sale(card)
    crypt = KERNEL.complete(transport, read, issuer_auth_data=None, approved=True,
                            response_code="00")
    assert crypt.type is CryptogramType.AAC


def test_complete_needs_an_arqc_and_sane_issuer_data() -> None:
    card = card_by_name("cup-debit")
    transport, read, _ = sale(card)
    with pytest.raises(CardDataError, match="8 to 16"):
        KERNEL.complete(transport, read, issuer_auth_data=b"\x01", approved=True)
    refund = dataclasses.replace(read, cryptogram=None)
    with pytest.raises(ValueError, match="ARQC"):
        KERNEL.complete(transport, refund, issuer_auth_data=None, approved=True)
