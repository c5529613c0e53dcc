"""The money rules a terminal checks before it asks the host (DESIGN.md section 5).

Pure functions over journal records: tests drive them without a journal. The
host checks the same rules again; the terminal checks first so a cashier hears
"no" at once and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from terminal.core.errors import (
    CardMismatchError,
    OriginalStateError,
    RefundAmountError,
    RefundTooOldError,
)
from terminal.core.money import format_amount
from terminal.core.records import TxnKind, TxnRecord, TxnStatus

#: Children that count against an original while their outcome is open or approved.
_LIVE = (TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN)


@dataclass(frozen=True)
class Refundable:
    """What an original can still give back."""

    original_amount: int
    refunded: int  # approved refunds
    in_doubt: int  # refunds whose outcome is not known yet (counted as refunded)

    @property
    def refundable(self) -> int:
        return max(0, self.original_amount - self.refunded - self.in_doubt)


def refundable_of(original: TxnRecord, children: Sequence[TxnRecord]) -> Refundable:
    refunded = sum(c.amount for c in children
                   if c.kind is TxnKind.REFUND and c.status is TxnStatus.APPROVED)
    in_doubt = sum(c.amount for c in children
                   if c.kind is TxnKind.REFUND and c.status in (TxnStatus.PENDING,
                                                                 TxnStatus.UNCERTAIN))
    return Refundable(original.amount, refunded, in_doubt)


def is_voided(children: Sequence[TxnRecord]) -> bool:
    return any(c.kind is TxnKind.VOID and c.status in _LIVE for c in children)


def check_refund(original: TxnRecord, children: Sequence[TxnRecord], *, pan_hash: str,
                 amount: int, now: datetime, age_limit_days: int) -> Refundable:
    """Raise a :class:`RuleError` unless ``amount`` may go back to this card now."""
    if original.kind is not TxnKind.SALE or original.status is not TxnStatus.APPROVED:
        raise OriginalStateError(f"voucher {original.voucher} is not an approved sale "
                                 f"({original.kind}, {original.status})",
                                 cashier_zh="原交易不是成功的消费",
                                 cashier_en="Not an approved sale")
    if is_voided(children):
        raise OriginalStateError(f"sale {original.voucher} was voided; nothing to refund",
                                 cashier_zh="原交易已撤销，不能退货",
                                 cashier_en="Sale was voided; cannot refund")
    if original.pan_hash != pan_hash:
        raise CardMismatchError("the card presented is not the card of the original sale "
                                f"({original.pan_masked})")
    if (now.date() - original.created_at.date()).days > age_limit_days:  # calendar days
        raise RefundTooOldError(f"sale {original.voucher} of {original.created_at:%Y-%m-%d} is "
                                f"older than {age_limit_days} days")
    left = refundable_of(original, children)
    if amount <= 0:
        raise RefundAmountError("refund amount must be more than 0.00",
                                cashier_zh="退款金额必须大于零",
                                cashier_en="Refund must be more than 0.00")
    if amount > left.refundable:
        doubt = (f" ({format_amount(left.in_doubt)} more in refunds not yet confirmed)"
                 if left.in_doubt else "")
        raise RefundAmountError(f"refund {format_amount(amount)} is more than the refundable "
                                f"{format_amount(left.refundable)}{doubt}")
    return left


def check_void(original: TxnRecord, children: Sequence[TxnRecord], *, pan_hash: str | None,
               open_batch: str) -> None:
    """Raise a :class:`RuleError` unless the sale may be voided: same batch, once, unrefunded."""
    if original.kind is not TxnKind.SALE or original.status is not TxnStatus.APPROVED:
        raise OriginalStateError(f"voucher {original.voucher} is not an approved sale",
                                 cashier_zh="原交易不是成功的消费",
                                 cashier_en="Not an approved sale")
    if is_voided(children):
        raise OriginalStateError(f"sale {original.voucher} is already voided",
                                 cashier_zh="原交易已撤销", cashier_en="Already voided")
    if any(c.kind is TxnKind.REFUND and c.status in _LIVE for c in children):
        raise OriginalStateError(f"sale {original.voucher} has refunds; it cannot be voided",
                                 cashier_zh="原交易已退货，不能撤销",
                                 cashier_en="Sale has refunds; cannot void")
    if original.batch != open_batch:
        raise OriginalStateError(f"sale {original.voucher} is in batch {original.batch}, "
                                 f"settled or not today's; refund it instead",
                                 cashier_zh="非当前批次交易，不能撤销，请做退货",
                                 cashier_en="Not in the open batch; refund instead")
    if pan_hash is not None and original.pan_hash != pan_hash:
        raise CardMismatchError("the card presented is not the card of the original sale")
