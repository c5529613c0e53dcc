"""The same host rules over the ISO 8583:1987 dialect (ASCII fields, F70, F90, X9.19 MAC)."""

from __future__ import annotations

import pytest

from emulator.catalogue import card_by_name
from emulator.simterminal import Approved
from tests.emulator.host.harness import Lane, make_lane

DEBIT = card_by_name("cup-debit")


@pytest.fixture
def lane() -> Lane:
    return make_lane("iso87")


def test_sign_on_gives_a_double_length_mak_for_x919(lane: Lane) -> None:
    assert lane.term.keys is not None
    assert len(lane.term.keys.mak) == 16
    assert lane.term.sign_on_request()[70] == "001"


def test_echo_is_an_0800_with_f70_301(lane: Lane) -> None:
    echo = lane.term.echo()
    assert (echo.mti, echo[70]) == ("0800", "301")
    assert lane.answer(echo).response_code == "00"


def test_day_of_business(lane: Lane) -> None:
    sale_req = lane.term.sale(DEBIT, 10_000, pin="123456")
    sale = lane.exchange(sale_req)
    assert isinstance(sale, Approved)
    assert lane.send(sale_req).records == ()  # duplicate: stored answer
    refund = lane.term.refund(sale, 4_000)
    assert (refund.mti, refund[3]) == ("0200", "200000")  # online refund in this dialect
    assert isinstance(lane.exchange(refund), Approved)
    assert lane.exchange(lane.term.refund(sale, 6_001)).response_code == "64"
    other = lane.exchange(lane.term.sale(DEBIT, 3_000, pin="123456"))
    assert isinstance(other, Approved)
    void = lane.term.void(other)
    assert void[3] == "020000"
    assert isinstance(lane.exchange(void), Approved)
    third_req = lane.term.sale(DEBIT, 500, pin="123456")
    lane.exchange(third_req)
    reversal = lane.term.reversal(third_req, "98")
    assert reversal[11] != third_req[11]
    assert str(reversal[90]).startswith("0200" + str(third_req[11]))
    assert isinstance(lane.exchange(reversal), Approved)
    row = lane.host.by_rrn(str(lane.host.transactions()[-2].rrn))
    assert row is not None
    assert row.status == "reversed"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 6_000
    settled = lane.exchange(lane.term.settlement())
    assert isinstance(settled, Approved)
    assert settled.balanced


def test_bad_mac_gets_a0(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 1_000, pin="123456")
    sale[64] = bytes(8)
    assert lane.answer(sale).response_code == "A0"


def test_reversal_with_f90_and_a_bad_mac_gets_a0(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 1_000, pin="123456")
    lane.exchange(sale)
    reversal = lane.term.reversal(sale, "98")
    reversal[64] = bytes(8)
    assert lane.answer(reversal).response_code == "A0"
