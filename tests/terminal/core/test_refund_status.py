"""Refund status: card types, arrival windows, approved/declined/uncertain views."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from terminal.core.records import TxnStatus
from terminal.core.refund_status import (
    ArrivalWindows,
    CardType,
    NotARefundError,
    RefundState,
    card_type,
    refund_status,
)
from tests.terminal.core.test_approvals import make_record, refund

SALE = make_record(id=1, rrn="123456789011", stan="000007", host_date="0430")
REFUND = refund(id=2, stan="000009", amount=30_00, original_rrn=None, original_stan=None,
                original_date=None, rrn="123456789099", auth_code="777777", operator="03",
                reason="damaged", note="box crushed")


@pytest.mark.parametrize(("aid", "label", "scheme", "expected"), [
    ("A000000333010101", None, "CUP", CardType.DEBIT),
    ("A000000333010102", None, "CUP", CardType.CREDIT),
    ("A000000333010103", None, "CUP", CardType.QUASI_CREDIT),
    ("a000000333010102", None, None, CardType.CREDIT),
    ("A0000000031010", None, "VIS", CardType.CREDIT),
    ("A0000000032010", None, "VIS", CardType.DEBIT),
    ("A0000000043060", None, "MCC", CardType.DEBIT),
    ("A0000000041010", None, "MCC", CardType.CREDIT),
    (None, "银联借记卡", "CUP", CardType.DEBIT),
    (None, "某行信用卡", "CUP", CardType.CREDIT),
    (None, "准贷记卡", "CUP", CardType.QUASI_CREDIT),
    (None, "VISA DEBIT", "VIS", CardType.DEBIT),
    (None, None, "VIS", CardType.CREDIT),
    (None, None, "CUP", CardType.UNKNOWN),
    (None, None, None, CardType.UNKNOWN),
])
def test_card_type(aid: str | None, label: str | None, scheme: str | None,
                   expected: CardType) -> None:
    assert card_type(make_record(aid=aid, card_label=label, scheme=scheme)) is expected


def test_arrival_windows_defaults_and_config() -> None:
    w = ArrivalWindows()
    assert "1-3" in w.text(CardType.DEBIT, "en")
    assert "7-15" in w.text(CardType.CREDIT, "zh")
    assert w.text(CardType.QUASI_CREDIT) == w.text(CardType.CREDIT)
    unknown = w.text(CardType.UNKNOWN, "en")
    assert "1-3" in unknown
    assert "7-15" in unknown
    custom = ArrivalWindows(debit=("当天", "same day"))
    assert custom.text(CardType.DEBIT, "both") == "当天 / same day"


def test_approved_refund_in_open_batch() -> None:
    view = refund_status(REFUND, SALE, {})
    assert view.state is RefundState.APPROVED
    assert (view.rrn, view.auth_code, view.operator) == ("123456789099", "777777", "03")
    assert (view.original_rrn, view.original_voucher, view.original_date) == (
        "123456789011", "000007", "0430")  # from the original when the refund lacks them
    assert not view.settled
    assert view.host_agreed is None
    assert view.card_type is CardType.DEBIT
    assert view.arrival == ArrivalWindows().debit
    lines = dict(view.lines("en"))
    assert lines["Status"] == "Refund approved"
    assert lines["Reason"] == "Damaged goods: box crushed"
    assert lines["Settlement"] == "not settled yet [000001]"
    assert "1-3 working days" in lines["Expected arrival"]
    zh = dict(view.lines("zh"))
    assert zh["退货原因"] == "商品损坏: box crushed"


@pytest.mark.parametrize(("agreed", "text"), [
    (True, "settled, host agreed"), (False, "settled, host did not agree"),
    (None, "settled (host totals unknown)")])
def test_settled(agreed: bool | None, text: str) -> None:
    view = refund_status(REFUND, None, {"000001": agreed, "000000": True})
    assert view.settled
    assert view.host_agreed is agreed
    assert dict(view.lines("en"))["Settlement"] == f"{text} [000001]"


def test_declined_explains_the_code() -> None:
    view = refund_status(replace(REFUND, status=TxnStatus.DECLINED, response_code="64",
                                 rrn=None, auth_code=None), SALE, {})
    assert view.state is RefundState.DECLINED
    assert view.arrival is None
    lines = dict(view.lines("en"))
    assert lines["Declined"] == "Original amount mismatch (64)"
    assert "Expected arrival" not in lines


@pytest.mark.parametrize(("status", "pending", "word"), [
    (TxnStatus.UNCERTAIN, "advice", "resend"), (TxnStatus.PENDING, None, "ask the host"),
    (TxnStatus.UNCERTAIN, "reversal", "reverse")])
def test_uncertain_says_what_happens_next(status: TxnStatus, pending: str | None,
                                          word: str) -> None:
    view = refund_status(replace(REFUND, status=status, rrn=None), SALE, {},
                         pending_action=pending)  # type: ignore[arg-type]
    assert view.state is RefundState.UNCERTAIN
    assert view.arrival is None
    assert view.next_step is not None
    assert word in view.next_step[1]


def test_reversed_refund() -> None:
    view = refund_status(replace(REFUND, status=TxnStatus.REVERSED), SALE, {})
    assert view.state is RefundState.REVERSED
    assert "no refund" in dict(view.lines("en"))["Status"]


def test_card_type_falls_back_to_the_original() -> None:
    manual = replace(REFUND, aid=None, card_label=None)
    assert refund_status(manual, replace(SALE, aid="A000000333010102"), {}).card_type \
        is CardType.CREDIT
    assert refund_status(manual, None, {}).card_type is CardType.UNKNOWN


def test_only_refunds_and_json() -> None:
    with pytest.raises(NotARefundError):
        refund_status(SALE, None, {})
    data = json.loads(refund_status(REFUND, SALE, {}).to_json())
    assert data["state"] == "approved"
    assert data["pan_masked"] == "622588******0019"
