"""The cashier's rules through :class:`Session` over the host's real rules in memory (issue 8).

Every refusal checks that nothing moved: the host booked nothing new, nothing new
went on the wire, and the journal (rows, follow-ups, STAN counter) is as it was.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from terminal.core.approvals import (
    Approval,
    ApprovalPolicy,
    ApprovalReason,
    ApprovalRequiredError,
)
from terminal.core.audit import AuditAction
from terminal.core.errors import HostLinkError, OriginalNotFoundError
from terminal.core.operators import (
    MAX_TRIES,
    OperatorLockedError,
    OperatorStore,
    PermissionDeniedError,
    WrongPasswordError,
)
from terminal.core.ports import CardRead, Purpose
from terminal.core.receipts import Copy, render_text
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.refund_status import CardType, RefundState
from terminal.core.session import NotLoggedInError, Session, save_policy
from terminal.core.till import Outcome, RefundQuote
from tests.terminal.core.harness import TID, Rig, check_money_rules, make_rig, snapshot

ADMIN_PW, SUPER_PW, CASH1_PW, CASH2_PW = "admin-9999", "super-0000", "cash-0101", "cash-0202"
DAMAGED = RefundReason.DAMAGED


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return make_rig(tmp_path)


def session_of(rig: Rig, *, operator: str | None = "01",
               policy: ApprovalPolicy | None = None) -> Session:
    """A Session over the rig's till: operators 99/00/01/02 exist; ``operator`` logged in."""
    if policy is not None:
        save_policy(rig.till, policy)
    session = Session(rig.till)
    # cheap scrypt for speed: every stored hash carries its own cost
    session.operators = OperatorStore(rig.till.journal.conn, rig.clock, audit=session.audit,
                                      scrypt_n=2**8)
    if not session.has_operators:
        session.operators.bootstrap(ADMIN_PW, SUPER_PW)
        admin = session.operators.login("99", ADMIN_PW)
        session.operators.add("01", CASH1_PW, by=admin, name="Li")
        session.operators.add("02", CASH2_PW, by=admin, name="Wang")
    if operator is not None:
        session.login(operator, {"99": ADMIN_PW, "00": SUPER_PW, "01": CASH1_PW,
                                 "02": CASH2_PW}[operator])
    return session


def card(rig: Rig, name: str = "cup-debit", purpose: Purpose = Purpose.SALE,
         amount: int = 0) -> CardRead:
    return rig.card(name, purpose, amount)


def sale(session: Session, rig: Rig, amount: int, name: str = "cup-debit") -> TxnRecord:
    out = session.sale(amount, card(rig, name, Purpose.SALE, amount))
    assert out.approved, out
    return out.record


def quote(session: Session, rig: Rig, original: TxnRecord, amount: int,
          name: str = "cup-debit") -> RefundQuote:
    return session.quote_refund(original, card(rig, name, Purpose.REFUND, amount), amount,
                                DAMAGED)


def approve(session: Session, kind: TxnKind, amount: int, read: CardRead | None,
            supervisor: str = "00", password: str = SUPER_PW) -> Approval:
    reasons = session.required_approvals(kind, amount, read)
    assert reasons, "expected an approval to be needed"
    approval = session.approve(reasons, supervisor, password)
    assert approval is not None
    return approval


def refund(session: Session, rig: Rig, original: TxnRecord, amount: int,
           name: str = "cup-debit") -> Outcome:
    q = quote(session, rig, original, amount, name)
    return session.refund(q)


def audit_actions(session: Session) -> list[AuditAction]:
    return [e.action for e in session.audit.entries()]


# --- logged in -----------------------------------------------------------------------------

def test_a_terminal_with_operators_refuses_money_without_a_login(rig: Rig) -> None:
    session = session_of(rig, operator=None)
    read = card(rig)
    before = snapshot(rig)
    with pytest.raises(NotLoggedInError):
        session.sale(10_00, read)
    assert snapshot(rig) == before


def test_operator_number_is_on_the_record_and_the_receipt(rig: Rig) -> None:
    session = session_of(rig)
    record = sale(session, rig, 10_00)
    assert record.operator == "01"
    text = render_text(session.receipt(record, Copy.MERCHANT, lang="en"), 42)
    assert "OPERATOR" in text
    assert " 01\n" in text


# --- refunds above the approval amount -------------------------------------------------------

def test_cashier_refund_over_the_limit_without_approval_sends_nothing(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 800_00)
    q = quote(session, rig, original, 600_00)
    assert session.required_approvals(TxnKind.REFUND, 600_00, q.card) == \
        [ApprovalReason.OVER_AMOUNT]
    entries = len(session.audit.entries())
    before = snapshot(rig)
    with pytest.raises(ApprovalRequiredError) as info:
        session.refund(q)
    assert info.value.reasons == (ApprovalReason.OVER_AMOUNT,)
    assert "approval above" in info.value.cashier_en.lower() or \
        "above the approval amount" in info.value.cashier_en
    assert snapshot(rig) == before  # host, wire and journal unchanged
    assert len(session.audit.entries()) == entries
    # exactly at the limit needs none
    assert session.required_approvals(TxnKind.REFUND, 500_00, q.card) == []


def test_an_approval_for_something_else_does_not_cover_the_refund(rig: Rig) -> None:
    session = session_of(rig, policy=ApprovalPolicy(void_needs_supervisor=True))
    original = sale(session, rig, 800_00)
    void_approval = approve(session, TxnKind.VOID, 800_00, None)
    q = quote(session, rig, original, 600_00)
    before = snapshot(rig)
    with pytest.raises(ApprovalRequiredError):
        session.refund(q, approval=void_approval)
    assert snapshot(rig) == before


def test_with_the_right_approval_it_goes_and_the_audit_names_the_approver(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 800_00)
    q = quote(session, rig, original, 600_00)
    approval = approve(session, TxnKind.REFUND, 600_00, q.card)
    assert approval == Approval("00", (ApprovalReason.OVER_AMOUNT,))
    out = session.refund(q, approval=approval)
    assert out.approved
    assert out.record.operator == "01"
    (host_refund,) = [t for t in rig.host.transactions() if t.kind == "refund"]
    assert (host_refund.status, host_refund.amount) == ("approved", 600_00)
    (granted,) = session.audit.entries(action=AuditAction.APPROVAL)
    assert (granted.operator, granted.approver) == ("01", "00")
    assert granted.detail == {"approver": "00", "reasons": ["over_amount"]}
    (done,) = session.audit.entries(action=AuditAction.REFUND)
    assert (done.operator, done.approver, done.txn_id) == ("01", "00", out.record.id)
    assert done.detail["reason"] == "damaged"
    assert done.detail["status"] == "approved"
    assert done.detail["approval"] == {"approver": "00", "reasons": ["over_amount"]}
    check_money_rules(rig)


def test_the_administrator_can_approve_too(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 800_00)
    q = quote(session, rig, original, 700_00)
    approval = approve(session, TxnKind.REFUND, 700_00, q.card, "99", ADMIN_PW)
    assert session.refund(q, approval=approval).approved
    assert session.audit.entries(action=AuditAction.REFUND)[0].approver == "99"


def test_a_cashier_cannot_approve_and_nothing_is_sent(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 800_00)
    q = quote(session, rig, original, 600_00)
    before = snapshot(rig)
    with pytest.raises(PermissionDeniedError):
        session.approve([ApprovalReason.OVER_AMOUNT], "02", CASH2_PW)
    with pytest.raises(ApprovalRequiredError):
        session.refund(q)
    assert snapshot(rig) == before
    assert session.audit.entries(action=AuditAction.APPROVAL) == []


@pytest.mark.parametrize("who", ["00", "99"])
def test_a_supervisor_refunding_holds_the_authority_already(rig: Rig, who: str) -> None:
    session = session_of(rig, operator=who)
    original = sale(session, rig, 800_00)
    q = quote(session, rig, original, 600_00)
    assert session.required_approvals(TxnKind.REFUND, 600_00, q.card) == []
    assert session.refund(q).approved


def test_refunds_need_a_supervisor_when_configured(rig: Rig) -> None:
    session = session_of(rig, policy=ApprovalPolicy(refund_needs_supervisor=True))
    original = sale(session, rig, 100_00)
    q = quote(session, rig, original, 1_00)
    before = snapshot(rig)
    with pytest.raises(ApprovalRequiredError) as info:
        session.refund(q)
    assert info.value.reasons == (ApprovalReason.REFUND_ALWAYS,)
    assert snapshot(rig) == before
    assert session.refund(q, approval=approve(session, TxnKind.REFUND, 1_00, q.card)).approved


# --- lockout ------------------------------------------------------------------------------

def test_a_wrong_supervisor_password_counts_towards_lockout(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 800_00)
    q = quote(session, rig, original, 600_00)
    reasons = session.required_approvals(TxnKind.REFUND, 600_00, q.card)
    before = snapshot(rig)
    for left in range(MAX_TRIES - 1, 0, -1):
        with pytest.raises(WrongPasswordError) as wrong:
            session.approve(reasons, "00", "not-it")
        assert wrong.value.tries_left == left
    with pytest.raises(OperatorLockedError):  # the fifth wrong try locks
        session.approve(reasons, "00", "not-it")
    assert session.operators.get("00").locked_until == rig.clock() + session.operators.lockout
    # locked: the right password no longer approves, nor logs in
    with pytest.raises(OperatorLockedError):
        session.approve(reasons, "00", SUPER_PW)
    with pytest.raises(OperatorLockedError):
        Session(rig.till).login("00", SUPER_PW)
    with pytest.raises(ApprovalRequiredError):
        session.refund(q)
    assert snapshot(rig) == before
    failed = session.audit.entries(action=AuditAction.LOGIN_FAILED, operator="00")
    assert [e.detail.get("why") for e in failed][:MAX_TRIES] == ["wrong_password"] * MAX_TRIES
    assert session.audit.entries(action=AuditAction.APPROVAL) == []
    # the administrator unlocks the supervisor; the approval goes through
    admin = session.operators.login("99", ADMIN_PW)
    session.operators.unlock("00", by=admin)
    assert session.refund(q, approval=session.approve(reasons, "00", SUPER_PW)).approved


def test_a_good_password_resets_the_count(rig: Rig) -> None:
    session = session_of(rig)
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(WrongPasswordError):
            session.approve([ApprovalReason.OVER_AMOUNT], "00", "nope")
    assert session.approve([ApprovalReason.OVER_AMOUNT], "00", SUPER_PW) is not None
    with pytest.raises(WrongPasswordError) as wrong:
        session.approve([ApprovalReason.OVER_AMOUNT], "00", "nope")
    assert wrong.value.tries_left == MAX_TRIES - 1


def lock(session: Session, number: str) -> None:
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(WrongPasswordError):
            session.login(number, "wrong-password")
    with pytest.raises(OperatorLockedError):
        session.login(number, "wrong-password")


def test_a_locked_cashier_cannot_log_in_until_unlocked(rig: Rig) -> None:
    session = session_of(rig, operator=None)
    lock(session, "01")
    with pytest.raises(OperatorLockedError):
        session.login("01", CASH1_PW)
    assert session.operator is None
    supervisor = session.operators.login("00", SUPER_PW)
    with pytest.raises(PermissionDeniedError):  # nobody unlocks themselves
        session.operators.unlock("01", by=session.operators.login("02", CASH2_PW))
    session.operators.unlock("01", by=supervisor)
    assert session.login("01", CASH1_PW).number == "01"
    (unlocked,) = session.audit.entries(action=AuditAction.UNLOCK)
    assert (unlocked.operator, unlocked.detail) == ("00", {"number": "01"})


def test_a_locked_cashier_can_log_in_when_the_lock_time_has_passed(rig: Rig) -> None:
    session = session_of(rig, operator=None)
    lock(session, "01")
    rig.clock.advance(seconds=session.operators.lockout.total_seconds() - 1)
    with pytest.raises(OperatorLockedError):
        session.login("01", CASH1_PW)
    rig.clock.advance(seconds=2)
    assert session.login("01", CASH1_PW).number == "01"


def test_a_lock_survives_a_restart(rig: Rig) -> None:
    session = session_of(rig, operator=None)
    lock(session, "01")
    rig.restart()
    again = session_of(rig, operator=None)
    with pytest.raises(OperatorLockedError):
        again.login("01", CASH1_PW)


# --- likely duplicates ----------------------------------------------------------------------

def test_a_likely_duplicate_refund_needs_approval(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 300_00)
    assert refund(session, rig, original, 100_00).approved
    rig.clock.advance(minutes=9)
    q = quote(session, rig, original, 100_00)
    assert session.required_approvals(TxnKind.REFUND, 100_00, q.card) == \
        [ApprovalReason.LIKELY_DUPLICATE]
    before = snapshot(rig)
    with pytest.raises(ApprovalRequiredError) as info:
        session.refund(q)
    assert info.value.reasons == (ApprovalReason.LIKELY_DUPLICATE,)
    assert snapshot(rig) == before
    # another amount, or another card, is no duplicate
    assert session.required_approvals(TxnKind.REFUND, 99_99, q.card) == []
    other = card(rig, "cup-credit", Purpose.REFUND, 100_00)
    assert session.required_approvals(TxnKind.REFUND, 100_00, other) == []
    out = session.refund(q, approval=approve(session, TxnKind.REFUND, 100_00, q.card))
    assert out.approved
    assert session.audit.entries(action=AuditAction.REFUND)[-1].detail["approval"] == \
        {"approver": "00", "reasons": ["likely_duplicate"]}


def test_a_duplicate_older_than_ten_minutes_needs_nothing(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 300_00)
    assert refund(session, rig, original, 100_00).approved
    rig.clock.advance(minutes=10, seconds=1)
    q = quote(session, rig, original, 100_00)
    assert session.required_approvals(TxnKind.REFUND, 100_00, q.card) == []
    assert session.refund(q).approved


def test_a_supervisor_confirms_a_duplicate_with_their_own_password(rig: Rig) -> None:
    session = session_of(rig, operator="00")
    original = sale(session, rig, 300_00)
    assert refund(session, rig, original, 100_00).approved
    q = quote(session, rig, original, 100_00)
    with pytest.raises(ApprovalRequiredError):
        session.refund(q)
    approval = approve(session, TxnKind.REFUND, 100_00, q.card, "00", SUPER_PW)
    assert session.refund(q, approval=approval).approved
    assert session.audit.entries(action=AuditAction.APPROVAL)[-1].approver == "00"


def test_a_declined_refund_is_no_duplicate(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 300_00)
    external = rig.till.find_by_rrn("999999999999", rig.clock().strftime("%m%d"))
    q = session.quote_refund(external, card(rig, purpose=Purpose.REFUND), 100_00, DAMAGED)
    assert session.refund(q).status is TxnStatus.DECLINED  # 25: the host has no such RRN
    assert session.required_approvals(TxnKind.REFUND, 100_00, q.card) == []
    assert refund(session, rig, original, 100_00).approved


# --- daily limits ---------------------------------------------------------------------------

def test_daily_limits_per_operator_and_terminal_hold_across_restarts(rig: Rig) -> None:
    policy = ApprovalPolicy(operator_daily_refund_count=2, terminal_daily_refund_count=3)
    session = session_of(rig, policy=policy)
    original = sale(session, rig, 500_00)
    for amount in (1_00, 2_00):
        assert refund(session, rig, original, amount).approved
    rig.restart()
    session = session_of(rig)  # the policy comes from the journal
    assert session.policy == policy
    q = quote(session, rig, original, 3_00)
    assert session.required_approvals(TxnKind.REFUND, 3_00, q.card) == \
        [ApprovalReason.OPERATOR_DAILY_LIMIT]
    before = snapshot(rig)
    with pytest.raises(ApprovalRequiredError):
        session.refund(q)
    assert snapshot(rig) == before
    # another cashier still has their own allowance: the terminal's third refund
    rig.restart()
    session = session_of(rig, operator="02")
    assert refund(session, rig, original, 4_00).approved
    rig.restart()
    session = session_of(rig, operator="02")
    q = quote(session, rig, original, 5_00)
    assert session.required_approvals(TxnKind.REFUND, 5_00, q.card) == \
        [ApprovalReason.TERMINAL_DAILY_LIMIT]
    with pytest.raises(ApprovalRequiredError):
        session.refund(q)
    # a supervisor overrides the limit
    out = session.refund(q, approval=approve(session, TxnKind.REFUND, 5_00, q.card))
    assert out.approved
    (last,) = [e for e in session.audit.entries(action=AuditAction.REFUND)
               if e.txn_id == out.record.id]
    assert last.detail["approval"]["reasons"] == ["terminal_daily_limit"]
    # a new day starts the count again
    rig.clock.advance(days=1)
    rig.restart()
    session = session_of(rig)
    assert refund(session, rig, original, 6_00).approved
    check_money_rules(rig)


def test_daily_amount_limits(rig: Rig) -> None:
    policy = ApprovalPolicy(operator_daily_refund_amount=100_00,
                            terminal_daily_refund_amount=150_00)
    session = session_of(rig, policy=policy)
    original = sale(session, rig, 400_00)
    assert refund(session, rig, original, 60_00).approved
    read = card(rig, purpose=Purpose.REFUND)
    assert session.required_approvals(TxnKind.REFUND, 40_00, read) == []
    assert session.required_approvals(TxnKind.REFUND, 40_01, read) == \
        [ApprovalReason.OPERATOR_DAILY_LIMIT]
    rig.restart()
    session = session_of(rig, operator="02")
    read = card(rig, purpose=Purpose.REFUND)
    assert session.required_approvals(TxnKind.REFUND, 90_01, read) == \
        [ApprovalReason.TERMINAL_DAILY_LIMIT]
    assert session.required_approvals(TxnKind.REFUND, 90_00, read) == []


def test_an_uncertain_refund_counts_against_the_limit(rig: Rig) -> None:
    session = session_of(rig, policy=ApprovalPolicy(operator_daily_refund_count=1))
    original = sale(session, rig, 100_00)
    rig.link.faults.extend(["drop_before"] * 10)
    assert refund(session, rig, original, 10_00).status is TxnStatus.UNCERTAIN
    rig.restart()
    session = session_of(rig)
    read = card(rig, purpose=Purpose.REFUND)
    assert session.required_approvals(TxnKind.REFUND, 20_00, read) == \
        [ApprovalReason.OPERATOR_DAILY_LIMIT]


# --- voids ------------------------------------------------------------------------------

def test_voids_need_no_approval_unless_configured(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 800_00)
    assert session.required_approvals(TxnKind.VOID, 800_00, None) == []
    assert session.void(session.quote_void(original)).approved


def test_voids_need_approval_when_configured(rig: Rig) -> None:
    session = session_of(rig, policy=ApprovalPolicy(void_needs_supervisor=True))
    original = sale(session, rig, 80_00)
    q = session.quote_void(original)
    before = snapshot(rig)
    with pytest.raises(ApprovalRequiredError) as info:
        session.void(q)
    assert info.value.reasons == (ApprovalReason.VOID,)
    assert snapshot(rig) == before
    out = session.void(q, approval=approve(session, TxnKind.VOID, 80_00, None))
    assert out.approved
    (voided,) = session.audit.entries(action=AuditAction.VOID)
    assert (voided.operator, voided.approver, voided.txn_id) == ("01", "00", out.record.id)
    host_sale = rig.host.transaction((TID, original.batch, original.stan, original.mti))
    assert host_sale is not None
    assert host_sale.status == "voided"
    # a supervisor voids without asking anyone
    sup = session_of(rig, operator="00")
    assert sup.required_approvals(TxnKind.VOID, 80_00, None) == []
    check_money_rules(rig)


# --- reports against the journal and the host -------------------------------------------------

def book_mixed_day(session: Session, rig: Rig) -> dict[str, TxnRecord]:
    """Sales on three cards, partial refunds, a void, a declined magic amount, a reversed sale."""
    debit = sale(session, rig, 100_00)
    visa = sale(session, rig, 50_00, "visa-credit")
    credit = sale(session, rig, 80_00, "cup-credit")
    voided = sale(session, rig, 20_00)
    declined = session.sale(12_51, card(rig, amount=12_51))
    assert declined.status is TxnStatus.DECLINED
    rig.link.faults.append("drop_after")  # the host booked it; the answer is lost
    reversed_ = session.sale(33_00, card(rig, amount=33_00))
    assert reversed_.status is TxnStatus.REVERSED
    assert refund(session, rig, debit, 30_00).approved
    assert refund(session, rig, debit, 10_00).approved
    assert refund(session, rig, visa, 20_00, "visa-credit").approved
    assert refund(session, rig, credit, 5_00, "cup-credit").approved
    assert session.void(session.quote_void(voided)).approved
    return {"debit": debit, "visa": visa, "credit": credit, "voided": voided,
            "declined": declined.record, "reversed": reversed_.record}


def test_report_totals_equal_the_journal_and_the_host(rig: Rig) -> None:
    session = session_of(rig)
    booked = book_mixed_day(session, rig)
    report = session.report()
    # the journal's own numbers
    records = list(rig.till.journal.iter_all())
    voided_ids = {r.original_id for r in records
                  if r.kind is TxnKind.VOID and r.status is TxnStatus.APPROVED}
    sales = [r for r in records if r.kind is TxnKind.SALE
             and r.status is TxnStatus.APPROVED and r.id not in voided_ids]
    refunds = [r for r in records if r.kind is TxnKind.REFUND and r.status is TxnStatus.APPROVED]
    assert (report.sales.count, report.sales.amount) == \
        (len(sales), sum(r.amount for r in sales)) == (3, 230_00)
    assert (report.refunds.count, report.refunds.amount) == \
        (len(refunds), sum(r.amount for r in refunds)) == (4, 65_00)
    assert (report.voids.count, report.voids.amount) == (1, 20_00)
    assert report.declined == 1
    assert report.unresolved.count == 0
    assert report.net == 165_00
    assert report.refunds_by_reason == {"damaged": report.refunds}
    assert set(report.refunds_by_operator) == {"01"}
    assert report.refunds_by_card_type[CardType.DEBIT.value].amount == 40_00
    assert report.refunds_by_card_type[CardType.CREDIT.value].amount == 25_00
    # ... the till's batch totals and the host's, before settlement
    assert report.settlement_totals() == rig.till.batch_totals() == \
        rig.host.batch_totals(TID, "000001")
    host = [t for t in rig.host.transactions() if t.tid == TID]
    host_sales = [t for t in host if t.kind == "sale" and t.status == "approved"]
    host_refunds = [t for t in host if t.kind == "refund" and t.status == "approved"]
    assert sum(t.amount or 0 for t in host_sales) == report.sales.amount
    assert sum(t.amount or 0 for t in host_refunds) == report.refunds.amount
    statuses = {t.stan: t.status for t in host if t.kind == "sale"}
    assert statuses[booked["voided"].stan] == "voided"
    assert statuses[booked["declined"].stan] == "declined"
    assert statuses[booked["reversed"].stan] == "reversed"
    # ... and after settlement, the batch report is what the host settled
    out = session.settle()
    assert out.balanced
    assert out.uploaded == 0
    batch = session.report(batch="000001")
    assert batch.settlement_totals() == out.totals == rig.host.batch_totals(TID, "000001")
    assert (batch.sales, batch.refunds, batch.voids) == \
        (report.sales, report.refunds, report.voids)
    assert [s["balanced"] for s in batch.settlements] == [1]
    (settled,) = session.audit.entries(action=AuditAction.SETTLEMENT)
    assert settled.detail["balanced"] is True
    assert settled.operator == "01"
    # the day report still holds the same day after the batch closed
    assert session.report().sales == report.sales
    check_money_rules(rig)


def test_range_report_and_export_agree_with_the_day(rig: Rig) -> None:
    session = session_of(rig)
    book_mixed_day(session, rig)
    day = session.report()
    start = rig.clock() - timedelta(hours=1)
    ranged = session.report(start=start, end=rig.clock() + timedelta(hours=1))
    assert (ranged.sales, ranged.refunds, ranged.voids) == (day.sales, day.refunds, day.voids)
    csv_text = session.export("csv")
    assert csv_text.count("\n") == len(list(rig.till.journal.iter_all())) + 1
    assert "6225880000000019" not in csv_text
    assert "622588******0019" in csv_text


# --- refund status ------------------------------------------------------------------------

def test_refund_status_of_an_approved_refund_before_and_after_settlement(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 100_00)
    out = refund(session, rig, original, 40_00)
    record = session.find_refund(voucher=out.record.voucher)
    assert record.id == out.record.id
    assert session.find_refund(rrn=out.record.rrn).id == record.id
    view = session.refund_status(record)
    assert view.state is RefundState.APPROVED
    assert (view.rrn, view.auth_code, view.original_rrn) == \
        (out.record.rrn, out.record.auth_code, original.rrn)
    assert (view.operator, view.reason, view.amount) == ("01", "damaged", 40_00)
    assert view.card_type is CardType.DEBIT
    assert view.arrival == session.windows.debit
    assert not view.settled
    session.settle()
    view = session.refund_status(record)
    assert view.settled
    assert view.host_agreed is True
    lines = dict(view.lines("en"))
    assert lines["Settlement"] == "settled, host agreed [000001]"
    assert lines["Expected arrival"] == "1-3 working days after settlement"
    proof = render_text(session.refund_proof(record, lang="en"), 42)
    assert out.record.rrn
    assert out.record.rrn in proof
    assert original.rrn
    assert original.rrn in proof
    assert "40.00" in proof
    assert session.audit.entries(action=AuditAction.REPRINT)[-1].detail == \
        {"copy": "refund_proof"}


def test_refund_status_of_a_credit_card_refund_has_the_credit_window(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 50_00, "visa-credit")
    view = session.refund_status(refund(session, rig, original, 5_00, "visa-credit").record)
    assert view.card_type is CardType.CREDIT
    assert view.arrival == session.windows.credit


def test_refund_status_of_a_declined_refund(rig: Rig) -> None:
    session = session_of(rig)
    external = rig.till.find_by_rrn("999999999999", rig.clock().strftime("%m%d"))
    q = session.quote_refund(external, card(rig, purpose=Purpose.REFUND), 10_00, DAMAGED)
    out = session.refund(q)
    assert out.status is TxnStatus.DECLINED
    view = session.refund_status(out.record)
    assert view.state is RefundState.DECLINED
    assert view.response_code == "25"
    assert view.decline is not None
    assert view.arrival is None
    assert view.original_rrn == "999999999999"


def test_refund_status_of_an_uncertain_refund_and_its_resolution(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 100_00)
    # the host books the refund but its answer is lost, then every resend goes unanswered
    rig.link.faults.extend(["drop_after"] + ["drop_before"] * 10)
    out = refund(session, rig, original, 25_00)
    assert out.status is TxnStatus.UNCERTAIN
    rig.link.faults.clear()
    rig.link.down = True
    view = session.refund_status(out.record)
    assert view.state is RefundState.UNCERTAIN
    assert view.next_step is not None
    assert "advice" in view.next_step[1]
    assert view.arrival is None
    booked = [t for t in rig.host.transactions() if t.kind == "refund"]
    assert [t.status for t in booked] == ["approved"]
    # still down: resolving leaves it open
    assert session.resolve().left == 1
    assert session.refund_status(session.till.journal.record(out.record.id)).state \
        is RefundState.UNCERTAIN
    rig.link.down = False
    report = session.resolve()
    assert (report.resolved, report.left) == (1, 0)
    record = session.till.journal.record(out.record.id)
    view = session.refund_status(record)
    assert view.state is RefundState.APPROVED
    assert view.rrn == booked[0].rrn
    assert len([t for t in rig.host.transactions() if t.kind == "refund"]) == 1
    check_money_rules(rig)


def test_refund_status_refuses_a_sale(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 10_00)
    with pytest.raises(OriginalNotFoundError):
        session.find_refund(voucher=original.voucher)


# --- history, reprints ----------------------------------------------------------------------

def test_history_lists_refunds_with_status(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 100_00)
    refund(session, rig, original, 10_00)
    refund(session, rig, original, 20_00)
    items = session.history(original)
    assert [(r.amount, v.state if v else None) for r, v in items] == \
        [(10_00, RefundState.APPROVED), (20_00, RefundState.APPROVED)]


@pytest.mark.parametrize(("lang", "mark"), [("zh", "重打印"), ("en", "DUPLICATE")])
def test_a_reprint_is_marked_and_audited(rig: Rig, lang: str, mark: str) -> None:
    session = session_of(rig)
    record = sale(session, rig, 10_00)
    first = render_text(session.receipt(record, Copy.CARDHOLDER, lang=lang), 32)
    assert mark not in first
    assert session.audit.entries(action=AuditAction.REPRINT) == []
    again = render_text(session.receipt(record, Copy.CARDHOLDER, lang=lang, reprint=True), 32)
    assert mark in again
    (entry,) = session.audit.entries(action=AuditAction.REPRINT)
    assert (entry.operator, entry.txn_id, entry.detail) == ("01", record.id,
                                                           {"copy": "cardholder"})


def test_flag_a_mistaken_refund_and_link_its_follow_up(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 100_00)
    wrong = refund(session, rig, original, 50_00).record
    flag_id = session.audit.flag(wrong.id, "01", "refunded 50.00 instead of 5.00")
    follow = sale(session, rig, 45_00)  # the customer agreed to be charged again
    linked = session.audit.link_follow_up(flag_id, follow.id, operator="00")
    assert (linked.txn_id, linked.follow_up_txn_id) == (wrong.id, follow.id)
    assert [f.id for f in session.audit.flagged()] == [flag_id]
    assert session.audit.flagged(open_only=True) == []
    flags = session.audit.entries(action=AuditAction.FLAG)
    assert [e.txn_id for e in flags] == [wrong.id, wrong.id]


def test_a_card_number_typed_in_a_refund_note_is_masked(rig: Rig) -> None:
    session = session_of(rig)
    original = sale(session, rig, 100_00)
    q = session.quote_refund(original, card(rig, purpose=Purpose.REFUND), 1_00,
                             RefundReason.OTHER, "customer's card 6225880000000019")
    assert q.note == "customer's card 622588******0019"
    out = session.refund(q)
    assert out.record.note == "customer's card 622588******0019"
    assert session.refund_status(out.record).note == "customer's card 622588******0019"


def test_a_settlement_the_host_never_answered_is_not_reported_as_settled(rig: Rig) -> None:
    session = session_of(rig)
    sale(session, rig, 10_00)
    rig.link.down = True
    with pytest.raises(HostLinkError):
        session.settle()
    text = session.report().render_text("en", 42)
    assert "SETTLEMENT 000001" in text
    assert "NOT FINISHED" in text
    assert "RESULT UNKNOWN" not in text
    rig.link.down = False
    session.settle()
    assert "BALANCED" in session.report(batch="000001").render_text("en", 42)
