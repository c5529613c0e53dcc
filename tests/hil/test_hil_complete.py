"""HIL: a chip sale completed with the host's ARPC through pcscd + vpcd, for each scheme.

The card stays in the reader between the first read (ARQC) and the second
GENERATE AC, as a till must keep it. The ARPC comes from the acquirer
emulator's answer builder (emulator.host.security.issuer_answer_f55); the
fault-injected case corrupts one byte of tag 91 on its way to the card.
"""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.emv import CryptogramType, EmvKernel, TransactionData, TransactionType
from drivers.pcsc import PcscReader
from emulator.catalogue import card_by_name
from emulator.host import security
from iso8583 import tlv
from tests.hil.pcscd import VirtualCardSlot

pytestmark = pytest.mark.hil

EVENT_TIMEOUT = 5.0


@pytest.mark.parametrize("corrupt", [False, True], ids=["arpc-ok", "arpc-corrupted"])
@pytest.mark.parametrize("name", ["cup-debit", "visa-credit", "mastercard"])
def test_chip_sale_completed_with_the_hosts_arpc(
        name: str, corrupt: bool, virtual_card_slot: VirtualCardSlot,
        card_reader: PcscReader) -> None:
    card = card_by_name(name)
    kernel = EmvKernel()
    txn = TransactionData(TransactionType.SALE, 4_200, dt.date(2026, 11, 23), dt.time(12, 0),
                          unpredictable_number=bytes.fromhex("C0FFEE01"))
    virtual_card_slot.insert(name)
    card_reader.wait_for_card(EVENT_TIMEOUT)
    with card_reader.connect() as transport:
        read = kernel.read_card(transport, txn)
        assert read.cryptogram is not None
        assert read.cryptogram.type is CryptogramType.ARQC
        f55 = read.f55()
        assert security.card_arqc_matches(card, tlv.decode_flat(f55))
        answer = security.issuer_answer_f55(card, f55, "00")  # host approved
        assert answer is not None
        tag91 = tlv.decode_flat(answer)[0x91]
        if corrupt:
            tag91 = bytes([tag91[0] ^ 0x01]) + tag91[1:]
        crypt = kernel.complete(transport, read, issuer_auth_data=tag91, approved=True,
                                response_code="00")
    # approved by the host but declined by the card: the till must reverse the sale
    assert crypt.type is (CryptogramType.AAC if corrupt else CryptogramType.TC)
