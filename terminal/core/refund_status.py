"""What the terminal knows about one refund, for "the money has not arrived".

:func:`refund_status` is pure: the refund's journal record, its original (if
the journal has it) and which batches were settled (and whether the host
agreed) in; a :class:`RefundStatusView` out, with zh/en lines for the screen.

Card type (:func:`card_type`), from what the record carries, first match wins:

1. The AID. UnionPay ``A000000333 010101`` debit, ``...010102`` credit,
   ``...010103`` quasi-credit (准贷记卡, settles like a credit card). Visa
   Electron ``A0000000032010``, V PAY ``A0000000032020`` and Maestro
   ``A0000000043060`` are debit.
2. The card label: 借记 / DEBIT, 准贷记 / QUASI, 贷记 / 信用 / CREDIT.
3. The scheme: VIS, MCC, JCB, AMX, DCC are treated as credit (their refunds
   follow the credit timeline) unless 1. or 2. said debit; a CUP card with
   neither AID nor label (a stripe card) is UNKNOWN.

Expected arrival windows are configurable text (:class:`ArrivalWindows`);
defaults: debit 1-3 working days, credit up to 7-15 working days after
settlement. An unknown card type shows both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Literal

from iso8583.masking import mask_text
from iso8583.responses import explain
from terminal.core.money import format_amount
from terminal.core.records import REASON_TEXT, RefundReason, TxnKind, TxnRecord, TxnStatus

Lang = Literal["zh", "en", "both"]


class CardType(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"
    QUASI_CREDIT = "quasi_credit"
    UNKNOWN = "unknown"


CARD_TYPE_TEXT: dict[CardType, tuple[str, str]] = {
    CardType.DEBIT: ("借记卡", "Debit card"),
    CardType.CREDIT: ("贷记卡", "Credit card"),
    CardType.QUASI_CREDIT: ("准贷记卡", "Quasi-credit card"),
    CardType.UNKNOWN: ("未知卡种", "Card type unknown"),
}

_AID_TYPES: tuple[tuple[str, CardType], ...] = (
    ("A000000333010101", CardType.DEBIT),
    ("A000000333010102", CardType.CREDIT),
    ("A000000333010103", CardType.QUASI_CREDIT),
    ("A0000000032010", CardType.DEBIT),  # Visa Electron
    ("A0000000032020", CardType.DEBIT),  # V PAY
    ("A0000000043060", CardType.DEBIT),  # Maestro
)
_CREDIT_SCHEMES = frozenset({"VIS", "MCC", "JCB", "AMX", "DCC"})


def card_type(record: TxnRecord) -> CardType:
    """Debit, credit, quasi-credit or unknown, from the AID, the label and the scheme."""
    aid = (record.aid or "").strip().upper()
    for prefix, kind in _AID_TYPES:
        if aid.startswith(prefix):
            return kind
    label = (record.card_label or "").upper()
    if "准贷记" in label or "QUASI" in label:
        return CardType.QUASI_CREDIT
    if "借记" in label or "DEBIT" in label:
        return CardType.DEBIT
    if "贷记" in label or "信用" in label or "CREDIT" in label:
        return CardType.CREDIT
    if (record.scheme or "").strip().upper() in _CREDIT_SCHEMES:
        return CardType.CREDIT
    return CardType.UNKNOWN


def pick(text: tuple[str, str], lang: Lang) -> str:
    """One (zh, en) pair in the asked language; ``both`` joins them with `` / ``."""
    zh, en = text
    if lang == "zh":
        return zh
    if lang == "en":
        return en
    return f"{zh} / {en}"


@dataclass(frozen=True)
class ArrivalWindows:
    """The expected-arrival texts printed and shown for refunds, per card type (zh, en)."""

    debit: tuple[str, str] = ("结算后1-3个工作日到账", "1-3 working days after settlement")
    credit: tuple[str, str] = ("结算后7-15个工作日内到账",
                               "up to 7-15 working days after settlement")
    unknown: tuple[str, str] = ("借记卡1-3个工作日，信用卡7-15个工作日内（结算后）",
                                "debit 1-3, credit up to 7-15 working days after settlement")

    def for_card(self, kind: CardType) -> tuple[str, str]:
        if kind is CardType.DEBIT:
            return self.debit
        if kind in (CardType.CREDIT, CardType.QUASI_CREDIT):
            return self.credit
        return self.unknown

    def text(self, kind: CardType, lang: Lang = "both") -> str:
        return pick(self.for_card(kind), lang)


class RefundState(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    UNCERTAIN = "uncertain"  # pending or uncertain in the journal: the terminal resolves it
    REVERSED = "reversed"  # the host confirmed the reversal: no money moved


STATE_TEXT: dict[RefundState, tuple[str, str]] = {
    RefundState.APPROVED: ("退货成功", "Refund approved"),
    RefundState.DECLINED: ("退货失败", "Refund declined"),
    RefundState.UNCERTAIN: ("结果未知", "Outcome not known yet"),
    RefundState.REVERSED: ("已冲正，未退款", "Reversed: no refund was made"),
}

NEXT_STEP_TEXT: dict[str, tuple[str, str]] = {
    "advice": ("终端将重发退货通知，直至主机确认", "The terminal will resend the refund advice "
               "until the host confirms it"),
    "reversal": ("终端将向主机冲正，此笔退货不会生效", "The terminal will reverse it with the "
                 "host; this refund will not take effect"),
    "ask": ("终端将向主机查询结果（对账）", "The terminal will ask the host (reconciliation)"),
}


class NotARefundError(ValueError):
    """:func:`refund_status` was given a record that is not a refund."""


@dataclass(frozen=True)
class RefundStatusView:
    """Everything the terminal can tell about one refund."""

    state: RefundState
    amount: int
    currency: str
    pan_masked: str
    voucher: str
    batch: str
    rrn: str | None
    auth_code: str | None
    response_code: str | None
    original_rrn: str | None
    original_voucher: str | None
    original_date: str | None
    operator: str | None
    reason: str | None
    note: str | None
    created_at: str
    settled: bool
    host_agreed: bool | None  # after settlement: the host's totals agreed (None: unknown)
    card_type: CardType
    arrival: tuple[str, str] | None  # approved refunds only
    decline: tuple[str, str] | None  # declined: what the response code means
    next_step: tuple[str, str] | None  # uncertain: what the terminal will do

    def lines(self, lang: Lang = "both") -> list[tuple[str, str]]:
        """(label, value) pairs for a screen or ``pos-terminal refund-status``."""
        def label(zh: str, en: str) -> str:
            return pick((zh, en), lang)

        out = [(label("状态", "Status"), pick(STATE_TEXT[self.state], lang)),
               (label("金额", "Amount"), format_amount(self.amount)),
               (label("卡号", "Card"), self.pan_masked),
               (label("卡种", "Card type"), pick(CARD_TYPE_TEXT[self.card_type], lang)),
               (label("凭证号", "Voucher"), self.voucher),
               (label("批次号", "Batch"), self.batch),
               (label("参考号", "RRN"), self.rrn or "-"),
               (label("授权码", "Auth code"), self.auth_code or "-"),
               (label("原参考号", "Original RRN"), self.original_rrn or "-"),
               (label("操作员", "Operator"), self.operator or "-"),
               (label("退货原因", "Reason"), self._reason(lang)),
               (label("时间", "Time"), self.created_at)]
        if self.decline is not None:
            out.append((label("失败原因", "Declined"),
                        f"{pick(self.decline, lang)} ({self.response_code or '--'})"))
        if self.next_step is not None:
            out.append((label("处理", "Next"), pick(self.next_step, lang)))
        if self.state is RefundState.APPROVED:
            if not self.settled:
                settled = pick(("未结算", "not settled yet"), lang)
            elif self.host_agreed is None:
                settled = pick(("已结算（对账结果未知）", "settled (host totals unknown)"), lang)
            elif self.host_agreed:
                settled = pick(("已结算，对账平", "settled, host agreed"), lang)
            else:
                settled = pick(("已结算，对账不平", "settled, host did not agree"), lang)
            out.append((label("结算", "Settlement"), f"{settled} [{self.batch}]"))
        if self.arrival is not None:
            out.append((label("预计到账", "Expected arrival"), pick(self.arrival, lang)))
        return out

    def _reason(self, lang: Lang) -> str:
        if self.reason is None:
            return "-"
        try:
            text = pick(REASON_TEXT[RefundReason(self.reason)], lang)
        except ValueError:
            text = self.reason
        return f"{text}: {self.note}" if self.note else text

    def to_json(self) -> str:
        data = asdict(self)
        data["lines_en"] = self.lines("en")
        return json.dumps(data, ensure_ascii=False, sort_keys=True)


def refund_status(refund: TxnRecord, original: TxnRecord | None,
                  settled_batches: Mapping[str, bool | None], *,
                  windows: ArrivalWindows | None = None,
                  pending_action: Literal["advice", "reversal"] | None = None,
                  ) -> RefundStatusView:
    """The status view of ``refund``.

    ``settled_batches`` maps every settled batch to whether the host agreed
    (None: unknown). ``pending_action`` is the open entry of the terminal's
    pending queue for this refund, if any: it says what an uncertain refund
    will become (no entry: the terminal asks the host).
    """
    if refund.kind is not TxnKind.REFUND:
        raise NotARefundError(f"txn {refund.id} is a {refund.kind.value}, not a refund")
    windows = windows or ArrivalWindows()
    state = {TxnStatus.APPROVED: RefundState.APPROVED, TxnStatus.DECLINED: RefundState.DECLINED,
             TxnStatus.REVERSED: RefundState.REVERSED}.get(refund.status, RefundState.UNCERTAIN)
    # The original's card data is the better source when the refund's is thin (manual entry).
    kind = card_type(refund)
    if kind is CardType.UNKNOWN and original is not None:
        kind = card_type(original)
    settled = refund.batch in settled_batches
    decline = None
    if state is RefundState.DECLINED:
        entry = explain(refund.response_code)
        decline = (entry.zh, entry.en)
    next_step = None
    if state is RefundState.UNCERTAIN:
        next_step = NEXT_STEP_TEXT[pending_action or "ask"]
    return RefundStatusView(
        state=state, amount=refund.amount, currency=refund.currency,
        pan_masked=refund.pan_masked, voucher=refund.voucher, batch=refund.batch,
        rrn=refund.rrn, auth_code=refund.auth_code, response_code=refund.response_code,
        original_rrn=refund.original_rrn or (original.rrn if original else None),
        original_voucher=refund.original_stan or (original.stan if original else None),
        original_date=refund.original_date or (original.host_date if original else None),
        operator=refund.operator, reason=refund.reason,
        note=mask_text(refund.note) if refund.note else None,
        created_at=refund.created_at.isoformat(sep=" ", timespec="seconds"),
        settled=settled, host_agreed=settled_batches.get(refund.batch) if settled else None,
        card_type=kind,
        arrival=windows.for_card(kind) if state is RefundState.APPROVED else None,
        decline=decline, next_step=next_step)
