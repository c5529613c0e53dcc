"""The one place the screens reach the terminal core: a thin adapter over the core's Session.

Screens call :class:`Backend` only. Every method is a straight call into
:class:`~terminal.core.session.Session` (or, for plain journal reads, its
till); the only thing added here is a lock, because the screens call from
thread workers while the status bar reads on the UI thread (:meth:`status`
never waits for a worker: it answers from its last reading).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from iso8583.settlement import SettlementTotals
from terminal.core.approvals import Approval, ApprovalReason, describe_limits
from terminal.core.operators import Operator
from terminal.core.ports import CardRead, Progress, Purpose
from terminal.core.receipts import Copy, render_text
from terminal.core.records import RefundReason, TxnKind, TxnRecord
from terminal.core.refund_status import RefundStatusView
from terminal.core.rules import Refundable, refundable_of
from terminal.core.session import NotLoggedInError, Session
from terminal.core.till import Original, Outcome, RefundQuote, SettleOutcome, Till, VoidQuote

#: Receipt preview width: the 32-column slip of a small POS printer.
PAPER = 32


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


class Backend:
    """Screens' view of one terminal in use (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._lock = threading.RLock()
        self._last_status: StatusView | None = None

    @contextmanager
    def _held(self) -> Iterator[None]:
        with self._lock:
            yield

    # --- state ----------------------------------------------------------------------
    @property
    def till(self) -> Till:
        return self.session.till

    @property
    def operator(self) -> Operator | None:
        return self.session.operator

    @property
    def training(self) -> bool:
        return self.till.settings.training

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
            return self.session.login(number, password)

    def unlock(self, password: str) -> Operator:
        """The locked screen: the operator who was logged in types their password again."""
        op = self._require()
        with self._held():
            return self.session.login(op.number, password)

    def logout(self) -> None:
        with self._held():
            self.session.logout()

    def _require(self) -> Operator:
        if self.operator is None:
            raise NotLoggedInError("no operator is logged in")
        return self.operator

    def is_supervisor(self) -> bool:
        return self.operator is not None and self.operator.can_approve

    def list_operators(self) -> list[Operator]:
        with self._held():
            return self.session.operators.list(include_inactive=True)

    def add_operator(self, number: str, password: str) -> Operator:
        by = self._require()
        with self._held():
            return self.session.operators.add(number, password, by=by)

    def unlock_operator(self, number: str) -> Operator:
        by = self._require()
        with self._held():
            return self.session.operators.unlock(number, by=by)

    def reset_password(self, number: str, password: str) -> Operator:
        by = self._require()
        with self._held():
            return self.session.operators.reset_password(number, password, by=by)

    def deactivate_operator(self, number: str) -> Operator:
        by = self._require()
        with self._held():
            return self.session.operators.deactivate(number, by=by)

    def limits(self, lang: str) -> list[str]:
        return describe_limits(self.session.policy, lang)

    # --- approvals ----------------------------------------------------------------------
    def refund_approvals(self, quote: RefundQuote) -> list[ApprovalReason]:
        with self._held():
            return self.session.required_approvals(TxnKind.REFUND, quote.amount, quote.card)

    def void_approvals(self, quote: VoidQuote) -> list[ApprovalReason]:
        with self._held():
            return self.session.required_approvals(TxnKind.VOID, quote.amount, quote.card)

    def approve(self, reasons: Sequence[ApprovalReason], number: str,
                password: str) -> Approval | None:
        """A supervisor's password for ``reasons`` (wrong ones count towards lockout)."""
        with self._held():
            return self.session.approve(reasons, number, password)

    # --- transactions (blocking: called from thread workers) -------------------------------
    def sign_on(self, progress: Progress) -> str:
        with self._held():
            self.till.sign_on(progress)
            return self.till.journal.batch

    def cancel_card_wait(self) -> None:
        """Esc while the till waits for a card: not under the lock the waiting read holds."""
        self.till.cancel_card_wait()

    def read_card(self, purpose: Purpose, amount: int, progress: Progress) -> CardRead:
        with self._held():
            return self.till.read_card(purpose, amount, progress)

    def sale(self, amount: int, card: CardRead, progress: Progress) -> Outcome:
        self._require()
        with self._held():
            return self.session.sale(amount, card, progress=progress)

    def refund(self, quote: RefundQuote, approval: Approval | None,
               progress: Progress) -> Outcome:
        self._require()
        with self._held():
            return self.session.refund(quote, approval=approval, progress=progress)

    def void(self, quote: VoidQuote, approval: Approval | None, progress: Progress) -> Outcome:
        self._require()
        with self._held():
            return self.session.void(quote, approval=approval, progress=progress)

    def settle(self, progress: Progress) -> SettleOutcome:
        self._require()
        with self._held():
            return self.session.settle(progress=progress)

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
            return self.session.quote_refund(original, card, amount, reason, note)

    def quote_void(self, original: TxnRecord) -> VoidQuote:
        with self._held():
            return self.session.quote_void(original, None)

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
        return refundable_of(original, self.history(original))

    def last_record(self) -> TxnRecord | None:
        with self._held():
            return self.till.journal.last()

    def refund_status(self, refund: TxnRecord) -> RefundStatusView:
        with self._held():
            return self.session.refund_status(refund)

    # --- paper ------------------------------------------------------------------------------
    def receipt_text(self, record: TxnRecord, lang: str, *, reprint: bool = False,
                     proof: bool = False) -> str:
        """The slip (or the 退款凭证 with ``proof``) as the printer would print it."""
        with self._held():
            if proof:
                receipt = self.session.refund_proof(record, lang=lang, reprint=reprint)
            else:
                receipt = self.session.receipt(record, Copy.CARDHOLDER, lang=lang,
                                               reprint=reprint)
        return render_text(receipt, PAPER)

    def print_text(self, text: str) -> bool:
        """Print on the till's printer; False when it has none (preview only)."""
        printer = self.till.printer
        if printer is None:
            return False
        with self._held():
            printer.print_text(text)
        return True

    def report_text(self, lang: str, width: int = 42, *, day: datetime | None = None,
                    batch: str | None = None, start: datetime | None = None,
                    end: datetime | None = None) -> str:
        """A report laid out by the core: today (default), a batch, or ``start``..``end``."""
        with self._held():
            report = self.session.report(day=day, batch=batch, start=start, end=end)
        return report.render_text("zh" if lang == "zh" else "en", width)

    def open_batch(self) -> str:
        with self._held():
            return self.till.journal.batch

    def change_password(self, number: str, old: str, new: str) -> Operator:
        """The operator's own change (an expired password must be changed before work)."""
        with self._held():
            op = self.session.operators.change_password(number, old, new)
            self.session.operator = op
            return op
