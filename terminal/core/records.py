"""What the journal holds, as typed values: one :class:`TxnRecord` per financial request.

Rows never carry a full PAN: ``pan_masked`` for people, ``pan_hash`` (a keyed
hash) for the same-card check.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TxnKind(StrEnum):
    SALE = "sale"
    VOID = "void"
    REFUND = "refund"
    BALANCE = "balance"


class TxnStatus(StrEnum):
    PENDING = "pending"  # written, maybe sent, no answer recorded yet
    APPROVED = "approved"
    DECLINED = "declined"
    UNCERTAIN = "uncertain"  # no valid answer; a reversal or advice resend is queued
    REVERSED = "reversed"  # the host confirmed the reversal


class RefundReason(StrEnum):
    DAMAGED = "damaged"  # 商品损坏
    NOT_RECEIVED = "not_received"  # 未收到货
    WRONG_TRANSACTION = "wrong_transaction"  # 交易错误
    DUPLICATE_CHARGE = "duplicate_charge"  # 重复扣款
    CUSTOMER_CANCELLED = "customer_cancelled"  # 顾客取消
    OTHER = "other"  # 其他 (a note is required)


REASON_TEXT: dict[RefundReason, tuple[str, str]] = {
    RefundReason.DAMAGED: ("商品损坏", "Damaged goods"),
    RefundReason.NOT_RECEIVED: ("未收到货", "Not received"),
    RefundReason.WRONG_TRANSACTION: ("交易错误", "Wrong transaction"),
    RefundReason.DUPLICATE_CHARGE: ("重复扣款", "Duplicate charge"),
    RefundReason.CUSTOMER_CANCELLED: ("顾客取消", "Customer cancelled"),
    RefundReason.OTHER: ("其他", "Other"),
}


@dataclass(frozen=True)
class TxnRecord:
    """One row of the ``txn`` table (see :mod:`terminal.core.schema`)."""

    id: int
    kind: TxnKind
    mti: str
    stan: str
    batch: str
    amount: int
    currency: str
    pan_masked: str
    pan_hash: str
    scheme: str | None
    entry_mode: str | None
    card_label: str | None
    aid: str | None
    status: TxnStatus
    response_code: str | None
    rrn: str | None
    auth_code: str | None
    host_date: str | None
    host_time: str | None
    created_at: datetime
    answered_at: datetime | None
    original_id: int | None
    original_rrn: str | None
    original_batch: str | None
    original_stan: str | None
    original_date: str | None
    original_amount: int | None
    reason: str | None
    note: str | None
    operator: str | None
    training: bool
    cryptogram_type: str | None = None  # ARQC / AAC / TC the card gave
    cryptogram: str | None = None  # 9F26 hex, printed on chip receipts

    @property
    def voucher(self) -> str:
        """The voucher number (凭证号) printed on the receipt: the STAN on CUP terminals."""
        return self.stan

    @property
    def approved(self) -> bool:
        return self.status is TxnStatus.APPROVED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TxnRecord:
        answered = row["answered_at"]
        return cls(
            id=row["id"], kind=TxnKind(row["kind"]), mti=row["mti"], stan=row["stan"],
            batch=row["batch"], amount=row["amount"], currency=row["currency"],
            pan_masked=row["pan_masked"], pan_hash=row["pan_hash"], scheme=row["scheme"],
            entry_mode=row["entry_mode"], card_label=row["card_label"], aid=row["aid"],
            status=TxnStatus(row["status"]), response_code=row["response_code"],
            rrn=row["rrn"], auth_code=row["auth_code"], host_date=row["host_date"],
            host_time=row["host_time"], created_at=datetime.fromisoformat(row["created_at"]),
            answered_at=datetime.fromisoformat(answered) if answered else None,
            original_id=row["original_id"], original_rrn=row["original_rrn"],
            original_batch=row["original_batch"], original_stan=row["original_stan"],
            original_date=row["original_date"], original_amount=row["original_amount"],
            reason=row["reason"], note=row["note"], operator=row["operator"],
            training=bool(row["training"]), cryptogram_type=row["cryptogram_type"],
            cryptogram=row["cryptogram"])


TXN_COLUMNS = ("id, kind, mti, stan, batch, amount, currency, pan_masked, pan_hash, scheme, "
               "entry_mode, card_label, aid, status, response_code, rrn, auth_code, host_date, "
               "host_time, created_at, answered_at, original_id, original_rrn, original_batch, "
               "original_stan, original_date, original_amount, reason, note, operator, training, "
               "cryptogram_type, cryptogram")
