"""The till against the host's real rules in memory: every flow, every refusal, every fault.

Each refusal checks that nothing moved: the host booked nothing new, nothing new went
on the wire, and the journal (rows, follow-ups, STAN counter) is as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from emulator.host.ledger import TransactionRow
from iso8583.crypto.signon import WorkingKeys
from terminal.core.errors import (
    CardMismatchError,
    DeviceError,
    HostLinkError,
    HostTimeoutError,
    InputError,
    OriginalNotFoundError,
    OriginalStateError,
    PendingError,
    RefundAmountError,
    RefundTooOldError,
    RuleError,
)
from terminal.core.ports import CardRead, Purpose
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.till import ExternalOriginal, Outcome, RefundQuote
from tests.terminal.core.harness import (
    TID,
    Crash,
    CrashPlan,
    Rig,
    check_money_rules,
    crash_points,
    make_rig,
    snapshot,
)

DAMAGED = RefundReason.DAMAGED


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return make_rig(tmp_path)


@pytest.fixture(params=["cup", "iso87"])
def any_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Rig:
    return make_rig(tmp_path, request.param)


@pytest.fixture
def plan() -> Iterator[CrashPlan]:
    with crash_points() as armed:
        yield armed


def sale(rig: Rig, amount: int = 100_00, card: str = "cup-debit") -> Outcome:
    return rig.till.sale(amount, rig.card(card, Purpose.SALE, amount))


def refund_card(rig: Rig, card: str = "cup-debit", amount: int = 0) -> CardRead:
    return rig.card(card, Purpose.REFUND, amount)


def quote(rig: Rig, original: TxnRecord | ExternalOriginal, amount: int,
          card: str = "cup-debit") -> RefundQuote:
    return rig.till.quote_refund(original, refund_card(rig, card, max(amount, 0)), amount,
                                 DAMAGED)


def host_row(rig: Rig, record: TxnRecord) -> TransactionRow:
    row = rig.host.transaction((TID, record.batch, record.stan, record.mti))
    assert row is not None, f"host has no row for {record.kind} {record.stan}"
    return row


def host_rows(rig: Rig, kind: str) -> list[TransactionRow]:
    return [t for t in rig.host.transactions() if t.kind == kind]


def host_sale(rig: Rig, record: TxnRecord) -> tuple[str, int, int]:
    row = rig.host.transaction((TID, record.batch, record.stan, record.mti))
    assert row is not None
    return row.status, row.amount or 0, row.refunded


def fin_sent(rig: Rig) -> list[str]:
    """MTI of every money-moving message on the wire, in order."""
    return [m.mti for m in rig.link.sent if m.mti not in ("0800", "0820")]


# --- sale ---------------------------------------------------------------------------------

def test_sale_with_pin_asks_the_pad_and_is_booked(rig: Rig) -> None:
    assert rig.pad.requests == 0
    outcome = sale(rig, 123_45)
    assert outcome.approved
    assert rig.pad.requests == 1
    request = rig.link.sent[-1]
    assert request.mti == "0200"
    assert isinstance(request.get(52), bytes)
    record = outcome.record
    assert (record.kind, record.amount, record.status, record.response_code) == \
        (TxnKind.SALE, 123_45, TxnStatus.APPROVED, "00")
    assert record.host_date == rig.clock().strftime("%m%d")
    assert record.pan_masked == "622588******0019"
    assert host_sale(rig, record) == ("approved", 123_45, 0)
    assert record.rrn == host_row(rig, record).rrn
    check_money_rules(rig)


@pytest.mark.parametrize("card", ["cup-nopin", "visa-credit"])
def test_a_card_without_pin_sends_no_pin(rig: Rig, card: str) -> None:
    outcome = sale(rig, 10_00, card)
    assert outcome.approved
    assert rig.pad.requests == 0
    assert 52 not in rig.link.sent[-1]
    assert host_sale(rig, outcome.record)[0] == "approved"


def test_a_cancelled_pin_writes_and_sends_nothing(rig: Rig) -> None:
    sale(rig)
    before = snapshot(rig)
    card = rig.card("cup-debit", Purpose.SALE, 10_00)
    rig.pad.pin = None
    with pytest.raises(DeviceError, match="cancelled"):
        rig.till.sale(10_00, card)
    assert snapshot(rig) == before


@pytest.mark.parametrize("amount", [0, -1, -100_00])
def test_sale_of_zero_or_less_is_refused(rig: Rig, amount: int) -> None:
    sale(rig)
    card = rig.card("cup-debit", Purpose.SALE, 10_00)
    before = snapshot(rig)
    with pytest.raises(InputError):
        rig.till.sale(amount, card)
    assert snapshot(rig) == before


@pytest.mark.parametrize(("amount", "code"), [(12_51, "51"), (12_05, "05"), (1_61, "61"),
                                              (3_14, "14"), (20_12, "12"), (7_55, "55")])
def test_magic_amounts_are_declined_and_recorded(rig: Rig, amount: int, code: str) -> None:
    outcome = sale(rig, amount)
    assert outcome.status is TxnStatus.DECLINED
    assert outcome.code == code
    assert outcome.response is not None
    assert outcome.response.code == code
    assert host_sale(rig, outcome.record)[0] == "declined"
    assert rig.till.journal.open_count() == 0
    assert rig.till.refundable_sales(refund_card(rig)) == []
    check_money_rules(rig)


def test_insufficient_funds_on_a_low_funds_card(rig: Rig) -> None:
    outcome = sale(rig, 20_00, "cup-low-funds")
    assert (outcome.status, outcome.code) == (TxnStatus.DECLINED, "51")


# --- refund -------------------------------------------------------------------------------

def test_partial_refunds_then_the_rest_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    first = quote(rig, original, 30_00)
    assert (first.original_amount, first.already_refunded, first.refundable,
            first.remaining_after) == (100_00, 0, 100_00, 70_00)
    assert first.masked_pan == "622588******0019"
    assert rig.till.refund(first).approved
    assert host_sale(rig, original)[2] == 30_00
    second = quote(rig, original, 50_00)
    assert (second.already_refunded, second.refundable, second.remaining_after) == \
        (30_00, 70_00, 20_00)
    out = rig.till.refund(second)
    assert out.approved
    assert out.record.mti == "0220"  # CUP: a refund is an advice
    assert host_sale(rig, original) == ("approved", 100_00, 80_00)
    before = snapshot(rig)
    with pytest.raises(RefundAmountError, match=r"more than the refundable 20\.00"):
        quote(rig, original, 20_01)
    assert snapshot(rig) == before
    assert rig.till.refund(quote(rig, original, 20_00)).approved
    assert host_sale(rig, original)[2] == 100_00
    with pytest.raises(RefundAmountError):
        quote(rig, original, 1)
    check_money_rules(rig)


def test_a_stale_quote_is_checked_again_before_sending(rig: Rig) -> None:
    original = sale(rig).record
    stale = quote(rig, original, 80_00)
    assert rig.till.refund(quote(rig, original, 50_00)).approved
    before = snapshot(rig)
    with pytest.raises(RefundAmountError):
        rig.till.refund(stale)
    assert snapshot(rig) == before
    assert host_sale(rig, original)[2] == 50_00


@pytest.mark.parametrize("amount", [0, -5])
def test_a_refund_of_zero_or_less_is_refused(rig: Rig, amount: int) -> None:
    original = sale(rig).record
    before = snapshot(rig)
    with pytest.raises(RefundAmountError, match=r"more than 0\.00"):
        quote(rig, original, amount)
    assert snapshot(rig) == before


def test_a_refund_to_another_card_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    before = snapshot(rig)
    with pytest.raises(CardMismatchError):
        quote(rig, original, 10_00, card="cup-credit")
    assert snapshot(rig) == before


def test_other_is_a_reason_that_needs_a_note(rig: Rig) -> None:
    original = sale(rig).record
    card = refund_card(rig)
    with pytest.raises(InputError, match="note"):
        rig.till.quote_refund(original, card, 10_00, RefundReason.OTHER, "  ")
    out = rig.till.refund(rig.till.quote_refund(original, card, 10_00, RefundReason.OTHER,
                                                "box opened"))
    assert (out.record.reason, out.record.note) == ("other", "box opened")


def test_refund_by_voucher(rig: Rig) -> None:
    original = sale(rig).record
    sale(rig, 5_00)
    found = rig.till.find_by_voucher(original.voucher.lstrip("0"))
    assert found.id == original.id
    assert rig.till.refund(quote(rig, found, 40_00)).approved
    assert host_sale(rig, original)[2] == 40_00


def test_refund_by_card_lists_that_cards_refundable_sales(rig: Rig) -> None:
    older = sale(rig, 10_00).record
    newer = sale(rig, 20_00).record
    sale(rig, 30_00, "cup-credit")
    sale(rig, 12_51)  # declined: not refundable
    listed = rig.till.refundable_sales(refund_card(rig))
    assert [(s.id, left.refundable) for s, left in listed] == \
        [(newer.id, 20_00), (older.id, 10_00)]
    assert rig.till.refund(quote(rig, newer, 20_00)).approved
    assert rig.till.refund(quote(rig, older, 4_00)).approved
    listed = rig.till.refundable_sales(refund_card(rig))
    assert [(s.id, left.refundable, left.refunded) for s, left in listed] == \
        [(older.id, 6_00, 4_00)]
    other = rig.till.refundable_sales(refund_card(rig, "cup-credit"))
    assert [left.refundable for _, left in other] == [30_00]


def test_refund_by_rrn_and_date_of_a_journaled_sale(rig: Rig) -> None:
    original = sale(rig).record
    assert original.rrn is not None
    assert original.host_date is not None
    found = rig.till.find_by_rrn(original.rrn, original.host_date)
    assert isinstance(found, TxnRecord)
    assert found.id == original.id
    out = rig.till.refund(quote(rig, found, 25_00))
    assert out.approved
    assert out.record.original_id == original.id
    assert host_sale(rig, original)[2] == 25_00


def test_unknown_voucher_is_not_found_and_bad_vouchers_are_input_errors(rig: Rig) -> None:
    sale(rig)
    before = snapshot(rig)
    with pytest.raises(OriginalNotFoundError):
        rig.till.find_by_voucher("999")
    for bad in ("", "abc", "1234567", "-1"):
        with pytest.raises(InputError):
            rig.till.find_by_voucher(bad)
    assert snapshot(rig) == before


def test_a_refund_voucher_is_not_an_original(rig: Rig) -> None:
    original = sale(rig).record
    refund = rig.till.refund(quote(rig, original, 1_00)).record
    with pytest.raises(OriginalNotFoundError):
        rig.till.find_by_voucher(refund.voucher)


@pytest.mark.parametrize(("rrn", "mmdd"), [("12345", "1123"), ("1234567890123", "1123"),
                                           ("000000000001", "1323"), ("000000000001", "11"),
                                           ("000000000001", "1100"), ("000000000001", "ab12"),
                                           ("00000000000!", "1123")])
def test_bad_rrn_or_date_is_an_input_error(rig: Rig, rrn: str, mmdd: str) -> None:
    with pytest.raises(InputError):
        rig.till.find_by_rrn(rrn, mmdd)


def test_an_rrn_not_in_the_journal_is_an_external_original(rig: Rig) -> None:
    sale(rig)
    found = rig.till.find_by_rrn("999999999999", "1120")
    assert found == ExternalOriginal("999999999999", "1120")
    q = quote(rig, found, 10_00)
    assert (q.original_amount, q.already_refunded, q.refundable, q.remaining_after) == \
        (None, None, None, None)
    before = snapshot(rig)
    with pytest.raises(RefundAmountError):
        quote(rig, found, 0)
    assert snapshot(rig) == before
    out = rig.till.refund(q)
    # the host does not know that original: 25, recorded declined, nothing booked
    assert (out.status, out.code) == (TxnStatus.DECLINED, "25")
    assert host_rows(rig, "refund")[-1].status == "declined"
    check_money_rules(rig)


def test_an_external_original_past_the_age_limit_is_refused(rig: Rig) -> None:
    found = rig.till.find_by_rrn("999999999999", "1020")  # 34 days before 2026-11-23
    with pytest.raises(RefundTooOldError):
        quote(rig, found, 10_00)


def test_a_wrong_date_for_a_journaled_rrn_reaches_the_host_which_refuses(rig: Rig) -> None:
    original = sale(rig).record
    assert original.rrn is not None
    found = rig.till.find_by_rrn(original.rrn, "1122")
    assert isinstance(found, ExternalOriginal)
    out = rig.till.refund(quote(rig, found, 10_00))
    assert (out.status, out.code) == (TxnStatus.DECLINED, "25")
    assert host_sale(rig, original)[2] == 0


def test_refund_after_the_age_limit_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    rig.clock.advance(days=30)
    assert quote(rig, original, 1_00).refundable == 100_00  # day 30: still allowed
    rig.clock.advance(days=1)
    before = snapshot(rig)
    with pytest.raises(RefundTooOldError, match="older than 30 days"):
        quote(rig, original, 1_00)
    assert snapshot(rig) == before


# --- void ---------------------------------------------------------------------------------

def test_void_keyed_from_the_journal_and_with_the_card(rig: Rig) -> None:
    first = sale(rig, 10_00).record
    second = sale(rig, 20_00).record
    out = rig.till.void(rig.till.quote_void(first))
    assert out.approved
    assert out.record.amount == 10_00
    assert host_sale(rig, first)[0] == "voided"
    card = rig.card("cup-debit", Purpose.VOID, 20_00)
    assert rig.till.void(rig.till.quote_void(second, card)).approved
    assert host_sale(rig, second)[0] == "voided"
    assert rig.till.refundable_sales(refund_card(rig)) == []
    check_money_rules(rig)


def test_void_with_another_card_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    before = snapshot(rig)
    with pytest.raises(CardMismatchError):
        rig.till.quote_void(original, rig.card("cup-credit", Purpose.VOID))
    assert snapshot(rig) == before


def test_refund_of_a_voided_sale_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    assert rig.till.void(rig.till.quote_void(original)).approved
    before = snapshot(rig)
    with pytest.raises(OriginalStateError, match="voided"):
        quote(rig, original, 1_00)
    assert snapshot(rig) == before


def test_void_after_refund_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    assert rig.till.refund(quote(rig, original, 1_00)).approved
    before = snapshot(rig)
    with pytest.raises(OriginalStateError, match="refunds"):
        rig.till.quote_void(original)
    assert snapshot(rig) == before


def test_void_twice_is_refused(rig: Rig) -> None:
    original = sale(rig).record
    voided = rig.till.quote_void(original)
    assert rig.till.void(voided).approved
    before = snapshot(rig)
    with pytest.raises(OriginalStateError, match="already voided"):
        rig.till.quote_void(original)
    with pytest.raises(OriginalStateError):
        rig.till.void(voided)  # a stale quote is checked again
    assert snapshot(rig) == before


def test_void_of_a_settled_batch_is_refused_but_a_refund_works(rig: Rig) -> None:
    original = sale(rig).record
    rig.till.settle()
    before = snapshot(rig)
    with pytest.raises(OriginalStateError, match="refund it instead"):
        rig.till.quote_void(original)
    assert snapshot(rig) == before
    found = rig.till.find_by_voucher(original.voucher)
    out = rig.till.refund(quote(rig, found, 100_00))
    assert out.approved
    assert out.record.batch == "000002"
    check_money_rules(rig)


def test_a_declined_sale_cannot_be_voided_or_refunded(rig: Rig) -> None:
    declined = sale(rig, 12_51).record
    with pytest.raises(OriginalStateError):
        rig.till.quote_void(declined)
    with pytest.raises(OriginalStateError):
        quote(rig, declined, 1_00)


# --- devices and the link -------------------------------------------------------------------

def test_host_down_refuses_everything_and_changes_nothing(rig: Rig) -> None:
    original = sale(rig).record
    other = sale(rig, 50_00).record
    refund_q = quote(rig, original, 10_00)
    void_q = rig.till.quote_void(other)
    card = rig.card("cup-debit", Purpose.SALE, 10_00)
    rig.link.down = True
    before = snapshot(rig)
    with pytest.raises(HostLinkError):
        rig.till.sale(10_00, card)
    with pytest.raises(HostLinkError):
        rig.till.refund(refund_q)
    with pytest.raises(HostLinkError):
        rig.till.void(void_q)
    with pytest.raises(HostLinkError):
        rig.till.settle()
    assert snapshot(rig) == before
    rig.link.down = False
    assert rig.till.refund(refund_q).approved


def test_host_down_before_the_first_sign_on(rig: Rig) -> None:
    card = rig.card("cup-debit", Purpose.SALE, 10_00)
    rig.link.down = True
    before = snapshot(rig)
    with pytest.raises(HostLinkError):
        rig.till.sale(10_00, card)
    assert snapshot(rig) == before
    assert rig.till.host_reachable is not True


def test_a_removed_card_is_a_device_error(rig: Rig) -> None:
    sale(rig)
    rig.slot.remove()
    before = snapshot(rig)
    with pytest.raises(DeviceError) as caught:
        rig.till.read_card(Purpose.REFUND, 10_00)
    assert caught.value.cashier_en
    assert snapshot(rig) == before


def test_reading_a_card_for_a_negative_amount_is_a_typed_error(rig: Rig) -> None:
    rig.slot.present("cup-debit")
    with pytest.raises(InputError):
        rig.till.read_card(Purpose.REFUND, -5)


def test_no_reader_is_a_device_error(rig: Rig) -> None:
    rig.till.reader = None
    with pytest.raises(DeviceError, match="no card reader"):
        rig.till.read_card(Purpose.SALE, 1_00)


def test_pin_card_without_a_pin_pad_fails_before_anything_is_sent(rig: Rig) -> None:
    sale(rig)  # signed on
    card = rig.card("cup-debit", Purpose.SALE, 10_00)
    rig.till.pinpad = None
    before = snapshot(rig)
    with pytest.raises(DeviceError, match="PIN pad"):
        rig.till.sale(10_00, card)
    assert snapshot(rig) == before
    assert rig.till.sale(10_00, rig.card("visa-credit", Purpose.SALE, 10_00)).approved


def test_pin_card_without_a_pin_pad_on_a_fresh_till_sends_no_money(rig: Rig) -> None:
    card = rig.card("cup-debit", Purpose.SALE, 10_00)
    rig.till.pinpad = None
    with pytest.raises(DeviceError):
        rig.till.sale(10_00, card)
    assert fin_sent(rig) == []
    assert rig.till.journal.records() == []
    assert rig.host.transactions() == []


# --- lost answers, bad MACs, A0 -------------------------------------------------------------

@pytest.mark.parametrize("fault", ["drop_after", "drop_before"])
def test_a_sale_without_answer_is_reversed(any_rig: Rig, fault: str) -> None:
    rig = any_rig
    sale(rig)
    rig.link.faults.append(fault)
    out = sale(rig, 40_00)
    assert out.status is TxnStatus.REVERSED
    assert out.next_step[1].startswith("Reversed")
    booked = rig.host.transaction((TID, out.record.batch, out.record.stan, out.record.mti))
    if fault == "drop_after":
        assert booked is not None
        assert booked.status == "reversed"
    else:
        assert booked is None
    (reversal,) = host_rows(rig, "reversal")
    assert reversal.status == "acknowledged"
    assert rig.link.sent[-1].mti == "0400"
    assert rig.link.sent[-1].get(39) == "98"
    assert rig.till.journal.open_count() == 0
    check_money_rules(rig)


def test_a_refund_advice_without_answer_is_resent_and_booked_once(rig: Rig) -> None:
    original = sale(rig).record
    rig.link.faults.append("drop_after")
    out = rig.till.refund(quote(rig, original, 30_00))
    assert out.approved
    advices = [m for m in rig.link.sent if m.mti == "0220"]
    assert len(advices) == 2
    assert advices[0].get(11) == advices[1].get(11)  # resent as it was
    (refund,) = host_rows(rig, "refund")
    assert refund.status == "approved"
    assert host_sale(rig, original)[2] == 30_00
    assert out.record.rrn == refund.rrn
    assert not any(m.mti == "0400" for m in rig.link.sent)  # never reversed
    check_money_rules(rig)


def test_an_advice_unanswered_while_the_host_is_away_stays_owed(rig: Rig) -> None:
    original = sale(rig).record
    rig.link.faults.extend(["drop_before"] * 4)
    out = rig.till.refund(quote(rig, original, 30_00))
    assert out.status is TxnStatus.UNCERTAIN
    assert "resend" in out.next_step[1]
    assert rig.till.journal.open_count() == 1
    assert host_rows(rig, "refund") == []
    # the refund in doubt counts against the original
    with pytest.raises(RefundAmountError, match="not yet confirmed"):
        quote(rig, original, 70_01)
    with pytest.raises(OriginalStateError):
        rig.till.quote_void(original)
    rig.link.down = True
    with pytest.raises(PendingError):
        sale(rig, 1_00)
    rig.link.down = False
    assert sale(rig, 1_00).approved  # the advice goes first
    assert rig.till.journal.record(out.record.id).status is TxnStatus.APPROVED
    assert host_sale(rig, original)[2] == 30_00
    check_money_rules(rig)


def test_a_bad_mac_answer_is_reversed_with_a0_and_signs_on_again(rig: Rig) -> None:
    sale(rig)
    keys = rig.till._keys()
    signons = sum(1 for m in rig.link.sent if m.mti == "0800")
    rig.link.faults.append("bad_mac")
    out = sale(rig, 40_00)
    assert out.status is TxnStatus.REVERSED
    reversal = next(m for m in rig.link.sent if m.mti == "0400")
    assert reversal.get(39) == "A0"
    assert sum(1 for m in rig.link.sent if m.mti == "0800") == signons + 1
    assert rig.till._keys() != keys
    assert host_sale(rig, out.record)[0] == "reversed"
    assert sale(rig, 5_00, "visa-credit").approved
    check_money_rules(rig)


def test_a_bad_mac_on_a_refund_advice_resends_it(rig: Rig) -> None:
    original = sale(rig).record
    rig.link.faults.append("bad_mac")
    out = rig.till.refund(quote(rig, original, 30_00))
    assert out.approved
    assert host_sale(rig, original)[2] == 30_00
    assert len(host_rows(rig, "refund")) == 1
    check_money_rules(rig)


def _corrupt_mak(rig: Rig) -> None:
    keys = rig.till._keys()
    assert keys is not None
    wrong = WorkingKeys(keys.pik, bytes(len(keys.mak)), keys.tdk)
    rig.till.journal.save_keys(wrong, rig.clock().date())
    rig.till._keys_cache = None


def test_a0_from_the_host_signs_on_again_and_retries(rig: Rig) -> None:
    sale(rig, 1_00, "visa-credit")
    _corrupt_mak(rig)
    out = sale(rig, 10_00, "visa-credit")
    assert out.approved
    refused = [r for r in rig.till.journal.records() if r.response_code == "A0"]
    assert len(refused) == 1
    assert refused[0].status is TxnStatus.DECLINED
    assert rig.till._keys() is not None
    assert rig.till._keys().mak != bytes(16)  # type: ignore[union-attr]
    check_money_rules(rig)


def test_a0_then_retry_of_a_pin_sale_asks_for_the_pin_again(rig: Rig) -> None:
    sale(rig, 1_00)
    _corrupt_mak(rig)
    out = sale(rig, 10_00)
    assert (out.status, out.code) == (TxnStatus.APPROVED, "00")


def test_a0_on_a_reversal_signs_on_and_reverses(rig: Rig) -> None:
    sale(rig)
    rig.link.faults.extend(["drop_after"] + ["drop_before"] * 3)
    out = sale(rig, 40_00)
    assert out.status is TxnStatus.UNCERTAIN
    _corrupt_mak(rig)
    n = len(rig.link.sent)
    report = rig.till.recover()
    assert (report.resolved, report.left) == (1, 0)
    assert [m.mti for m in rig.link.sent[n:]] == ["0400", "0800", "0400"]
    assert host_sale(rig, out.record)[0] == "reversed"
    assert rig.till.journal.record(out.record.id).status is TxnStatus.REVERSED
    check_money_rules(rig)


def test_a_reversal_left_due_goes_before_the_next_sale(rig: Rig) -> None:
    sale(rig)
    rig.link.faults.extend(["drop_after"] + ["drop_before"] * 3)
    out = sale(rig, 40_00)
    assert out.status is TxnStatus.UNCERTAIN
    assert "reverse" in out.next_step[1]
    assert host_sale(rig, out.record)[0] == "approved"  # booked, reversal not through yet
    with pytest.raises(OriginalStateError):
        quote(rig, out.record, 1_00)
    n = len(rig.link.sent)
    assert sale(rig, 5_00).approved
    assert [m.mti for m in rig.link.sent[n:]] == ["0400", "0200"]
    assert host_sale(rig, out.record)[0] == "reversed"
    assert rig.till.journal.record(out.record.id).status is TxnStatus.REVERSED
    check_money_rules(rig)


def test_the_host_restarting_without_keys_gets_a_new_sign_on(rig: Rig) -> None:
    sale(rig)
    for row in rig.host.terminals():  # the ledger lost the working keys
        rig.host.store.commit([replace(row, pik="", mak="", tdk="", signed_on=False)])
    out = sale(rig, 10_00, "visa-credit")
    assert out.approved
    check_money_rules(rig)


def test_the_money_rule_checker_sees_a_disagreement(rig: Rig) -> None:
    original = sale(rig).record
    assert rig.till.refund(quote(rig, original, 30_00)).approved
    check_money_rules(rig)
    conn = rig.till.journal.conn
    conn.execute("UPDATE txn SET status = 'declined' WHERE id = ?", (original.id,))
    with pytest.raises(AssertionError, match="host approved / journal declined"):
        check_money_rules(rig)
    conn.execute("UPDATE txn SET status = 'approved', amount = 10 WHERE id = ?", (original.id,))
    with pytest.raises(AssertionError, match="over-refunded in the journal"):
        check_money_rules(rig)


# --- settlement ------------------------------------------------------------------------------

def test_settlement_balanced_advances_the_batch(any_rig: Rig) -> None:
    rig = any_rig
    kept = sale(rig, 100_00).record
    voided = sale(rig, 20_00, "visa-credit").record
    sale(rig, 12_51)
    assert rig.till.void(rig.till.quote_void(voided)).approved
    assert rig.till.refund(quote(rig, kept, 30_00)).approved
    totals = rig.till.batch_totals()
    assert totals == rig.host.batch_totals(TID, "000001")
    assert (totals.domestic.debit_count, totals.domestic.debit_amount) == (1, 100_00)
    assert (totals.domestic.credit_count, totals.domestic.credit_amount) == (1, 30_00)
    assert totals.foreign.debit_count == 0
    out = rig.till.settle()
    assert (out.batch, out.balanced, out.uploaded, out.new_batch) == \
        ("000001", True, 0, "000002")
    assert rig.till.journal.batch == "000002"
    assert rig.till.journal.settled_batches() == {"000001": True}
    assert sale(rig, 1_00).record.batch == "000002"
    assert rig.till.settle().new_batch == "000003"
    check_money_rules(rig)


def test_settlement_after_a_mismatch_uploads_the_batch(rig: Rig) -> None:
    sale(rig, 100_00)
    sale(rig, 50_00, "visa-credit")
    lost = sale(rig, 7_00).record
    # the terminal lost sight of an approved sale (a damaged journal, a bug): totals differ
    rig.till.journal.conn.execute("UPDATE txn SET status = 'declined' WHERE id = ?", (lost.id,))
    assert rig.till.batch_totals() != rig.host.batch_totals(TID, "000001")
    out = rig.till.settle()
    assert not out.balanced
    assert out.uploaded == 2
    uploads = [m for m in rig.link.sent if m.mti == "0320"]
    assert len(uploads) == 3  # two items and the end
    assert rig.till.journal.settled_batches() == {"000001": False}
    assert out.new_batch == rig.till.journal.batch == "000002"


def test_settlement_resolves_what_is_owed_first(rig: Rig) -> None:
    sale(rig)
    rig.link.faults.extend(["drop_after"] + ["drop_before"] * 3)
    assert sale(rig, 40_00).status is TxnStatus.UNCERTAIN
    out = rig.till.settle()
    assert out.balanced
    assert out.totals.domestic.debit_amount == 100_00
    check_money_rules(rig)


@pytest.mark.parametrize("dialect", ["cup", "iso87"])
def test_a_re_sign_on_during_settlement_keeps_the_batch_in_step(tmp_path: Path,
                                                                dialect: str) -> None:
    rig = make_rig(tmp_path, dialect)
    rig.till.sign_on()
    rig.link.faults.append("bad_mac")  # the 0500's answer is garbled: keys lost, sign on again
    first = rig.till.settle()
    _corrupt_mak(rig)  # the next 0500 is answered A0: sign on again
    second = rig.till.settle()
    assert (first.batch, first.new_batch) == ("000001", "000002")
    assert (second.batch, second.new_batch) == ("000002", "000003")
    assert sale(rig, 10_00).approved


# --- crashes and recovery ------------------------------------------------------------------

FLOWS = ["sale", "refund", "void"]
POINTS = ["in_begin", "after_begin", "after_send", "after_answer", "after_record"]


def _run(rig: Rig, flow: str, original: TxnRecord) -> None:
    if flow == "sale":
        sale(rig, 50_00)
    elif flow == "refund":
        rig.till.refund(quote(rig, original, 30_00))
    else:
        rig.till.void(rig.till.quote_void(original))


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("flow", FLOWS)
def test_recover_after_a_crash_agrees_with_the_host(any_rig: Rig, plan: CrashPlan, flow: str,
                                                   point: str) -> None:
    rig = any_rig
    original = sale(rig).record
    plan.arm(point)
    with pytest.raises(Crash):
        _run(rig, flow, original)
    rig.restart()
    report = rig.till.recover()
    assert report.left == 0
    assert rig.till.journal.open_count() == 0
    check_money_rules(rig)
    assert rig.till.recover().resolved == 0  # a second recover has nothing to do
    assert sale(rig, 1_00).approved
    check_money_rules(rig)


@pytest.mark.parametrize("point", ["in_resolve", "after_resolve_send"])
@pytest.mark.parametrize("flow", FLOWS)
def test_a_crash_while_resolving_is_resolved_after_restart(any_rig: Rig, plan: CrashPlan,
                                                           flow: str, point: str) -> None:
    rig = any_rig
    original = sale(rig).record
    rig.link.faults.append("drop_after")
    plan.arm(point)
    with pytest.raises(Crash):
        _run(rig, flow, original)
    rig.restart()
    assert rig.till.recover().left == 0
    check_money_rules(rig)


def test_a_crash_twice_in_a_row_is_still_resolved(rig: Rig, plan: CrashPlan) -> None:
    original = sale(rig).record
    plan.arm("after_answer")
    with pytest.raises(Crash):
        rig.till.void(rig.till.quote_void(original))
    rig.restart()
    plan.arm("after_send")  # the power fails again while the reversal is on its way
    with pytest.raises(Crash):
        rig.till.recover()
    rig.restart()
    assert rig.till.recover().left == 0
    assert host_sale(rig, original)[0] == "approved"
    check_money_rules(rig)
    assert rig.till.void(rig.till.quote_void(original)).approved


def test_after_a_restart_the_next_sale_resolves_first(rig: Rig, plan: CrashPlan) -> None:
    sale(rig)
    plan.arm("after_answer")
    with pytest.raises(Crash):
        sale(rig, 40_00)
    rig.restart()
    n = len(rig.link.sent)
    assert sale(rig, 5_00).approved
    assert [m.mti for m in rig.link.sent[n:]] == ["0400", "0200"]
    check_money_rules(rig)


def test_a_crash_after_the_host_settled_is_recovered(rig: Rig, plan: CrashPlan) -> None:
    sale(rig)
    plan.arm("after_send")
    with pytest.raises(Crash):
        rig.till.settle()
    rig.restart()
    rig.till.recover()
    assert rig.till.journal.batch == "000002"
    assert sale(rig, 10_00).approved


def test_a_settlement_without_answer_is_finished_before_the_next_sale(rig: Rig) -> None:
    sale(rig)
    rig.link.faults.extend(["drop_after"] * 3)
    with pytest.raises(HostTimeoutError):
        rig.till.settle()
    assert sale(rig, 10_00).approved


# --- the iso87 dialect ----------------------------------------------------------------------

def test_iso87_sale_refund_void_and_reversal(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "iso87")
    original = sale(rig).record
    assert original.approved
    refund = rig.till.refund(quote(rig, original, 30_00))
    assert refund.approved
    assert refund.record.mti == "0200"  # iso87: an online refund, reversible
    assert host_sale(rig, original)[2] == 30_00
    rig.link.faults.append("drop_after")
    lost = rig.till.refund(quote(rig, original, 20_00))
    assert lost.status is TxnStatus.REVERSED
    reversal = rig.link.sent[-1]
    assert reversal.mti == "0400"
    assert reversal.get(11) != lost.record.stan  # f90: the reversal has its own STAN
    assert host_sale(rig, original)[2] == 30_00
    other = sale(rig, 10_00).record
    assert rig.till.void(rig.till.quote_void(other)).approved
    assert host_sale(rig, other)[0] == "voided"
    with pytest.raises(OriginalStateError):
        quote(rig, other, 1_00)
    with pytest.raises(RuleError):
        rig.till.quote_void(original)
    out = rig.till.settle()
    assert out.balanced
    check_money_rules(rig)
