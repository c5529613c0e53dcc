"""The simulated terminal: request layout, STAN/batch keeping, answer checks, local totals."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.catalogue import card_by_name
from emulator.host.errors import NotSignedOnError, ResponseError, ResponseMacError
from emulator.host.security import card_arqc_matches
from emulator.simterminal import STAN_MAX, Approved, SimTerminal
from iso8583 import composite, tlv
from iso8583.crypto import pinblock
from iso8583.settlement import HalfTotals, SettlementTotals, SettleResult
from tests.emulator.host.harness import MID, NOW, TID, TMK, Lane, make_lane

DEBIT = card_by_name("cup-debit")
VISA = card_by_name("visa-credit")
MAGSTRIPE = card_by_name("cup-magstripe")


@pytest.fixture
def lane() -> Lane:
    return make_lane()


def test_stan_increments_and_wraps() -> None:
    term = SimTerminal("cup", TID, MID, TMK, lambda: NOW, stan=STAN_MAX - 1)
    stans = [term.sign_on_request()[11] for _ in range(3)]
    assert stans == ["999998", "999999", "000001"]


def test_requests_need_a_sign_on() -> None:
    term = SimTerminal("cup", TID, MID, TMK, lambda: NOW)
    with pytest.raises(NotSignedOnError):
        term.sale(DEBIT, 100, pin="123456")


def test_chip_sale_layout(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 12_345, pin="123456")
    assert set(sale.fields) == {2, 3, 4, 11, 12, 13, 14, 22, 23, 25, 26, 35, 41, 42, 49, 52,
                                53, 55, 60, 64}
    assert sale.mti == "0200"
    assert sale[3] == "000000"
    assert sale[22] == "051"
    assert sale[23] == "001"
    assert sale[53] == "2600000000000000"
    f60 = composite.F60.decode(str(sale[60]))
    assert (f60.msg_type, f60.batch, f60.net_code) == ("22", "000001", "000")


def test_chip_sale_carries_a_verifiable_arqc_and_counts_the_atc(lane: Lane) -> None:
    first = tlv.decode_flat(bytes(lane.term.sale(DEBIT, 500, pin="123456")[55]))  # type: ignore[arg-type]
    second = tlv.decode_flat(bytes(lane.term.sale(DEBIT, 500, pin="123456")[55]))  # type: ignore[arg-type]
    assert card_arqc_matches(DEBIT, first)
    assert first[0x9F02] == bytes.fromhex("000000000500")
    assert int.from_bytes(second[0x9F36]) == int.from_bytes(first[0x9F36]) + 1
    assert first[0x9F26] != second[0x9F26]


def test_the_atc_counts_from_1_again_after_65535(lane: Lane) -> None:
    lane.term._atc[DEBIT.pan] = 0xFFFE  # 65,534 chip sales on this card so far
    sales = [lane.term.sale(DEBIT, 500, pin="123456") for _ in range(2)]
    atcs = [int.from_bytes(tlv.decode_flat(bytes(s[55]))[0x9F36])  # type: ignore[arg-type]
            for s in sales]
    assert atcs == [0xFFFF, 1]  # two bytes (9F36): no OverflowError in the terminal


def test_pin_block_is_format0_under_the_pik(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 500, pin="123456")
    assert lane.term.keys is not None
    block = sale[52]
    assert isinstance(block, bytes)
    assert pinblock.decrypt_format0(lane.term.keys.pik, block, DEBIT.pan) == "123456"


def test_magstripe_and_no_pin_layout(lane: Lane) -> None:
    sale = lane.term.sale(MAGSTRIPE, 500, pin=None)
    assert sale[22] == "022"
    assert 55 not in sale
    assert 23 not in sale
    assert 52 not in sale
    assert 53 not in sale


def test_void_names_the_original(lane: Lane) -> None:
    sale = lane.exchange(lane.term.sale(DEBIT, 500, pin="123456"))
    assert isinstance(sale, Approved)
    void = lane.term.void(sale)
    assert (void[3], void[4], void[37], void[38]) == ("200000", "000000000500", sale.rrn,
                                                      sale.auth_code)
    assert void[61] == f"{sale.batch}{sale.stan}"
    assert composite.F60.decode(str(void[60])).msg_type == "23"


def test_refund_names_the_original_with_its_date(lane: Lane) -> None:
    sale = lane.exchange(lane.term.sale(VISA, 500))
    assert isinstance(sale, Approved)
    refund = lane.term.refund(sale, 200)
    assert refund.mti == "0220"
    assert refund[37] == sale.rrn
    assert refund[61] == f"{sale.batch}{sale.stan}{sale.date}"
    assert refund[63] == "VIS"
    assert composite.F60.decode(str(refund[60])).msg_type == "25"


def test_pack_is_the_dialects_frame_of_the_request(lane: Lane) -> None:
    tpdu = bytes.fromhex("6000030000")
    sale = lane.term.sale(DEBIT, 500, pin="123456")
    assert lane.term.pack(sale, tpdu=tpdu) == lane.term.dialect.pack(sale, tpdu=tpdu)
    approved = lane.exchange(sale)
    assert isinstance(approved, Approved)
    refund = lane.term.refund(approved, 200)
    assert lane.term.pack(refund) == lane.term.dialect.pack(refund)
    # an older request, or the last one changed since it was built: encoded again
    assert lane.term.pack(sale, tpdu=tpdu) == lane.term.dialect.pack(sale, tpdu=tpdu)
    refund[4] = 100
    lane.term.remac(refund)
    assert lane.term.pack(refund) == lane.term.dialect.pack(refund)
    assert lane.term.dialect.unpack(lane.term.pack(refund)).message == refund
    refund.mti = "0200"
    assert lane.term.pack(refund) == lane.term.dialect.pack(refund)


def test_reversal_copies_the_original_and_drops_secrets(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 500, pin="123456")
    reversal = lane.term.reversal(sale, "98")
    assert reversal.mti == "0400"
    assert reversal[11] == sale[11]
    assert reversal[4] == sale[4]
    assert reversal[60] == sale[60]
    assert reversal[39] == "98"
    for secret in (35, 52, 55):
        assert secret not in reversal


def test_check_response_rejects_a_bad_mac(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 500, pin="123456")
    answer = lane.answer(sale)
    answer[64] = b"FFFFFFFF"
    with pytest.raises(ResponseMacError):
        lane.term.check_response(sale, answer)


def test_check_response_rejects_a_foreign_answer(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 500, pin="123456")
    other = lane.term.sale(DEBIT, 600, pin="123456")
    answer = lane.answer(other)
    with pytest.raises(ResponseError):
        lane.term.check_response(sale, answer)
    wrong_tid = lane.answer(sale)
    wrong_tid[41] = "99999999"
    with pytest.raises(ResponseError):
        lane.term.check_response(sale, wrong_tid)


def test_refused_sign_on_raises(lane: Lane) -> None:
    answer = lane.answer(lane.term.sign_on_request())
    answer[39] = "03"
    with pytest.raises(ResponseError):
        lane.term.accept_sign_on(answer)


def test_local_totals_follow_approvals_voids_refunds_and_reversals(lane: Lane) -> None:
    term = lane.term
    a = lane.exchange(term.sale(DEBIT, 1_000, pin="123456"))
    b = lane.exchange(term.sale(VISA, 2_000))
    c_req = term.sale(DEBIT, 4_000, pin="123456")
    lane.exchange(c_req)
    assert isinstance(a, Approved)
    assert isinstance(b, Approved)
    void = term.void(b)
    lane.exchange(void)
    lane.exchange(term.refund(a, 300))
    lane.exchange(term.reversal(c_req, "98"))
    assert term.totals() == SettlementTotals(HalfTotals(1, 1_000, 1, 300), HalfTotals())
    lane.exchange(term.reversal(void, "98"))
    assert term.totals().foreign == HalfTotals(1, 2_000, 0, 0)
    assert term.totals() == lane.host.batch_totals(TID, term.batch)


def test_balanced_settlement_moves_to_the_next_batch(lane: Lane) -> None:
    lane.exchange(lane.term.sale(DEBIT, 1_000, pin="123456"))
    result = lane.exchange(lane.term.settlement())
    assert isinstance(result, Approved)
    assert result.balanced
    assert lane.term.batch == "000002"
    assert lane.term.totals() == SettlementTotals()


def test_unbalanced_settlement_keeps_the_batch_for_upload(lane: Lane) -> None:
    lane.exchange(lane.term.sale(DEBIT, 1_000, pin="123456"))
    result = lane.exchange(lane.term.settlement(SettlementTotals()))
    assert isinstance(result, Approved)
    assert result.balanced is False
    assert lane.term.batch == "000001"
    lane.term.close_batch()
    assert lane.term.batch == "000002"


@given(st.builds(HalfTotals, st.integers(0, 999), st.integers(0, 10**12 - 1),
                 st.integers(0, 999), st.integers(0, 10**12 - 1)),
       st.builds(HalfTotals, st.integers(0, 999), st.integers(0, 10**12 - 1),
                 st.integers(0, 999), st.integers(0, 10**12 - 1)),
       st.sampled_from(list(SettleResult)), st.sampled_from(list(SettleResult)))
def test_f48_totals_round_trip(dom: HalfTotals, fore: HalfTotals, r1: SettleResult,
                               r2: SettleResult) -> None:
    totals = SettlementTotals(dom, fore)
    text = totals.encode(r1, r2)
    assert len(text) == 62
    assert SettlementTotals.decode(text) == (totals, r1, r2)


@pytest.mark.parametrize("text", ["", "1" * 61, "x" * 62, "0" * 30 + "9" + "0" * 31])
def test_f48_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="F48"):
        SettlementTotals.decode(text)


def test_approved_repr_hides_the_pan(lane: Lane) -> None:
    sale = lane.exchange(lane.term.sale(DEBIT, 1_000, pin="123456"))
    assert DEBIT.pan not in repr(sale)
    assert DEBIT.pan not in repr(dataclasses.replace(sale))
