"""The money rules the terminal checks before it asks the host (DESIGN.md section 5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.core import rules
from terminal.core.errors import (
    CardMismatchError,
    OriginalStateError,
    RefundAmountError,
    RefundTooOldError,
    RuleError,
)
from terminal.core.records import TxnKind, TxnRecord, TxnStatus

NOW = datetime(2026, 11, 23, 10, 30)
CARD = "hash-of-the-sale-card"
OTHER = "hash-of-another-card"
AGE = 30


def sale(**kw: Any) -> TxnRecord:
    base = TxnRecord(
        id=1, kind=TxnKind.SALE, mti="0200", stan="000007", batch="000001", amount=100_00,
        currency="156", pan_masked="622588******0019", pan_hash=CARD, scheme="CUP",
        entry_mode="051", card_label="UnionPay Debit", aid="A000000333010101",
        status=TxnStatus.APPROVED, response_code="00", rrn="000000000001", auth_code="000001",
        host_date="1123", host_time="103000", created_at=NOW - timedelta(hours=1),
        answered_at=NOW - timedelta(hours=1), original_id=None, original_rrn=None,
        original_batch=None, original_stan=None, original_date=None, original_amount=None,
        reason=None, note=None, operator=None, training=False)
    return replace(base, **kw)


_ids = iter(range(100, 10_000_000))


def child(kind: TxnKind, amount: int, status: TxnStatus = TxnStatus.APPROVED) -> TxnRecord:
    return sale(id=next(_ids), kind=kind, mti="0220" if kind is TxnKind.REFUND else "0200",
                amount=amount, status=status, original_id=1, original_rrn="000000000001")


def refund_ok(original: TxnRecord, children: list[TxnRecord], amount: int, *,
              pan_hash: str = CARD, now: datetime = NOW) -> rules.Refundable:
    return rules.check_refund(original, children, pan_hash=pan_hash, amount=amount, now=now,
                              age_limit_days=AGE)


# --- check_refund ---------------------------------------------------------------------

def test_a_first_refund_up_to_the_whole_sale_is_allowed() -> None:
    left = refund_ok(sale(), [], 100_00)
    assert (left.original_amount, left.refunded, left.in_doubt, left.refundable) == \
        (100_00, 0, 0, 100_00)


def test_partial_refunds_add_up() -> None:
    kids = [child(TxnKind.REFUND, 30_00), child(TxnKind.REFUND, 20_00)]
    left = refund_ok(sale(), kids, 50_00)
    assert (left.refunded, left.refundable) == (50_00, 50_00)
    with pytest.raises(RefundAmountError, match=r"more than the refundable 50\.00"):
        refund_ok(sale(), kids, 50_01)


@pytest.mark.parametrize("status", [TxnStatus.PENDING, TxnStatus.UNCERTAIN])
def test_refunds_in_doubt_count_as_refunded(status: TxnStatus) -> None:
    kids = [child(TxnKind.REFUND, 40_00, status)]
    left = refund_ok(sale(), kids, 60_00)
    assert (left.refunded, left.in_doubt, left.refundable) == (0, 40_00, 60_00)
    with pytest.raises(RefundAmountError, match="not yet confirmed"):
        refund_ok(sale(), kids, 60_01)


@pytest.mark.parametrize("status", [TxnStatus.DECLINED, TxnStatus.REVERSED])
def test_declined_and_reversed_refunds_do_not_count(status: TxnStatus) -> None:
    assert refund_ok(sale(), [child(TxnKind.REFUND, 100_00, status)], 100_00).refundable == 100_00


@pytest.mark.parametrize("amount", [0, -1, -100_00])
def test_zero_and_negative_refunds_are_refused(amount: int) -> None:
    with pytest.raises(RefundAmountError, match=r"more than 0\.00"):
        refund_ok(sale(), [], amount)


def test_a_refund_over_the_sale_is_refused() -> None:
    with pytest.raises(RefundAmountError):
        refund_ok(sale(), [], 100_01)


def test_a_fully_refunded_sale_refuses_even_one_fen() -> None:
    with pytest.raises(RefundAmountError):
        refund_ok(sale(), [child(TxnKind.REFUND, 100_00)], 1)


def test_another_card_is_refused() -> None:
    with pytest.raises(CardMismatchError) as caught:
        refund_ok(sale(), [], 10_00, pan_hash=OTHER)
    assert "622588******0019" in caught.value.message


@pytest.mark.parametrize("status", [TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN])
def test_a_voided_sale_cannot_be_refunded(status: TxnStatus) -> None:
    with pytest.raises(OriginalStateError, match="voided"):
        refund_ok(sale(), [child(TxnKind.VOID, 100_00, status)], 10_00)


@pytest.mark.parametrize("status", [TxnStatus.DECLINED, TxnStatus.REVERSED])
def test_a_void_that_did_not_stand_does_not_block_a_refund(status: TxnStatus) -> None:
    refund_ok(sale(), [child(TxnKind.VOID, 100_00, status)], 10_00)


@pytest.mark.parametrize("status", [s for s in TxnStatus if s is not TxnStatus.APPROVED])
def test_only_approved_sales_can_be_refunded(status: TxnStatus) -> None:
    with pytest.raises(OriginalStateError, match="not an approved sale"):
        refund_ok(sale(status=status), [], 10_00)


@pytest.mark.parametrize("kind", [TxnKind.REFUND, TxnKind.VOID, TxnKind.BALANCE])
def test_only_sales_can_be_refunded(kind: TxnKind) -> None:
    with pytest.raises(OriginalStateError):
        refund_ok(sale(kind=kind), [], 10_00)


def test_the_age_limit() -> None:
    refund_ok(sale(created_at=NOW - timedelta(days=AGE)), [], 10_00)  # at the limit: allowed
    with pytest.raises(RefundTooOldError, match="older than 30 days"):
        refund_ok(sale(created_at=NOW - timedelta(days=AGE + 1)), [], 10_00)
    with pytest.raises(RefundTooOldError):
        rules.check_refund(sale(created_at=NOW - timedelta(days=1)), [], pan_hash=CARD,
                           amount=10_00, now=NOW, age_limit_days=0)


@pytest.mark.parametrize(("original", "amount", "pan_hash"), [
    (sale(), 0, CARD), (sale(), 1, OTHER), (sale(status=TxnStatus.DECLINED), 1, CARD)])
def test_refusals_are_rule_errors_with_cashier_texts(original: TxnRecord, amount: int,
                                                     pan_hash: str) -> None:
    with pytest.raises(RuleError) as caught:
        refund_ok(original, [], amount, pan_hash=pan_hash)
    assert caught.value.cashier_zh
    assert caught.value.cashier_en


_child = st.builds(child, st.sampled_from([TxnKind.REFUND, TxnKind.VOID]),
                   st.integers(1, 100_00), st.sampled_from(list(TxnStatus)))


@given(st.lists(_child, max_size=6), st.integers(-10, 101_00))
def test_check_refund_agrees_with_the_model(kids: list[TxnRecord], amount: int) -> None:
    live = (TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN)
    voided = any(k.kind is TxnKind.VOID and k.status in live for k in kids)
    spoken_for = sum(k.amount for k in kids if k.kind is TxnKind.REFUND and k.status in live)
    allowed = not voided and 0 < amount <= 100_00 - spoken_for
    try:
        left = refund_ok(sale(), kids, amount)
    except (RefundAmountError, OriginalStateError):
        assert not allowed
    else:
        assert allowed
        assert left.refundable == 100_00 - spoken_for
    assert rules.is_voided(kids) == voided


# --- check_void -------------------------------------------------------------------------

def void_ok(original: TxnRecord, children: list[TxnRecord], *, pan_hash: str | None = CARD,
            batch: str = "000001") -> None:
    rules.check_void(original, children, pan_hash=pan_hash, open_batch=batch)


def test_a_fresh_sale_of_the_open_batch_can_be_voided() -> None:
    void_ok(sale(), [])
    void_ok(sale(), [], pan_hash=None)  # keyed from the journal: no card presented
    void_ok(sale(), [child(TxnKind.VOID, 100_00, TxnStatus.DECLINED)])
    void_ok(sale(), [child(TxnKind.VOID, 100_00, TxnStatus.REVERSED)])
    void_ok(sale(), [child(TxnKind.REFUND, 10_00, TxnStatus.DECLINED)])
    void_ok(sale(), [child(TxnKind.REFUND, 10_00, TxnStatus.REVERSED)])


@pytest.mark.parametrize("status", [TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN])
def test_void_twice_is_refused(status: TxnStatus) -> None:
    with pytest.raises(OriginalStateError, match="already voided"):
        void_ok(sale(), [child(TxnKind.VOID, 100_00, status)])


@pytest.mark.parametrize("status", [TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN])
def test_a_refunded_sale_cannot_be_voided(status: TxnStatus) -> None:
    with pytest.raises(OriginalStateError, match="has refunds"):
        void_ok(sale(), [child(TxnKind.REFUND, 1, status)])


def test_another_batch_cannot_be_voided() -> None:
    with pytest.raises(OriginalStateError, match="refund it instead"):
        void_ok(sale(), [], batch="000002")


def test_void_with_another_card_is_refused() -> None:
    with pytest.raises(CardMismatchError):
        void_ok(sale(), [], pan_hash=OTHER)


@pytest.mark.parametrize("status", [s for s in TxnStatus if s is not TxnStatus.APPROVED])
def test_only_approved_sales_can_be_voided(status: TxnStatus) -> None:
    with pytest.raises(OriginalStateError, match="not an approved sale"):
        void_ok(sale(status=status), [])


@pytest.mark.parametrize("kind", [TxnKind.REFUND, TxnKind.VOID, TxnKind.BALANCE])
def test_only_sales_can_be_voided(kind: TxnKind) -> None:
    with pytest.raises(OriginalStateError):
        void_ok(sale(kind=kind), [])
