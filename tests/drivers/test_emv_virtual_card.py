"""The EMV dialogue against the product's in-process virtual card (emulator.card).

Every catalogue chip card is read contact and contactless for refunds (both
endings) and sales; the sale's ARQC is checked with the issuer key the host
uses. The card's fault knobs drive the status-word paths end to end.
"""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.emv import (
    CryptogramError,
    CryptogramType,
    TerminalConfig,
    TransactionData,
    TransactionType,
    read_card,
)
from drivers.errors import (
    CardBlockedError,
    CardDataError,
    CardError,
    CardRemovedError,
    DriverError,
    NoApplicationError,
)
from emulator import catalogue
from emulator.card.app import VirtualCard
from emulator.card.faults import parse_card_faults
from emulator.card.transport import InProcessCardTransport
from emulator.catalogue import CARDS, CardStatus, card_by_name
from emulator.host.security import card_arqc_matches
from iso8583 import tlv

UN = bytes.fromhex("0BADCAFE")
DATE = dt.date(2026, 11, 23)
AAC = TerminalConfig(refund_ends_with="aac")
RECORDS = TerminalConfig(refund_ends_with="records")

CHIP_USABLE = [c for c in CARDS if c.chip and c.status is not CardStatus.BLOCKED]
INTERFACES = [(c, cl) for c in CHIP_USABLE for cl in (False, True)
              if (c.contactless if cl else c.contact)]


def txn(kind: TransactionType = TransactionType.REFUND, amount: int = 8800) -> TransactionData:
    return TransactionData(kind, amount, DATE, dt.time(9, 30), unpredictable_number=UN,
                           sequence_counter=123)


def transport(card: catalogue.TestCard, contactless: bool = False, faults: str = "", *,
              t0: bool = False, auto: bool = True) -> InProcessCardTransport:
    vc = VirtualCard(card, t0=t0, faults=parse_card_faults(faults) if faults else None)
    return InProcessCardTransport(vc, contactless, auto_get_response=auto)


def _ids(v: object) -> str:
    if isinstance(v, catalogue.TestCard):
        return v.name
    return "contactless" if v else "contact"


@pytest.mark.parametrize(("card", "contactless"), INTERFACES, ids=_ids)
@pytest.mark.parametrize("config", [AAC, RECORDS], ids=["aac", "records"])
def test_refund_read_of_every_card(card: catalogue.TestCard, contactless: bool,
                                   config: TerminalConfig) -> None:
    res = read_card(transport(card, contactless), txn(), config)
    assert res.pan == card.pan
    assert res.expiry == card.expiry
    assert res.psn == card.psn
    assert res.aid == card.aid
    assert res.track2.startswith(f"{card.pan}D{card.expiry}{card.service_code}")
    assert res.contactless is contactless
    assert res.entry_mode == ("071" if contactless else "051")
    assert res.tags[0x9C] == b"\x20"
    if config is RECORDS:
        assert res.cryptogram is None
    else:
        assert res.cryptogram is not None
        assert res.cryptogram.type is CryptogramType.AAC
    assert "5A" not in {tlv.format_tag(t) for t in tlv.decode_flat(res.f55())}


@pytest.mark.parametrize(("card", "contactless"), INTERFACES, ids=_ids)
def test_sale_arqc_verifies_with_the_issuer_key(card: catalogue.TestCard,
                                               contactless: bool) -> None:
    res = read_card(transport(card, contactless), txn(TransactionType.SALE))
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.ARQC
    f55 = tlv.decode_flat(res.f55())
    assert card.psn is not None
    assert card_arqc_matches(card, f55)


def test_refund_aac_verifies_with_the_issuer_key() -> None:
    card = card_by_name("cup-debit")
    res = read_card(transport(card), txn(), AAC)
    f55 = tlv.decode_flat(res.f55())
    assert card_arqc_matches(card, f55)


def test_t0_card_through_a_raw_transport_uses_kernel_chaining() -> None:
    card = card_by_name("cup-debit")
    tr = transport(card, t0=True, auto=False)
    res = read_card(tr, txn(TransactionType.SALE))
    assert res.pan == card.pan
    assert res.cryptogram is not None
    plain = read_card(transport(card), txn(TransactionType.SALE))
    assert res.apdu_count > plain.apdu_count  # the GET RESPONSEs / resends were ours


def test_t0_card_contactless_raw() -> None:
    card = card_by_name("visa-credit")
    res = read_card(transport(card, True, t0=True, auto=False), txn(), AAC)
    assert res.pan == card.pan


def test_blocked_card() -> None:
    with pytest.raises(CardBlockedError):
        read_card(transport(card_by_name("cup-blocked")), txn())
    with pytest.raises(CardBlockedError):
        read_card(transport(card_by_name("cup-debit"), faults="blocked"), txn())


def test_pse_absent_falls_back_to_the_aid_list() -> None:
    card = card_by_name("mastercard")
    res = read_card(transport(card, faults="sw=6A82@select:once"), txn(), AAC)
    assert res.aid == card.aid


def test_6A81_on_select_is_blocked() -> None:
    with pytest.raises(CardBlockedError):
        read_card(transport(card_by_name("cup-debit"), faults="sw=6A81@select"), txn())


def test_no_application_contactless_without_ppse() -> None:
    with pytest.raises(NoApplicationError):
        read_card(transport(card_by_name("cup-debit"), True, faults="sw=6A82@select"), txn())


def test_aac_only_card_declines_a_sale() -> None:
    res = read_card(transport(card_by_name("cup-debit"), faults="aac_only"),
                    txn(TransactionType.SALE))
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.AAC


@pytest.mark.parametrize("command", ["select", "gpo", "read_record", "generate_ac"])
@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_corrupt_and_truncated_answers(command: str, fault: str) -> None:
    with pytest.raises(CardDataError):
        read_card(transport(card_by_name("cup-debit"), faults=f"{fault}@{command}"),
                  txn(TransactionType.SALE))


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_card_removed_mid_read(nth: int) -> None:
    with pytest.raises(CardRemovedError):
        read_card(transport(card_by_name("cup-debit"), faults=f"remove@read_record:{nth}"),
                  txn(TransactionType.SALE))


def test_broken_chaining_is_a_card_error() -> None:
    tr = transport(card_by_name("cup-debit"), faults="break_chain@gpo", t0=True, auto=False)
    with pytest.raises(CardError):
        read_card(tr, txn(TransactionType.SALE))


def test_unknown_sw_on_gpo() -> None:
    with pytest.raises(CardError, match="GPO answered 6F00"):
        read_card(transport(card_by_name("cup-debit"), faults="sw=6F00@gpo"), txn())


def test_tc_to_a_refund_is_rejected() -> None:
    def tc(apdu: bytes, answer: tuple[bytes, int]) -> tuple[bytes, int]:
        data, sw = answer
        if apdu[:2] == b"\x80\xae":
            flat = tlv.decode(data)[0]
            body = b"".join(
                tlv.encode_tlv(c.tag, b"\x40" if c.tag == 0x9F27 else c.value)
                for c in flat.children)
            return tlv.encode_tlv(flat.tag, body), sw
        return data, sw

    inner = transport(card_by_name("cup-debit"))

    class TcCard:
        atr = inner.atr
        contactless = inner.contactless

        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            return tc(apdu, inner.transmit(apdu))

        def close(self) -> None:
            inner.close()

    with pytest.raises(CryptogramError, match="refund offline"):
        read_card(TcCard(), txn(), AAC)


@pytest.mark.parametrize("seed", range(12))
def test_random_faults_raise_only_driver_errors(seed: int) -> None:
    tr = transport(card_by_name("cup-credit"), seed % 2 == 1,
                   faults=f"seed={seed},random=0.3", t0=seed % 3 == 0, auto=seed % 4 != 0)
    try:
        res = read_card(tr, txn(TransactionType.SALE))
    except DriverError:
        return
    assert res.pan == card_by_name("cup-credit").pan
