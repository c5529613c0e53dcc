"""A terminal in use: the till plus who is at it, who approved what, and the paper.

:class:`Session` is what the screens and ``pos-terminal`` call. It wraps
:class:`~terminal.core.till.Till` with the cashier's rules: an operator logged
in (when the terminal has operators), supervisor approvals where the policy
asks for them (checked before anything is sent), every action in the
append-only audit log, receipts, the refund proof, refund status and reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from terminal.core.approvals import (
    Approval,
    ApprovalPolicy,
    ApprovalReason,
    ApprovalRequiredError,
    check_approval,
    required_approvals,
)
from terminal.core.audit import AuditAction, AuditLog
from terminal.core.errors import ConfigError, OriginalNotFoundError, RuleError
from terminal.core.money import format_amount
from terminal.core.operators import LoginError, Operator, OperatorStore
from terminal.core.ports import CardRead, Progress, Step
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.till import (
    Original,
    Outcome,
    RefundQuote,
    ResolveReport,
    SettleOutcome,
    Till,
    VoidQuote,
)

if TYPE_CHECKING:  # paper and reports load on first use: the till starts faster
    from terminal.core.receipts import Copy, MerchantInfo, Receipt
    from terminal.core.refund_status import ArrivalWindows, RefundStatusView
    from terminal.core.reports import Report

POLICY_KEY = "approval_policy"


def _ignore(step: Step) -> None:
    del step


class NotLoggedInError(RuleError):
    """This terminal has operators and nobody is logged in."""

    cashier_zh, cashier_en = "请先登录操作员", "Log in first"


def load_policy(till: Till) -> ApprovalPolicy:
    raw = till.journal.get(POLICY_KEY)
    if raw is None:
        return ApprovalPolicy()
    try:
        data = json.loads(raw)
        known = {f.name for f in fields(ApprovalPolicy)}
        return ApprovalPolicy(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"stored approval policy is unreadable: {exc}") from None


def save_policy(till: Till, policy: ApprovalPolicy) -> None:
    till.journal.put(POLICY_KEY, json.dumps(asdict(policy), sort_keys=True))


class Session:
    """One terminal in use (see the module docstring)."""

    def __init__(self, till: Till, *, policy: ApprovalPolicy | None = None,
                 windows: ArrivalWindows | None = None) -> None:
        self.till = till
        conn = till.journal.conn
        self.audit = AuditLog(conn, till.clock)
        self.operators = OperatorStore(conn, till.clock, audit=self.audit)
        self.policy = policy or load_policy(till)
        self._windows = windows
        self.operator: Operator | None = None

    # --- who is at the till --------------------------------------------------------------
    @property
    def has_operators(self) -> bool:
        return bool(self.operators.list())

    def login(self, number: str, password: str, *, allow_expired: bool = True) -> Operator:
        self.operator = self.operators.login(number, password, allow_expired=allow_expired)
        return self.operator

    def logout(self) -> None:
        if self.operator is not None:
            self.audit.append(AuditAction.LOGOUT, self.operator.number)
        self.operator = None

    @property
    def operator_number(self) -> str | None:
        return self.operator.number if self.operator else None

    def _require_operator(self) -> Operator | None:
        if self.operator is None and self.has_operators:
            raise NotLoggedInError("this terminal has operators: log in first "
                                   "(--operator N --password-file F)")
        return self.operator

    # --- approvals -----------------------------------------------------------------------
    def required_approvals(self, kind: TxnKind, amount: int,
                           card: CardRead | None) -> list[ApprovalReason]:
        """What a supervisor must approve before this request may be sent."""
        operator = self._require_operator()
        if operator is None:  # a terminal without operators has no one to ask
            return []
        now = self.till.clock()
        start = min(datetime.combine(now.date(), datetime.min.time()),
                    now - timedelta(seconds=self.policy.duplicate_window_s))
        history = self.till.journal.since(start)
        pan_hash = self.till.journal.vault.pan_hash(card.card.pan) if card else ""
        return required_approvals(kind, amount, operator, pan_hash, now, history, self.policy,
                                  training=self.till.settings.training)

    def approve(self, reasons: Sequence[ApprovalReason], supervisor: str,
                password: str) -> Approval | None:
        """A supervisor's number and password; a wrong password counts towards lockout."""
        operator = self._require_operator()
        if operator is None:
            return None
        approver = self.operators.verify_approver(supervisor, password)
        approval = check_approval(reasons, operator, approver)
        if approval is not None:
            self.audit.append(AuditAction.APPROVAL, operator.number, approver=approver.number,
                              detail=approval.detail())
        return approval

    def _check(self, kind: TxnKind, amount: int, card: CardRead | None,
               approval: Approval | None) -> Approval | None:
        reasons = self.required_approvals(kind, amount, card)
        if not reasons:
            return approval
        missing = [r for r in reasons if approval is None or r not in approval.reasons]
        if missing:
            raise ApprovalRequiredError(missing)
        return approval

    # --- money -----------------------------------------------------------------------------
    def sale(self, amount: int, card: CardRead, *, progress: Progress = _ignore) -> Outcome:
        try:
            self._require_operator()
        except RuleError:
            card.release()  # a chip card held for this sale: nothing will be sent
            raise
        outcome = self.till.sale(amount, card, operator=self.operator_number, progress=progress)
        self._audit_outcome(AuditAction.SALE, outcome, None)
        return outcome

    def quote_refund(self, original: Original, card: CardRead, amount: int,
                     reason: RefundReason, note: str | None = None) -> RefundQuote:
        self._require_operator()
        return self.till.quote_refund(original, card, amount, reason, note)

    def refund(self, quote: RefundQuote, *, approval: Approval | None = None,
               progress: Progress = _ignore) -> Outcome:
        self._require_operator()
        approval = self._check(TxnKind.REFUND, quote.amount, quote.card, approval)
        outcome = self.till.refund(quote, operator=self.operator_number, progress=progress)
        self._audit_outcome(AuditAction.REFUND, outcome, approval,
                            reason=quote.reason.value, note=quote.note or "")
        return outcome

    def quote_void(self, original: TxnRecord, card: CardRead | None = None) -> VoidQuote:
        self._require_operator()
        return self.till.quote_void(original, card)

    def void(self, quote: VoidQuote, *, approval: Approval | None = None,
             progress: Progress = _ignore) -> Outcome:
        self._require_operator()
        approval = self._check(TxnKind.VOID, quote.amount, quote.card, approval)
        outcome = self.till.void(quote, operator=self.operator_number, progress=progress)
        self._audit_outcome(AuditAction.VOID, outcome, approval)
        return outcome

    def settle(self, *, progress: Progress = _ignore) -> SettleOutcome:
        self._require_operator()
        result = self.till.settle(progress)
        self.audit.append(AuditAction.SETTLEMENT, self.operator_number, detail={
            "batch": result.batch, "balanced": result.balanced, "uploaded": result.uploaded,
            "new_batch": result.new_batch})
        return result

    def resolve(self, *, progress: Progress = _ignore) -> ResolveReport:
        return self.till.resolve(progress)

    def _audit_outcome(self, action: AuditAction, outcome: Outcome, approval: Approval | None,
                       **detail: str) -> None:
        record = outcome.record
        self.audit.append(action, self.operator_number, txn_id=record.id,
                          approver=approval.approver if approval else None,
                          detail={"status": record.status.value,
                                  "code": record.response_code or "",
                                  "amount": format_amount(record.amount),
                                  "voucher": record.voucher,
                                  **({"approval": approval.detail()} if approval else {}),
                                  **detail})

    # --- paper and questions -----------------------------------------------------------------
    @property
    def merchant(self) -> MerchantInfo:
        from terminal.core.receipts import MerchantInfo
        settings = self.till.settings
        return MerchantInfo(settings.merchant_name, settings.mid, settings.tid)

    @property
    def windows(self) -> ArrivalWindows:
        if self._windows is None:
            from terminal.core.refund_status import ArrivalWindows
            self._windows = ArrivalWindows()
        return self._windows

    def _original_of(self, record: TxnRecord) -> TxnRecord | None:
        return (self.till.journal.record(record.original_id)
                if record.original_id is not None else None)

    def receipt(self, record: TxnRecord, copy: Copy | None = None, *, lang: str = "both",
                reprint: bool = False) -> Receipt:
        """A slip of ``record`` (the cardholder's copy unless ``copy`` says otherwise)."""
        from terminal.core.receipts import ChipInfo, Copy, build_receipt
        copy = copy if copy is not None else Copy.CARDHOLDER
        from terminal.core.refund_status import card_type
        chip = None
        if record.aid and record.cryptogram and record.cryptogram_type in ("TC", "AAC", "ARQC"):
            chip = ChipInfo(record.aid, record.cryptogram,
                            record.cryptogram_type,  # type: ignore[arg-type]
                            record.card_label)
        window = (self.windows.text(card_type(record), lang)  # type: ignore[arg-type]
                  if record.kind is TxnKind.REFUND else None)
        receipt = build_receipt(record, self.merchant, copy, lang,  # type: ignore[arg-type]
                                reprint=reprint, training=self.till.settings.training,
                                original=self._original_of(record), arrival_window=window,
                                chip=chip)
        if reprint:
            self.audit.append(AuditAction.REPRINT, self.operator_number, txn_id=record.id,
                              detail={"copy": copy.value})
        return receipt

    def refund_proof(self, record: TxnRecord, *, lang: str = "both",
                     reprint: bool = False) -> Receipt:
        """退款凭证: RRN, original RRN, amount, date and the expected arrival window."""
        from terminal.core.receipts import build_refund_proof
        from terminal.core.refund_status import card_type
        proof = build_refund_proof(record, self.merchant, lang,  # type: ignore[arg-type]
                                   original=self._original_of(record),
                                   arrival_window=self.windows.text(
                                       card_type(record), lang),  # type: ignore[arg-type]
                                   reprint=reprint, training=self.till.settings.training)
        self.audit.append(AuditAction.REPRINT, self.operator_number, txn_id=record.id,
                          detail={"copy": "refund_proof"})
        return proof

    def find_refund(self, *, voucher: str | None = None, rrn: str | None = None) -> TxnRecord:
        """A refund of this terminal by its voucher or RRN (newest first)."""
        if voucher is not None:
            found = [r for r in self.till.journal.by_voucher(voucher)
                     if r.kind is TxnKind.REFUND]
        elif rrn is not None:
            found = [r for r in self.till.journal.by_rrn(rrn) if r.kind is TxnKind.REFUND]
        else:
            raise RuleError("name the refund by voucher or RRN")
        if not found:
            raise OriginalNotFoundError("no refund with that voucher/RRN in this journal",
                                        cashier_zh="找不到该退货交易",
                                        cashier_en="Refund not found")
        return found[0]

    def refund_status(self, record: TxnRecord) -> RefundStatusView:
        from terminal.core.refund_status import refund_status
        pending = None
        for item in self.till.journal.open_items():
            if item.txn_id == record.id:
                pending = item.action
        return refund_status(record, self._original_of(record),
                             self.till.journal.settled_batches(), windows=self.windows,
                             pending_action=pending)  # type: ignore[arg-type]

    def report(self, *, day: datetime | None = None, batch: str | None = None,
               start: datetime | None = None, end: datetime | None = None) -> Report:
        from terminal.core.reports import batch_report, day_report, range_report
        records = list(self.till.journal.iter_all())
        settlements = [dict(row) for row in self.till.journal.settlements()]
        training = self.till.settings.training
        if batch is not None:
            return batch_report(records, batch, settlements=settlements, training=training)
        if start is not None and end is not None:
            return range_report(records, start, end, settlements=settlements,
                                training=training)
        return day_report(records, (day or self.till.clock()).date(),
                          settlements=settlements, training=training)

    def export(self, fmt: str, start: datetime | None = None,
               end: datetime | None = None) -> str:
        from terminal.core.reports import export_rows
        return export_rows(list(self.till.journal.iter_all()), fmt,  # type: ignore[arg-type]
                           start, end)

    def history(self, original: TxnRecord) -> list[tuple[TxnRecord, RefundStatusView | None]]:
        """An original's voids and refunds with each refund's status."""
        out: list[tuple[TxnRecord, RefundStatusView | None]] = []
        for child in self.till.history(original):
            view = self.refund_status(child) if child.kind is TxnKind.REFUND else None
            out.append((child, view))
        return out

    def uncertain(self) -> list[TxnRecord]:
        return [r for r in self.till.journal.iter_all()
                if r.status in (TxnStatus.PENDING, TxnStatus.UNCERTAIN)]


__all__ = ["LoginError", "NotLoggedInError", "Session", "load_policy", "save_policy"]
