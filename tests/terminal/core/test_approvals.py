"""Approval policy: who needs a supervisor for what, duplicates, daily limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.core.approvals import (
    Approval,
    ApprovalPolicy,
    ApprovalReason,
    ApprovalRequiredError,
    check_approval,
    daily_refunds,
    describe_limits,
    reason_text,
    required_approvals,
)
from terminal.core.operators import Operator, PermissionDeniedError, Role
from terminal.core.records import TxnKind, TxnRecord, TxnStatus

NOW = datetime(2024, 5, 1, 15, 0, 0)
CARD = "hash-card-1"


def make_record(**kw: Any) -> TxnRecord:
    """A journal record with sensible defaults (an approved CUP debit sale)."""
    base = TxnRecord(
        id=1, kind=TxnKind.SALE, mti="0200", stan="000001", batch="000001", amount=100_00,
        currency="156", pan_masked="622588******0019", pan_hash=CARD, scheme="CUP",
        entry_mode="051", card_label="银联借记卡", aid="A000000333010101",
        status=TxnStatus.APPROVED, response_code="00", rrn="123456789012", auth_code="654321",
        host_date="0501", host_time="143000", created_at=NOW - timedelta(hours=1),
        answered_at=NOW - timedelta(hours=1), original_id=None, original_rrn=None,
        original_batch=None, original_stan=None, original_date=None, original_amount=None,
        reason=None, note=None, operator="01", training=False)
    return replace(base, **kw)


def refund(**kw: Any) -> TxnRecord:
    defaults: dict[str, Any] = {"kind": TxnKind.REFUND, "mti": "0220", "original_id": 1,
                                "original_rrn": "123456789011", "reason": "damaged"}
    defaults.update(kw)
    return make_record(**defaults)


def op(number: str, role: Role) -> Operator:
    return Operator(number=number, name="", role=role, active=True, pw_changed_at=NOW)


CASHIER = op("01", Role.CASHIER)
CASHIER2 = op("02", Role.CASHIER)
SUP = op("00", Role.SUPERVISOR)
ADMIN = op("99", Role.ADMIN)


def need(kind: TxnKind, amount: int, who: Operator, history: list[TxnRecord],
         policy: ApprovalPolicy | None = None, **kw: Any) -> list[ApprovalReason]:
    return required_approvals(kind, amount, who, CARD, NOW, history,
                              policy or ApprovalPolicy(), **kw)


def test_small_refund_by_cashier_needs_nothing() -> None:
    assert need(TxnKind.REFUND, 500_00, CASHIER, []) == []
    assert need(TxnKind.SALE, 10_000_00, CASHIER, []) == []


def test_refund_above_the_amount_needs_a_supervisor() -> None:
    assert need(TxnKind.REFUND, 500_01, CASHIER, []) == [ApprovalReason.OVER_AMOUNT]
    assert need(TxnKind.REFUND, 500_01, SUP, []) == []
    assert need(TxnKind.REFUND, 500_01, ADMIN, []) == []
    off = ApprovalPolicy(refund_supervisor_above=None)
    assert need(TxnKind.REFUND, 10**9, CASHIER, [], off) == []


def test_configured_refund_and_void_approvals() -> None:
    policy = ApprovalPolicy(refund_needs_supervisor=True, void_needs_supervisor=True)
    assert need(TxnKind.REFUND, 1, CASHIER, [], policy) == [ApprovalReason.REFUND_ALWAYS]
    assert need(TxnKind.REFUND, 600_00, CASHIER, [], policy) == [
        ApprovalReason.REFUND_ALWAYS, ApprovalReason.OVER_AMOUNT]
    assert need(TxnKind.VOID, 1, CASHIER, [], policy) == [ApprovalReason.VOID]
    assert need(TxnKind.VOID, 1, SUP, [], policy) == []
    assert need(TxnKind.VOID, 1, CASHIER, []) == []


@pytest.mark.parametrize("status", [TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN])
def test_likely_duplicate(status: TxnStatus) -> None:
    earlier = refund(id=5, amount=30_00, status=status, created_at=NOW - timedelta(minutes=9))
    assert need(TxnKind.REFUND, 30_00, CASHIER, [earlier]) == [ApprovalReason.LIKELY_DUPLICATE]
    # Risk reasons apply to supervisors too (they confirm with their own password).
    assert need(TxnKind.REFUND, 30_00, SUP, [earlier]) == [ApprovalReason.LIKELY_DUPLICATE]


@pytest.mark.parametrize("change", [
    {"amount": 30_01}, {"pan_hash": "other-card"}, {"status": TxnStatus.DECLINED},
    {"status": TxnStatus.REVERSED}, {"created_at": NOW - timedelta(minutes=10, seconds=1)},
    {"kind": TxnKind.SALE}, {"training": True},
])
def test_not_a_duplicate(change: dict[str, Any]) -> None:
    earlier = refund(id=5, amount=30_00, created_at=NOW - timedelta(minutes=5))
    assert need(TxnKind.REFUND, 30_00, CASHIER, [replace(earlier, **change)]) == []


def test_duplicate_window_is_configurable() -> None:
    earlier = refund(id=5, amount=30_00, created_at=NOW - timedelta(minutes=20))
    assert need(TxnKind.REFUND, 30_00, CASHIER, [earlier],
                ApprovalPolicy(duplicate_window_s=1800)) == [ApprovalReason.LIKELY_DUPLICATE]


def test_operator_daily_limits() -> None:
    policy = ApprovalPolicy(operator_daily_refund_count=2, operator_daily_refund_amount=100_00)
    today = [refund(id=10, amount=40_00, pan_hash="a"), refund(id=11, amount=40_00, pan_hash="b")]
    # Third refund of the day: over the count.
    assert need(TxnKind.REFUND, 1_00, CASHIER, today, policy) == [
        ApprovalReason.OPERATOR_DAILY_LIMIT]
    # Another cashier's refunds do not count against this one.
    assert need(TxnKind.REFUND, 1_00, CASHIER2, today, policy) == []
    # Amount: 40 + 60 = 100 is at the limit, 60.01 goes over.
    one = today[:1]
    assert need(TxnKind.REFUND, 60_00, CASHIER, one, policy) == []
    assert need(TxnKind.REFUND, 60_01, CASHIER, one, policy) == [
        ApprovalReason.OPERATOR_DAILY_LIMIT]


def test_terminal_daily_limit_counts_every_operator_and_only_today() -> None:
    policy = ApprovalPolicy(terminal_daily_refund_count=2)
    history = [refund(id=10, pan_hash="a", operator="02"),
               refund(id=11, pan_hash="b", operator="03"),
               refund(id=12, pan_hash="c", created_at=NOW - timedelta(days=1)),
               refund(id=13, pan_hash="d", status=TxnStatus.DECLINED)]
    assert need(TxnKind.REFUND, 1_00, CASHIER, history, policy) == [
        ApprovalReason.TERMINAL_DAILY_LIMIT]
    assert need(TxnKind.REFUND, 1_00, CASHIER, history[1:], policy) == []
    assert need(TxnKind.REFUND, 1_00, SUP, history, policy) == [
        ApprovalReason.TERMINAL_DAILY_LIMIT]


def test_training_counts_against_training_only() -> None:
    policy = ApprovalPolicy(terminal_daily_refund_count=1)
    history = [refund(id=10, pan_hash="a", training=True)]
    assert need(TxnKind.REFUND, 1_00, CASHIER, history, policy) == []
    assert need(TxnKind.REFUND, 1_00, CASHIER, history, policy, training=True) == [
        ApprovalReason.TERMINAL_DAILY_LIMIT]


@given(st.lists(st.integers(min_value=1, max_value=1_000_00), max_size=12),
       st.integers(min_value=1, max_value=1_000_00),
       st.integers(min_value=0, max_value=2_000_00))
def test_amount_limit_matches_the_sum(amounts: list[int], new: int, limit: int) -> None:
    history = [refund(id=i + 10, amount=a, pan_hash=f"c{i}") for i, a in enumerate(amounts)]
    policy = ApprovalPolicy(terminal_daily_refund_amount=limit, refund_supervisor_above=None)
    got = need(TxnKind.REFUND, new, CASHIER, history, policy)
    assert (ApprovalReason.TERMINAL_DAILY_LIMIT in got) == (sum(amounts) + new > limit)
    assert daily_refunds(history, NOW).amount == sum(amounts)


def test_check_approval() -> None:
    reasons = [ApprovalReason.OVER_AMOUNT]
    assert check_approval([], CASHIER, None) is None
    with pytest.raises(ApprovalRequiredError) as info:
        check_approval(reasons, CASHIER, None)
    assert info.value.reasons == (ApprovalReason.OVER_AMOUNT,)
    assert "超过授权限额" in info.value.cashier_zh
    assert "above the approval amount" in info.value.cashier_en
    with pytest.raises(PermissionDeniedError):
        check_approval(reasons, CASHIER, CASHIER2)
    approval = check_approval(reasons, CASHIER, SUP)
    assert approval == Approval("00", (ApprovalReason.OVER_AMOUNT,))
    assert approval.detail() == {"approver": "00", "reasons": ["over_amount"]}
    # A supervisor confirms a risk reason with their own password.
    dup = [ApprovalReason.LIKELY_DUPLICATE]
    assert check_approval(dup, SUP, SUP) == Approval("00", (ApprovalReason.LIKELY_DUPLICATE,))
    with pytest.raises(PermissionDeniedError):
        check_approval(dup, SUP, replace(ADMIN, active=False))


def test_texts_and_policy_validation() -> None:
    for reason in ApprovalReason:
        assert " / " in reason_text(reason)
        assert reason_text(reason, "zh") != reason_text(reason, "en")
    with pytest.raises(ValueError, match="negative"):
        ApprovalPolicy(operator_daily_refund_amount=-1)
    lines = describe_limits(ApprovalPolicy(terminal_daily_refund_count=3), "en")
    assert "terminal daily refunds: 3 / -" in lines
    assert "退货授权金额: 500.00" in describe_limits(ApprovalPolicy(), "zh")
