"""The one place the screens reach the terminal core: a thin adapter over the till.

Screens call :class:`Backend` only, so moving from the bare
:class:`~terminal.core.till.Till` (plus an operator store) to the core's
``Session`` facade changes this module and nothing else. Every method is a
straight call into the core; the only thing added here is a lock, because the
screens call from thread workers while the status bar reads on the UI thread
(:meth:`status` never waits for a worker: it answers from its last reading).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from iso8583.settlement import SettlementTotals
from terminal.core import receipts
from terminal.core.approvals import (
    Approval,
    ApprovalPolicy,
    ApprovalReason,
    check_approval,
    describe_limits,
    required_approvals,
)
from terminal.core.audit import AuditLog
from terminal.core.errors import TerminalError
from terminal.core.operators import Operator, OperatorStore, PermissionDeniedError
from terminal.core.ports import CardRead, Progress, Purpose
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.refund_status import ArrivalWindows, RefundStatusView, card_type, refund_status
from terminal.core.rules import Refundable
from terminal.core.till import Original, Outcome, RefundQuote, SettleOutcome, Till, VoidQuote


class SessionLike(Protocol):
    """The parts of the core's ``Session`` the screens use (see /work/plan API)."""

    till: Till
    operators: OperatorStore
    audit: AuditLog
    policy: ApprovalPolicy


@dataclass(frozen=True)
class StatusView:
    """What the status bar shows."""

    operator: str | None
    signed_on: bool
    host_reachable: bool | None
    reader: str
    pinpad: str
    open_items: int
    batch: str
    training: bool
    now: datetime


class NotLoggedInError(TerminalError):
    """A screen asked for something only a logged-in operator may do."""

    cashier_zh, cashier_en = "请先登录", "Log in first"


class Backend:
    """Screens' view of one terminal: its till, operators and approval policy."""

    def __init__(self, till: Till, operators: OperatorStore, *,
                 policy: ApprovalPolicy | None = None, audit: AuditLog | None = None,
                 windows: ArrivalWindows | None = None) -> None:
        self.till = till
        self.operators = operators
        self.policy = policy or ApprovalPolicy()
        self.audit = audit
        self.windows = windows or ArrivalWindows()
        self.operator: Operator | None = None
        self._lock = threading.RLock()
        self._last_status: StatusView | None = None

    @classmethod
    def over_till(cls, till: Till, *, policy: ApprovalPolicy | None = None,
                  scrypt_n: int | None = None) -> Backend:
        """A backend with the operator store and audit log of the till's own journal."""
        conn = till.journal.conn
        audit = AuditLog(conn, till.clock)
        store = (OperatorStore(conn, till.clock, audit=audit) if scrypt_n is None
                 else OperatorStore(conn, till.clock, audit=audit, scrypt_n=scrypt_n))
        return cls(till, store, policy=policy, audit=audit)

    @classmethod
    def over_session(cls, session: SessionLike) -> Backend:
        """A backend over the core's session facade (its till, operators, audit, policy)."""
        return cls(session.till, session.operators, policy=session.policy, audit=session.audit)

    @contextmanager
    def _held(self) -> Iterator[None]:
        with self._lock:
            yield

    # --- state ----------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self.till.settings.training

    @property
    def lang(self) -> str:
        return self.till.settings.lang

    def now(self) -> datetime:
        return self.till.clock()

    def status(self) -> StatusView | None:
        """A fresh reading, or the last one while a worker holds the core."""
        if not self._lock.acquire(blocking=False):
            return self._last_status
        try:
            s = self.till.status()
            self._last_status = StatusView(
                operator=self.operator.number if self.operator else None,
                signed_on=s.signed_on, host_reachable=s.host_reachable, reader=s.reader,
                pinpad=s.pinpad, open_items=s.open_items, batch=s.batch, training=s.training,
                now=self.till.clock())
        finally:
            self._lock.release()
        return self._last_status

    # --- operators ----------------------------------------------------------------------
    def login(self, number: str, password: str) -> Operator:
        with self._held():
            self.operator = self.operators.login(number, password)
            return self.operator

    def unlock(self, password: str) -> Operator:
        """The locked screen: the operator who was logged in types their password again."""
        op = self._require()
        with self._held():
            self.operator = self.operators.login(op.number, password)
            return self.operator

    def logout(self) -> None:
        self.operator = None

    def _require(self) -> Operator:
        if self.operator is None:
            raise NotLoggedInError("no operator is logged in")
        return self.operator

    def is_supervisor(self) -> bool:
        return self.operator is not None and self.operator.can_approve

    def list_operators(self) -> list[Operator]:
        with self._held():
            return self.operators.list(include_inactive=True)

    def add_operator(self, number: str, password: str) -> Operator:
        by = self._require()
        with self._held():
            return self.operators.add(number, password, by=by)

    def unlock_operator(self, number: str) -> Operator:
        by = self._require()
        with self._held():
            return self.operators.unlock(number, by=by)

    def reset_password(self, number: str, password: str) -> Operator:
        by = self._require()
        with self._held():
            return self.operators.reset_password(number, password, by=by)

    def deactivate_operator(self, number: str) -> Operator:
        by = self._require()
        with self._held():
            return self.operators.deactivate(number, by=by)

    def limits(self, lang: str) -> list[str]:
        return describe_limits(self.policy, lang)

    # --- approvals ----------------------------------------------------------------------
    def _approvals(self, kind: TxnKind, amount: int, pan_hash: str) -> list[ApprovalReason]:
        op = self._require()
        now = self.till.clock()
        window = max(timedelta(days=1), timedelta(seconds=self.policy.duplicate_window_s))
        with self._held():
            history = self.till.journal.since(now - window)
        return required_approvals(kind, amount, op, pan_hash, now, history, self.policy,
                                  training=self.training)

    def refund_approvals(self, quote: RefundQuote) -> list[ApprovalReason]:
        pan_hash = self.till.journal.vault.pan_hash(quote.card.card.pan)
        return self._approvals(TxnKind.REFUND, quote.amount, pan_hash)

    def void_approvals(self, quote: VoidQuote) -> list[ApprovalReason]:
        return self._approvals(TxnKind.VOID, quote.amount, quote.original.pan_hash)

    def approve(self, reasons: Sequence[ApprovalReason], number: str,
                password: str) -> Approval | None:
        """A supervisor's password for ``reasons`` (wrong ones count towards lockout)."""
        op = self._require()
        with self._held():
            approver = self.operators.verify_approver(number, password)
        return check_approval(reasons, op, approver)

    # --- transactions (blocking: called from thread workers) -------------------------------
    def sign_on(self, progress: Progress) -> str:
        with self._held():
            self.till.sign_on(progress)
            return self.till.journal.batch

    def read_card(self, purpose: Purpose, amount: int, progress: Progress) -> CardRead:
        with self._held():
            return self.till.read_card(purpose, amount, progress)

    def sale(self, amount: int, card: CardRead, progress: Progress) -> Outcome:
        op = self._require()
        with self._held():
            return self.till.sale(amount, card, operator=op.number, progress=progress)

    def refund(self, quote: RefundQuote, approval: Approval | None,
               progress: Progress) -> Outcome:
        op = self._require()
        self._check_covered(self.refund_approvals(quote), approval)
        with self._held():
            return self.till.refund(quote, operator=op.number, progress=progress)

    def void(self, quote: VoidQuote, approval: Approval | None, progress: Progress) -> Outcome:
        op = self._require()
        self._check_covered(self.void_approvals(quote), approval)
        with self._held():
            return self.till.void(quote, operator=op.number, progress=progress)

    def _check_covered(self, needed: Sequence[ApprovalReason],
                       approval: Approval | None) -> None:
        if needed and (approval is None or not set(needed) <= set(approval.reasons)):
            from terminal.core.approvals import ApprovalRequiredError
            raise ApprovalRequiredError(needed)

    def settle(self, progress: Progress) -> SettleOutcome:
        self._require()
        with self._held():
            return self.till.settle(progress)

    # --- lookups (quick journal reads) -------------------------------------------------------
    def find_by_voucher(self, voucher: str) -> TxnRecord:
        with self._held():
            return self.till.find_by_voucher(voucher)

    def find_by_rrn(self, rrn: str, mmdd: str) -> Original:
        with self._held():
            return self.till.find_by_rrn(rrn, mmdd)

    def refundable_sales(self, card: CardRead) -> list[tuple[TxnRecord, Refundable]]:
        with self._held():
            return self.till.refundable_sales(card)

    def quote_refund(self, original: Original, card: CardRead, amount: int,
                     reason: RefundReason, note: str | None) -> RefundQuote:
        with self._held():
            return self.till.quote_refund(original, card, amount, reason, note)

    def quote_void(self, original: TxnRecord) -> VoidQuote:
        with self._held():
            return self.till.quote_void(original, None)

    def batch_totals(self) -> SettlementTotals:
        with self._held():
            return self.till.batch_totals()

    def batch(self) -> str:
        return self.till.journal.batch

    def transactions(self, limit: int = 500) -> list[TxnRecord]:
        """The newest journal records first."""
        with self._held():
            rows = self.till.journal.records(
                "id > (SELECT COALESCE(MAX(id), 0) FROM txn) - ?", (limit,))
        return rows[::-1]

    def record(self, txn_id: int) -> TxnRecord:
        with self._held():
            return self.till.journal.record(txn_id)

    def history(self, original: TxnRecord) -> list[TxnRecord]:
        with self._held():
            return self.till.history(original)

    def refundable(self, original: TxnRecord) -> Refundable:
        from terminal.core.rules import refundable_of
        return refundable_of(original, self.history(original))

    def last_record(self) -> TxnRecord | None:
        with self._held():
            return self.till.journal.last()

    def today(self) -> list[TxnRecord]:
        with self._held():
            return self.till.journal.today()

    def refund_status(self, refund: TxnRecord) -> RefundStatusView:
        with self._held():
            original = (self.till.journal.record(refund.original_id)
                        if refund.original_id is not None else None)
            settled = self.till.journal.settled_batches()
            def pending() -> (str | None):
                return next(
                            (item.action for item in self.till.journal.open_items()
                             if item.txn_id == refund.id), None)
            action = pending()
        return refund_status(refund, original, settled, windows=self.windows,
                             pending_action="advice" if action == "advice" else
                             "reversal" if action == "reversal" else None)

    # --- receipts -------------------------------------------------------------------------
    def _merchant(self) -> receipts.MerchantInfo:
        s = self.till.settings
        return receipts.MerchantInfo(s.merchant_name, s.mid, s.tid)

    def receipt_text(self, record: TxnRecord, lang: str, *, reprint: bool = False,
                     proof: bool = False) -> str:
        """The slip (or the 退款凭证 with ``proof``) as the printer would print it."""
        rlang: receipts.Lang = "zh" if lang == "zh" else "en"
        original = (self.record(record.original_id)
                    if record.original_id is not None else None)
        arrival = None
        if record.kind is TxnKind.REFUND:
            kind = card_type(record)
            if original is not None and kind.value == "unknown":
                kind = card_type(original)
            arrival = self.windows.text(kind, rlang)
        if proof:
            receipt = receipts.build_refund_proof(record, self._merchant(), rlang,
                                                  original=original, arrival_window=arrival,
                                                  reprint=reprint, training=self.training)
        else:
            receipt = receipts.build_receipt(record, self._merchant(), receipts.Copy.CARDHOLDER,
                                             rlang, reprint=reprint, training=self.training,
                                             original=original, arrival_window=arrival)
        return receipts.render_text(receipt, 32)

    def print_text(self, text: str) -> bool:
        """Print on the till's printer; False when it has none (preview only)."""
        printer = getattr(self.till, "printer", None)
        if printer is None:
            return False
        with self._held():
            printer.print_text(text)
        if self.audit is not None and self.operator is not None:
            self.audit.append("reprint", self.operator.number, detail={})
        return True

    # --- reports ---------------------------------------------------------------------------
    def today_summary(self) -> list[tuple[TxnKind, TxnStatus, int, int]]:
        """(kind, status, count, amount) of today's journal, in a stable order."""
        counts: dict[tuple[TxnKind, TxnStatus], tuple[int, int]] = {}
        for rec in self.today():
            n, amount = counts.get((rec.kind, rec.status), (0, 0))
            counts[(rec.kind, rec.status)] = (n + 1, amount + rec.amount)
        return [(k, s, n, a) for (k, s), (n, a) in sorted(counts.items())]

    def require_supervisor(self) -> None:
        if not self.is_supervisor():
            raise PermissionDeniedError("supervisor only",
                                        cashier_zh="无权限（需主管）",
                                        cashier_en="Supervisor only")
