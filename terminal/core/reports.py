"""Reports over the journal's records: a day, a batch or a date range; the settlement slip; export.

Pure functions over ``Sequence[TxnRecord]``. Totals count approved
transactions only, the way CUP settles a batch: a sale that was voided is
left out of the sale totals (and the void itself moves no money at
settlement); refunds are the credit side. Pending and uncertain requests are
not in the totals; the report counts them apart so nobody forgets them.
Training records are reported only in a training report (``training=True``).

``records`` given to a report may be more than its scope (the whole journal):
a sale in scope that was voided by a record outside it (a void after midnight
in the same batch) still counts as voided.

Domestic (内卡) means scheme ``CUP``, every other card organisation is
foreign (外卡), as :mod:`iso8583.settlement` splits settlement totals; a record
without a scheme counts in the totals but in neither half (the till's batch
totals leave it out too). :meth:`Report.settlement_totals` gives the halves as
the :class:`~iso8583.settlement.SettlementTotals` the host compares.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from iso8583.masking import mask_text
from iso8583.settlement import HalfTotals, SettlementTotals, is_domestic
from terminal.core.errors import TerminalError
from terminal.core.money import format_amount
from terminal.core.receipts import (
    Amount,
    Item,
    KeyValue,
    Lang,
    MerchantInfo,
    Notice,
    Receipt,
    Separator,
    Title,
    render_text,
    say,
)
from terminal.core.records import REASON_TEXT, RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.refund_status import CARD_TYPE_TEXT, CardType, card_type


class ExportError(TerminalError):
    """A record would have left the terminal with card data that is not masked."""


@dataclass(frozen=True)
class Total:
    count: int = 0
    amount: int = 0

    def plus(self, amount: int) -> Total:
        return Total(self.count + 1, self.amount + amount)

    def text(self) -> str:
        return f"{self.count} / {format_amount(self.amount)}"


@dataclass(frozen=True)
class VoidLine:
    voucher: str
    original_voucher: str | None
    amount: int
    operator: str | None
    at: str


@dataclass(frozen=True)
class Report:
    """The figures of one scope. Amounts in fen; ``by_*`` maps are approved refunds."""

    scope: str
    sales: Total = Total()
    refunds: Total = Total()
    voids: Total = Total()
    domestic_sales: Total = Total()
    domestic_refunds: Total = Total()
    foreign_sales: Total = Total()
    foreign_refunds: Total = Total()
    refunds_by_reason: dict[str, Total] = field(default_factory=dict)
    refunds_by_operator: dict[str, Total] = field(default_factory=dict)
    refunds_by_card_type: dict[str, Total] = field(default_factory=dict)
    void_list: tuple[VoidLine, ...] = ()
    declined: int = 0
    unresolved: Total = Total()  # pending or uncertain: not in the totals
    settlements: tuple[dict[str, Any], ...] = ()

    @property
    def net(self) -> int:
        """Sales minus refunds: what the batch brings the merchant."""
        return self.sales.amount - self.refunds.amount

    def settlement_totals(self) -> SettlementTotals:
        """The halves as the host compares them (sales are debits, refunds credits)."""
        def half(sales: Total, refunds: Total) -> HalfTotals:
            return HalfTotals(sales.count, sales.amount, refunds.count, refunds.amount)

        return SettlementTotals(half(self.domestic_sales, self.domestic_refunds),
                                half(self.foreign_sales, self.foreign_refunds))

    def to_json(self) -> str:
        def tot(t: Total) -> dict[str, int]:
            return {"count": t.count, "amount": t.amount}

        data = {
            "scope": self.scope, "net": self.net,
            "totals": {"sale": tot(self.sales), "refund": tot(self.refunds),
                       "void": tot(self.voids)},
            "domestic": {"sale": tot(self.domestic_sales), "refund": tot(self.domestic_refunds)},
            "foreign": {"sale": tot(self.foreign_sales), "refund": tot(self.foreign_refunds)},
            "refunds_by_reason": {k: tot(v) for k, v in self.refunds_by_reason.items()},
            "refunds_by_operator": {k: tot(v) for k, v in self.refunds_by_operator.items()},
            "refunds_by_card_type": {k: tot(v) for k, v in self.refunds_by_card_type.items()},
            "voids": [vars(v) for v in self.void_list],
            "declined": self.declined, "unresolved": tot(self.unresolved),
            "settlements": list(self.settlements),
        }
        return json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)

    def render_text(self, lang: Lang = "both", width: int = 32) -> str:
        return render_text(report_receipt(self, lang), width)


# --- scopes --------------------------------------------------------------------------------
def voided_ids(records: Iterable[TxnRecord]) -> set[int]:
    """Ids of sales an approved void cancelled (by ``original_id``, else batch + voucher)."""
    recs = list(records)
    by_ref = {(r.batch, r.stan): r.id for r in recs if r.kind is TxnKind.SALE}
    out: set[int] = set()
    for r in recs:
        if r.kind is TxnKind.VOID and r.status is TxnStatus.APPROVED:
            if r.original_id is not None:
                out.add(r.original_id)
            elif r.original_stan is not None:
                sale = by_ref.get((r.original_batch or r.batch, r.original_stan))
                if sale is not None:
                    out.add(sale)
    return out


def in_scope(record: TxnRecord, *, day: date | None = None, batch: str | None = None,
             from_: datetime | None = None, to: datetime | None = None) -> bool:
    """Whether ``record`` falls in the scope (every given condition; ``to`` excluded)."""
    at = record.created_at
    return ((day is None or at.date() == day) and (batch is None or record.batch == batch)
            and (from_ is None or at >= from_) and (to is None or at < to))


def day_report(records: Sequence[TxnRecord], day: date, *,
               settlements: Sequence[Mapping[str, Any]] = (), training: bool = False) -> Report:
    return build_report(records, f"day {day.isoformat()}", settlements=settlements,
                        training=training, day=day)


def batch_report(records: Sequence[TxnRecord], batch: str, *,
                 settlements: Sequence[Mapping[str, Any]] = (), training: bool = False) -> Report:
    return build_report(records, f"batch {batch}", settlements=settlements,
                        training=training, batch=batch)


def range_report(records: Sequence[TxnRecord], from_: datetime, to: datetime, *,
                 settlements: Sequence[Mapping[str, Any]] = (), training: bool = False) -> Report:
    scope = f"{from_.isoformat(sep=' ', timespec='minutes')} .. " \
            f"{to.isoformat(sep=' ', timespec='minutes')}"
    return build_report(records, scope, settlements=settlements, training=training,
                        from_=from_, to=to)


def build_report(records: Sequence[TxnRecord], scope: str, *,
                 settlements: Sequence[Mapping[str, Any]] = (), training: bool = False,
                 day: date | None = None, batch: str | None = None,
                 from_: datetime | None = None, to: datetime | None = None) -> Report:
    """The report of the records in scope (``records`` may be the whole journal)."""
    voided = voided_ids(records)
    sales = refunds = voids = dom_s = dom_r = for_s = for_r = unresolved = Total()
    by_reason: dict[str, Total] = {}
    by_operator: dict[str, Total] = {}
    by_card: dict[str, Total] = {}
    void_list: list[VoidLine] = []
    declined = 0
    batches: set[str] = set()
    for r in records:
        if r.training != training or not in_scope(r, day=day, batch=batch, from_=from_, to=to):
            continue
        if r.kind is TxnKind.BALANCE:
            continue
        batches.add(r.batch)
        if r.status in (TxnStatus.PENDING, TxnStatus.UNCERTAIN):
            unresolved = unresolved.plus(r.amount)
            continue
        if r.status is TxnStatus.DECLINED:
            declined += 1
            continue
        if r.status is not TxnStatus.APPROVED:
            continue  # reversed: nothing moved
        half = None if r.scheme is None else is_domestic(r.scheme)
        if r.kind is TxnKind.SALE and r.id not in voided:
            sales = sales.plus(r.amount)
            if half is True:
                dom_s = dom_s.plus(r.amount)
            elif half is False:
                for_s = for_s.plus(r.amount)
        elif r.kind is TxnKind.REFUND:
            refunds = refunds.plus(r.amount)
            if half is True:
                dom_r = dom_r.plus(r.amount)
            elif half is False:
                for_r = for_r.plus(r.amount)
            reason = r.reason or "-"
            by_reason[reason] = by_reason.get(reason, Total()).plus(r.amount)
            who = r.operator or "-"
            by_operator[who] = by_operator.get(who, Total()).plus(r.amount)
            kind = card_type(r).value
            by_card[kind] = by_card.get(kind, Total()).plus(r.amount)
        elif r.kind is TxnKind.VOID:
            voids = voids.plus(r.amount)
            void_list.append(VoidLine(r.voucher, r.original_stan, r.amount, r.operator,
                                      r.created_at.isoformat(sep=" ", timespec="seconds")))
    chosen = tuple(dict(s) for s in settlements if str(s.get("batch")) in batches
                   or (batch is not None and str(s.get("batch")) == batch))
    return Report(scope=scope, sales=sales, refunds=refunds, voids=voids,
                  domestic_sales=dom_s, domestic_refunds=dom_r, foreign_sales=for_s,
                  foreign_refunds=for_r, refunds_by_reason=dict(sorted(by_reason.items())),
                  refunds_by_operator=dict(sorted(by_operator.items())),
                  refunds_by_card_type=dict(sorted(by_card.items())),
                  void_list=tuple(void_list), declined=declined, unresolved=unresolved,
                  settlements=chosen)


# --- text ------------------------------------------------------------------------------------
_W: dict[str, tuple[str, str]] = {
    "report": ("交易汇总", "TRANSACTION REPORT"),
    "scope": ("范围", "SCOPE"),
    "sales": ("消费", "SALES"),
    "refunds": ("退货", "REFUNDS"),
    "voids": ("撤销", "VOIDS"),
    "net": ("净额", "NET"),
    "domestic": ("内卡", "DOMESTIC"),
    "foreign": ("外卡", "FOREIGN"),
    "by_reason": ("退货原因汇总", "REFUNDS BY REASON"),
    "by_operator": ("操作员退货汇总", "REFUNDS BY OPERATOR"),
    "by_card": ("卡种退货汇总", "REFUNDS BY CARD TYPE"),
    "void_list": ("撤销明细", "VOIDS"),
    "declined": ("失败笔数", "DECLINED"),
    "unresolved": ("未完成（不计入）", "UNRESOLVED (NOT COUNTED)"),
    "settlement": ("结算", "SETTLEMENT"),
    "slip": ("结算单", "SETTLEMENT SLIP"),
    "merchant_name": ("商户名称", "MERCHANT NAME"),
    "mid": ("商户编号", "MERCHANT NO."),
    "tid": ("终端编号", "TERMINAL NO."),
    "batch": ("批次号", "BATCH NO."),
    "datetime": ("日期/时间", "DATE/TIME"),
    "balanced": ("对账平", "BALANCED"),
    "unbalanced": ("对账不平", "NOT BALANCED"),
    "unknown": ("对账结果未知", "RESULT UNKNOWN"),
    "open": ("结算未完成", "NOT FINISHED"),
    "result": ("对账结果", "RESULT"),
    "operator": ("操作员", "OPERATOR"),
}


def _w(key: str, lang: Lang) -> str:
    return say(_W[key], lang)


def _reason_label(reason: str, lang: Lang) -> str:
    try:
        return say(REASON_TEXT[RefundReason(reason)], lang)
    except ValueError:
        return reason


def _balanced_text(balanced: object, lang: Lang) -> str:
    key = "unknown" if balanced is None else "balanced" if balanced else "unbalanced"
    return _w(key, lang)


def report_receipt(report: Report, lang: Lang = "both") -> Receipt:
    """The report as a receipt model (printable, or rendered as text)."""
    items: list[Item] = [Title(_w("report", lang)), KeyValue(_w("scope", lang), report.scope),
                         Separator(),
                         KeyValue(_w("sales", lang), report.sales.text()),
                         KeyValue(_w("refunds", lang), report.refunds.text()),
                         KeyValue(_w("voids", lang), report.voids.text()),
                         Amount(_w("net", lang), format_amount(report.net)),
                         Separator()]
    sections: tuple[tuple[str, dict[str, Total], Any], ...] = (
        ("by_reason", report.refunds_by_reason, lambda k: _reason_label(k, lang)),
        ("by_operator", report.refunds_by_operator, lambda k: k),
        ("by_card", report.refunds_by_card_type,
         lambda k: say(CARD_TYPE_TEXT[CardType(k)], lang)),
    )
    for key, table, name in sections:
        if table:
            items.append(Notice(_w(key, lang)))
            items += [KeyValue(name(k), v.text()) for k, v in table.items()]
    if report.void_list:
        items.append(Notice(_w("void_list", lang)))
        items += [KeyValue(f"{v.voucher} <- {v.original_voucher or '-'} ({v.operator or '-'})",
                           format_amount(v.amount)) for v in report.void_list]
    items.append(Separator())
    items.append(KeyValue(_w("declined", lang), str(report.declined)))
    items.append(KeyValue(_w("unresolved", lang), report.unresolved.text()))
    for s in report.settlements:
        items.append(KeyValue(f"{_w('settlement', lang)} {s.get('batch', '-')}",
                              _balanced_text(s.get("balanced"), lang)
                              if s.get("status", "settled") == "settled"
                              else _w("open", lang)))
    return Receipt(tuple(items), lang)


def render_report(report: Report, lang: Lang = "both", width: int = 32) -> str:
    return report.render_text(lang, width)


def settlement_slip(records: Sequence[TxnRecord], batch: str, merchant: MerchantInfo, *,
                    settled_at: datetime, balanced: bool | None,
                    lang: Lang = "both") -> Receipt:
    """The 结算单 of one batch: domestic and foreign sales and refunds, and the host's verdict."""
    rep = batch_report(records, batch)
    items: list[Item] = [
        Title(_w("slip", lang)),
        KeyValue(_w("merchant_name", lang), mask_text(merchant.name)),
        KeyValue(_w("mid", lang), merchant.mid),
        KeyValue(_w("tid", lang), merchant.tid),
        KeyValue(_w("batch", lang), batch),
        KeyValue(_w("datetime", lang), settled_at.strftime("%Y/%m/%d %H:%M:%S")),
        Separator(),
        Notice(_w("domestic", lang)),
        KeyValue(_w("sales", lang), rep.domestic_sales.text()),
        KeyValue(_w("refunds", lang), rep.domestic_refunds.text()),
        Notice(_w("foreign", lang)),
        KeyValue(_w("sales", lang), rep.foreign_sales.text()),
        KeyValue(_w("refunds", lang), rep.foreign_refunds.text()),
        Separator(),
        KeyValue(_w("voids", lang), rep.voids.text()),
        Amount(_w("net", lang), format_amount(rep.net)),
        KeyValue(_w("result", lang), _balanced_text(balanced, lang)),
    ]
    if rep.unresolved.count:
        items.append(KeyValue(_w("unresolved", lang), rep.unresolved.text()))
    return Receipt(tuple(items), lang)


# --- export ----------------------------------------------------------------------------------
EXPORT_COLUMNS = ("id", "created_at", "kind", "status", "amount", "currency", "pan_masked",
                  "scheme", "card_type", "entry_mode", "batch", "voucher", "rrn", "auth_code",
                  "host_date", "host_time", "response_code", "original_rrn", "original_batch",
                  "original_voucher", "original_date", "reason", "note", "operator", "training")


def _export_row(r: TxnRecord) -> dict[str, Any]:
    if "*" not in r.pan_masked or re.search(r"[0-9]{7,}", r.pan_masked):
        raise ExportError(f"txn {r.id}'s card number is not masked; refusing to export it")
    row: dict[str, Any] = {
        "id": r.id, "created_at": r.created_at.isoformat(sep=" ", timespec="seconds"),
        "kind": r.kind.value, "status": r.status.value, "amount": format_amount(r.amount),
        "currency": r.currency, "pan_masked": r.pan_masked, "scheme": r.scheme,
        "card_type": card_type(r).value, "entry_mode": r.entry_mode, "batch": r.batch,
        "voucher": r.voucher, "rrn": r.rrn, "auth_code": r.auth_code, "host_date": r.host_date,
        "host_time": r.host_time, "response_code": r.response_code,
        "original_rrn": r.original_rrn, "original_batch": r.original_batch,
        "original_voucher": r.original_stan, "original_date": r.original_date,
        "reason": r.reason, "note": r.note, "operator": r.operator, "training": r.training}
    return {k: mask_text(v) if isinstance(v, str) else v for k, v in row.items()}


def _csv_safe(value: Any) -> Any:
    """Free text that a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, str) and value[:1] == "-" and not value[1:2].isdigit():
        return "'" + value
    return value


def export_rows(records: Sequence[TxnRecord], fmt: Literal["csv", "json"] = "csv",
                from_: datetime | None = None, to: datetime | None = None) -> str:
    """The records with ``from_ <= created_at < to`` as CSV or JSON, PANs masked only."""
    rows = [_export_row(r) for r in sorted(records, key=lambda r: (r.created_at, r.id))
            if in_scope(r, from_=from_, to=to)]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1)
    if fmt != "csv":
        raise ValueError(f"export format must be csv or json, got {fmt!r}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_safe("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()
