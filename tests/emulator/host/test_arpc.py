"""The host answers a chip sale with an ARPC (F55 tag 91) by the method of the card's CVN."""

from __future__ import annotations

import dataclasses

import pytest

from emulator.catalogue import TestCard as CatalogueCard
from emulator.catalogue import card_by_name
from emulator.host import security
from emulator.host.faults import FaultKind, corrupt_arpc, corrupt_reply, parse_rule
from emulator.simterminal import Approved
from iso8583 import tlv
from iso8583.crypto import emv
from tests.emulator.host.harness import make_lane

VISA = card_by_name("visa-credit")
CHIP = [(card_by_name("cup-debit"), "123456"), (VISA, None),
        (card_by_name("mastercard"), "4315"),
        (dataclasses.replace(VISA, cvn="visa-10"), None)]  # a card of the range still on CVN 10


def _ids(item: tuple[CatalogueCard, str | None]) -> str:
    return f"{item[0].name}-{item[0].cvn}"


def _verdict(card: CatalogueCard, request_f55: bytes,
             answer_f55: bytes) -> emv.IssuerAuthentication:
    sent = tlv.decode_flat(request_f55)
    got = tlv.decode_flat(answer_f55)
    profile = security.card_profile(card, sent)
    assert profile is not None
    assert profile.key == card.cvn
    assert len(got[0x91]) == profile.tag91_length
    return emv.check_issuer_authentication(profile, card.imk_ac, card.pan, card.psn,
                                           sent[0x9F36], sent[0x9F26], got[0x91])


@pytest.mark.parametrize("dialect", ["cup", "iso87"])
@pytest.mark.parametrize("item", CHIP, ids=_ids)
def test_approved_chip_sale_carries_an_authentic_approving_arpc(
        dialect: str, item: tuple[CatalogueCard, str | None]) -> None:
    card, pin = item
    lane = make_lane(dialect)
    request = lane.term.sale(card, 1_00, pin=pin)
    answer = lane.answer(request)
    assert answer[39] == "00"
    assert _verdict(card, bytes(request[55]), bytes(answer[55])) == emv.IssuerAuthentication(  # type: ignore[arg-type]
        True, True)
    again = lane.answer(request)  # the idempotent replay carries the same ARPC
    assert again[55] == answer[55]


@pytest.mark.parametrize("item", CHIP, ids=_ids)
def test_declined_chip_sale_carries_an_authentic_declining_arpc(
        item: tuple[CatalogueCard, str | None]) -> None:
    card, pin = item
    lane = make_lane()
    request = lane.term.sale(card, 1_51, pin=pin)  # magic amount: 51
    answer = lane.answer(request)
    assert answer[39] == "51"
    assert _verdict(card, bytes(request[55]), bytes(answer[55])) == emv.IssuerAuthentication(  # type: ignore[arg-type]
        True, False)


def test_no_arpc_for_a_cryptogram_that_does_not_verify_or_a_stripe_sale() -> None:
    lane = make_lane()
    card = card_by_name("cup-debit")
    request = lane.term.sale(card, 2_00, pin="123456")
    tags = tlv.decode_flat(bytes(request[55]))  # type: ignore[arg-type]
    tags[0x9F26] = bytes(8)
    assert security.issuer_answer_f55(card, tlv.encode(tags), "00") is None
    assert security.issuer_answer_f55(card, b"\x9f", "00") is None
    answer = lane.answer(lane.term.sale(card, 3_00, pin="123456", chip=False))
    assert answer[39] == "00"
    assert 55 not in answer


@pytest.mark.parametrize("dialect", ["cup", "iso87"])
@pytest.mark.parametrize("item", CHIP, ids=_ids)
def test_the_corrupt_arpc_fault_spoils_only_the_arpc(
        dialect: str, item: tuple[CatalogueCard, str | None]) -> None:
    card, pin = item
    lane = make_lane(dialect)
    request = lane.term.sale(card, 1_00, pin=pin)
    outcome = lane.send(request)
    assert outcome.reply is not None
    spoilt = corrupt_arpc(lane.host, outcome.reply)
    good = lane.term.dialect.unpack_payload(outcome.reply)
    bad = lane.term.dialect.unpack_payload(spoilt)
    assert bad.tpdu == good.tpdu
    assert bad.header == good.header
    for number in set(good.message.raw_items()) | set(bad.message.raw_items()):
        if number not in (55, lane.term.dialect.spec.mac_field):
            assert bad.message.get(number) == good.message.get(number), number
    arpc, was = (tlv.decode_flat(bytes(m[55]))[0x91]  # type: ignore[arg-type]
                 for m in (bad.message, good.message))
    assert bin(int.from_bytes(arpc, "big") ^ int.from_bytes(was, "big")).count("1") == 1
    # the MAC still verifies: only the card's issuer authentication fails
    assert isinstance(lane.term.check_response(request, bad.message, body=bad.body),
                      Approved)
    assert _verdict(card, bytes(request[55]), bytes(bad.message[55])).authentic is False  # type: ignore[arg-type]


def test_the_corrupt_arpc_fault_leaves_answers_without_tag_91_alone() -> None:
    lane = make_lane()
    card = card_by_name("cup-debit")
    stripe = lane.send(lane.term.sale(card, 3_00, pin="123456", chip=False)).reply
    assert stripe is not None
    assert corrupt_arpc(lane.host, stripe) == stripe
    assert corrupt_arpc(lane.host, b"\x00\x01garbage") == b"\x00\x01garbage"
    action = parse_rule("corrupt-arpc@card=cup-debit").action
    assert action.kind is FaultKind.CORRUPT_ARPC
    assert action.books
    chip = lane.send(lane.term.sale(card, 4_00, pin="123456")).reply
    assert chip is not None
    assert corrupt_reply(lane.term.dialect, action, chip) == chip  # no host: no MAK
    assert corrupt_reply(lane.term.dialect, action, chip, host=lane.host) != chip
