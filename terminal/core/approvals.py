"""Which supervisor approvals a refund or void needs: pure policy over the journal's history.

:func:`required_approvals` answers with a list of :class:`ApprovalReason`; an
empty list means the operator may go ahead alone. :func:`check_approval` turns
the reasons and the approver (already checked by
:meth:`~terminal.core.operators.OperatorStore.verify_approver`) into an
:class:`Approval` for the journal and the audit log, or refuses.

Who needs what (decided here, documented for the cashier's manual):

- *Authority* reasons — ``REFUND_ALWAYS`` (``refund_needs_supervisor``),
  ``OVER_AMOUNT`` (a refund above ``refund_supervisor_above``) and ``VOID``
  (``void_needs_supervisor``) — apply to cashiers only. A supervisor or the
  administrator doing it themselves already holds that authority.
- *Risk* reasons — ``LIKELY_DUPLICATE`` and the daily limits — apply to
  everyone: they are facts about the money, not about the person. A cashier
  needs a supervisor's or the administrator's password for them; a supervisor
  or administrator confirms them with their own password again (self-approval
  is allowed for them only, and the audit log shows it).
- Daily limits count today's (the calendar day of ``now``) refunds that are
  approved, pending or uncertain — anything that may have moved money — from
  ``history``, which comes from the journal, so the limits hold across restarts.
  The refund being asked for is included (``count + 1 > limit``). Training
  records count only against training, real ones only against real ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from terminal.core.errors import RuleError
from terminal.core.money import format_amount
from terminal.core.operators import Operator, PermissionDeniedError, Role
from terminal.core.records import TxnKind, TxnRecord, TxnStatus


class ApprovalReason(StrEnum):
    REFUND_ALWAYS = "refund_always"
    OVER_AMOUNT = "over_amount"
    VOID = "void"
    LIKELY_DUPLICATE = "likely_duplicate"
    OPERATOR_DAILY_LIMIT = "operator_daily_limit"
    TERMINAL_DAILY_LIMIT = "terminal_daily_limit"


APPROVAL_TEXT: dict[ApprovalReason, tuple[str, str]] = {
    ApprovalReason.REFUND_ALWAYS: ("退货需主管授权", "Refunds need a supervisor"),
    ApprovalReason.OVER_AMOUNT: ("退货金额超过授权限额", "Refund above the approval amount"),
    ApprovalReason.VOID: ("撤销需主管授权", "Voids need a supervisor"),
    ApprovalReason.LIKELY_DUPLICATE: ("疑似重复退货（同卡同金额）",
                                      "Likely duplicate refund (same card, same amount)"),
    ApprovalReason.OPERATOR_DAILY_LIMIT: ("超过操作员当日退货限额",
                                          "Over the operator's daily refund limit"),
    ApprovalReason.TERMINAL_DAILY_LIMIT: ("超过终端当日退货限额",
                                          "Over the terminal's daily refund limit"),
}

#: Reasons that only a cashier's lack of authority raises.
AUTHORITY_REASONS = frozenset({ApprovalReason.REFUND_ALWAYS, ApprovalReason.OVER_AMOUNT,
                               ApprovalReason.VOID})

#: Refund states that count for limits and duplicates: money may have moved.
LIVE_STATUSES = frozenset({TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN})


def reason_text(reason: ApprovalReason, lang: str = "both") -> str:
    """The reason in ``zh``, ``en`` or ``both`` (``"退货需主管授权 / Refunds need..."``)."""
    zh, en = APPROVAL_TEXT[reason]
    return {"zh": zh, "en": en}.get(lang, f"{zh} / {en}")


class ApprovalRequiredError(RuleError):
    """A supervisor's approval is needed and none (or not enough) was given."""

    cashier_zh, cashier_en = "需要主管授权", "Supervisor approval needed"

    def __init__(self, reasons: Sequence[ApprovalReason]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("approval needed: " + ", ".join(r.value for r in self.reasons),
                         cashier_zh="需要主管授权：" + "；".join(
                             APPROVAL_TEXT[r][0] for r in self.reasons),
                         cashier_en="Supervisor approval needed: " + "; ".join(
                             APPROVAL_TEXT[r][1] for r in self.reasons))


@dataclass(frozen=True)
class ApprovalPolicy:
    """The terminal's approval settings (amounts in fen; ``None`` = no limit)."""

    refund_needs_supervisor: bool = False
    refund_supervisor_above: int | None = 500_00
    void_needs_supervisor: bool = False
    duplicate_window_s: int = 600
    operator_daily_refund_count: int | None = None
    operator_daily_refund_amount: int | None = None
    terminal_daily_refund_count: int | None = None
    terminal_daily_refund_amount: int | None = None

    def __post_init__(self) -> None:
        for name in ("refund_supervisor_above", "operator_daily_refund_count",
                     "operator_daily_refund_amount", "terminal_daily_refund_count",
                     "terminal_daily_refund_amount"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} cannot be negative")
        if self.duplicate_window_s < 0:
            raise ValueError("duplicate_window_s cannot be negative")


@dataclass(frozen=True)
class Approval:
    """Who approved what, for the journal and the audit log."""

    approver: str
    reasons: tuple[ApprovalReason, ...] = field(default=())

    def detail(self) -> dict[str, object]:
        """The audit entry's detail."""
        return {"approver": self.approver, "reasons": [r.value for r in self.reasons]}


@dataclass(frozen=True)
class DailyRefunds:
    """Today's live refunds: count and amount."""

    count: int = 0
    amount: int = 0


def daily_refunds(history: Iterable[TxnRecord], now: datetime, *,
                  operator: str | None = None, training: bool = False) -> DailyRefunds:
    """Refunds of ``now``'s calendar day that may have moved money (of one operator if given)."""
    count = amount = 0
    for rec in history:
        if (rec.kind is TxnKind.REFUND and rec.status in LIVE_STATUSES
                and rec.training == training and rec.created_at.date() == now.date()
                and (operator is None or rec.operator == operator)):
            count += 1
            amount += rec.amount
    return DailyRefunds(count, amount)


def likely_duplicate(history: Iterable[TxnRecord], pan_hash: str, amount: int, now: datetime,
                     window_s: int, *, training: bool = False) -> TxnRecord | None:
    """A live refund to the same card for the same amount within the window, if any."""
    for rec in history:
        if (rec.kind is TxnKind.REFUND and rec.status in LIVE_STATUSES
                and rec.training == training and rec.pan_hash == pan_hash
                and rec.amount == amount
                and 0 <= (now - rec.created_at).total_seconds() <= window_s):
            return rec
    return None


def _over(so_far: DailyRefunds, amount: int, count_limit: int | None,
          amount_limit: int | None) -> bool:
    return ((count_limit is not None and so_far.count + 1 > count_limit)
            or (amount_limit is not None and so_far.amount + amount > amount_limit))


def required_approvals(kind: TxnKind, amount: int, operator: Operator, pan_hash: str,
                       now: datetime, history: Sequence[TxnRecord], policy: ApprovalPolicy,
                       *, training: bool = False) -> list[ApprovalReason]:
    """The approvals a ``kind`` of ``amount`` by ``operator`` needs now (empty: none).

    ``history`` is the journal's records (at least today's refunds and those
    within the duplicate window); only refunds and voids can need approval.
    """
    cashier = operator.role is Role.CASHIER
    reasons: list[ApprovalReason] = []
    if kind is TxnKind.VOID:
        if cashier and policy.void_needs_supervisor:
            reasons.append(ApprovalReason.VOID)
        return reasons
    if kind is not TxnKind.REFUND:
        return reasons
    if cashier and policy.refund_needs_supervisor:
        reasons.append(ApprovalReason.REFUND_ALWAYS)
    if (cashier and policy.refund_supervisor_above is not None
            and amount > policy.refund_supervisor_above):
        reasons.append(ApprovalReason.OVER_AMOUNT)
    if likely_duplicate(history, pan_hash, amount, now, policy.duplicate_window_s,
                        training=training) is not None:
        reasons.append(ApprovalReason.LIKELY_DUPLICATE)
    mine = daily_refunds(history, now, operator=operator.number, training=training)
    if _over(mine, amount, policy.operator_daily_refund_count,
             policy.operator_daily_refund_amount):
        reasons.append(ApprovalReason.OPERATOR_DAILY_LIMIT)
    terminal = daily_refunds(history, now, training=training)
    if _over(terminal, amount, policy.terminal_daily_refund_count,
             policy.terminal_daily_refund_amount):
        reasons.append(ApprovalReason.TERMINAL_DAILY_LIMIT)
    return reasons


def check_approval(reasons: Sequence[ApprovalReason], operator: Operator,
                   approver: Operator | None) -> Approval | None:
    """The :class:`Approval` covering ``reasons``, None when none is needed, or a refusal.

    ``approver`` must come from a password check made for this request. Raises
    :class:`ApprovalRequiredError` (naming what is missing) without one, and
    :class:`~terminal.core.operators.PermissionDeniedError` when the approver
    is a cashier or a cashier approves their own request.
    """
    if not reasons:
        return None
    if approver is None:
        raise ApprovalRequiredError(reasons)
    if not approver.can_approve or not approver.active:
        raise PermissionDeniedError(f"operator {approver.number} cannot approve",
                                    cashier_zh="授权人须为主管或系统管理员",
                                    cashier_en="Approver must be a supervisor or administrator")
    if approver.number == operator.number and operator.role is Role.CASHIER:
        raise PermissionDeniedError("a cashier cannot approve their own request")
    return Approval(approver.number, tuple(reasons))


def describe_limits(policy: ApprovalPolicy, lang: str = "en") -> list[str]:
    """The policy as lines a supervisor reads (settings screen, ``config show``)."""
    def amt(v: int | None) -> str:
        return "-" if v is None else format_amount(v)

    def cnt(v: int | None) -> str:
        return "-" if v is None else str(v)

    if lang == "zh":
        return [f"退货均需授权: {'是' if policy.refund_needs_supervisor else '否'}",
                f"退货授权金额: {amt(policy.refund_supervisor_above)}",
                f"撤销需授权: {'是' if policy.void_needs_supervisor else '否'}",
                f"重复退货判定: {policy.duplicate_window_s}秒",
                f"操作员当日退货: {cnt(policy.operator_daily_refund_count)}笔/"
                f"{amt(policy.operator_daily_refund_amount)}",
                f"终端当日退货: {cnt(policy.terminal_daily_refund_count)}笔/"
                f"{amt(policy.terminal_daily_refund_amount)}"]
    return [f"refunds need supervisor: {'yes' if policy.refund_needs_supervisor else 'no'}",
            f"approval above: {amt(policy.refund_supervisor_above)}",
            f"voids need supervisor: {'yes' if policy.void_needs_supervisor else 'no'}",
            f"duplicate window: {policy.duplicate_window_s}s",
            f"operator daily refunds: {cnt(policy.operator_daily_refund_count)} / "
            f"{amt(policy.operator_daily_refund_amount)}",
            f"terminal daily refunds: {cnt(policy.terminal_daily_refund_count)} / "
            f"{amt(policy.terminal_daily_refund_amount)}"]
