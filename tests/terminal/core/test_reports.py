"""Reports: a mixed day's totals, breakdowns, the settlement slip and the export."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso8583.settlement import SettlementTotals
from terminal.core.receipts import MerchantInfo, render_escpos, render_text
from terminal.core.records import TxnKind, TxnRecord, TxnStatus
from terminal.core.reports import (
    EXPORT_COLUMNS,
    ExportError,
    Total,
    batch_report,
    day_report,
    export_rows,
    range_report,
    settlement_slip,
    voided_ids,
)
from tests.terminal.core.test_approvals import make_record, refund

DAY = datetime(2024, 5, 1, 9, 0, 0)
PAN = "6225880000000019"
MERCHANT = MerchantInfo("测试商户", "898310048990001", "10000001")


def at(minutes: int) -> datetime:
    return DAY + timedelta(minutes=minutes)


def mixed_day() -> list[TxnRecord]:
    """A day of batch 000001 and the first hour of the next day (same batch)."""
    return [
        make_record(id=1, stan="000001", amount=100_00, created_at=at(0)),  # sale, refunded 30
        make_record(id=2, stan="000002", amount=50_00, created_at=at(5)),  # sale, voided
        make_record(id=3, stan="000003", amount=20_00, created_at=at(6), scheme="VIS",
                    aid="A0000000031010", card_label=None),  # foreign sale
        make_record(id=4, stan="000004", amount=99_00, created_at=at(7),
                    status=TxnStatus.DECLINED, response_code="51"),
        make_record(id=5, kind=TxnKind.VOID, stan="000005", amount=50_00, created_at=at(8),
                    original_id=2, original_stan="000002", operator="02"),
        refund(id=6, stan="000006", amount=30_00, created_at=at(10), original_id=1,
               reason="damaged", operator="01"),
        refund(id=7, stan="000007", amount=5_00, created_at=at(11), original_id=3,
               reason="customer_cancelled", operator="02", scheme="VIS",
               aid="A0000000031010", card_label=None),
        refund(id=8, stan="000008", amount=7_00, created_at=at(12), original_id=1,
               status=TxnStatus.UNCERTAIN, rrn=None),
        refund(id=9, stan="000009", amount=1_00, created_at=at(13), original_id=1,
               status=TxnStatus.REVERSED),
        make_record(id=10, stan="000010", amount=8_00, created_at=at(14), training=True),
        make_record(id=11, kind=TxnKind.BALANCE, stan="000011", amount=0, created_at=at(15)),
        make_record(id=12, stan="000012", amount=40_00, created_at=at(15 * 60 + 5)),  # day 2
    ]


def test_voided_sales_found_by_id_or_by_voucher() -> None:
    records = mixed_day()
    assert voided_ids(records) == {2}
    by_voucher = [replace(r, original_id=None) if r.kind is TxnKind.VOID else r
                  for r in records]
    assert voided_ids(by_voucher) == {2}
    declined_void = [replace(r, status=TxnStatus.DECLINED) if r.kind is TxnKind.VOID else r
                     for r in records]
    assert voided_ids(declined_void) == set()


def test_day_report_of_a_mixed_day() -> None:
    report = day_report(mixed_day(), DAY.date())
    assert report.sales == Total(2, 120_00)  # 100 + 20; the voided 50 is out
    assert report.refunds == Total(2, 35_00)
    assert report.voids == Total(1, 50_00)
    assert report.net == 85_00
    assert report.domestic_sales == Total(1, 100_00)
    assert report.foreign_sales == Total(1, 20_00)
    assert report.domestic_refunds == Total(1, 30_00)
    assert report.foreign_refunds == Total(1, 5_00)
    assert report.refunds_by_reason == {"customer_cancelled": Total(1, 5_00),
                                        "damaged": Total(1, 30_00)}
    assert report.refunds_by_operator == {"01": Total(1, 30_00), "02": Total(1, 5_00)}
    assert report.refunds_by_card_type == {"credit": Total(1, 5_00), "debit": Total(1, 30_00)}
    assert [(v.voucher, v.original_voucher) for v in report.void_list] == [("000005", "000002")]
    assert report.declined == 1
    assert report.unresolved == Total(1, 7_00)


def test_batch_and_range_reports() -> None:
    records = mixed_day()
    batch = batch_report(records, "000001")
    assert batch.sales == Total(3, 160_00)  # the next morning's sale is in the same batch
    assert batch_report(records, "000002").sales == Total()
    morning = range_report(records, at(0), at(6))
    assert morning.sales == Total(1, 100_00)  # the sale at 09:05 was voided later
    assert day_report(records, date(2024, 5, 2)).sales == Total(1, 40_00)


def test_training_reported_apart() -> None:
    report = day_report(mixed_day(), DAY.date(), training=True)
    assert report.sales == Total(1, 8_00)
    assert report.refunds == Total()


def test_settlement_totals_match_the_hosts_rule() -> None:
    records = mixed_day()
    expected = SettlementTotals()
    voided = voided_ids(records)
    for r in records:
        if r.training or r.status is not TxnStatus.APPROVED or r.scheme is None:
            continue
        if r.kind is TxnKind.SALE and r.id not in voided:
            expected = expected.add(r.scheme, r.amount, credit=False)
        elif r.kind is TxnKind.REFUND:
            expected = expected.add(r.scheme, r.amount, credit=True)
    got = batch_report(records, "000001").settlement_totals()
    assert got == expected
    assert got.agrees_with(expected) == (True, True)


@settings(deadline=None)  # a loaded machine must not fail it on time
@given(st.lists(st.tuples(st.sampled_from([TxnKind.SALE, TxnKind.REFUND]),
                          st.sampled_from(list(TxnStatus)),
                          st.integers(min_value=1, max_value=10**8),
                          st.sampled_from(["CUP", "VIS", "MCC"]),
                          st.booleans()), max_size=30))
def test_totals_equal_the_journal(rows: list[tuple[TxnKind, TxnStatus, int, str, bool]]) -> None:
    records = [make_record(id=i + 1, stan=f"{i + 1:06d}", kind=k, status=s, amount=a, scheme=sc,
                           training=t)
               for i, (k, s, a, sc, t) in enumerate(rows)]
    report = day_report(records, DAY.date())
    live = [r for r in records if r.status is TxnStatus.APPROVED and not r.training]
    sales = sum(r.amount for r in live if r.kind is TxnKind.SALE)
    refunds = sum(r.amount for r in live if r.kind is TxnKind.REFUND)
    assert report.sales.amount == sales
    assert report.refunds.amount == refunds
    assert report.net == sales - refunds
    assert report.domestic_sales.amount + report.foreign_sales.amount == sales
    assert sum(t.amount for t in report.refunds_by_operator.values()) == refunds
    assert sum(t.count for t in report.refunds_by_card_type.values()) == report.refunds.count


@pytest.mark.parametrize("lang", ["zh", "en", "both"])
def test_report_text_and_json(lang: str) -> None:
    report = day_report(mixed_day(), DAY.date(),
                        settlements=[{"batch": "000001", "balanced": True},
                                     {"batch": "000009", "balanced": False}])
    text = report.render_text(lang, 32)  # type: ignore[arg-type]
    assert all(len(line) <= 32 for line in text.splitlines())
    assert "120.00" in text
    assert "35.00" in text
    assert "85.00" in text
    if lang != "zh":
        assert "REFUNDS BY REASON" in text
        assert "Damaged goods" in text
        assert "BALANCED" in text
    if lang != "en":
        assert "退货原因汇总" in text
        assert "商品损坏" in text
    data = json.loads(report.to_json())
    assert data["totals"]["sale"] == {"count": 2, "amount": 120_00}
    assert data["net"] == 85_00
    assert data["refunds_by_reason"]["damaged"] == {"count": 1, "amount": 30_00}
    assert [s["batch"] for s in data["settlements"]] == ["000001"]


@pytest.mark.parametrize(("balanced", "word"), [(True, "对账平"), (False, "对账不平"),
                                                (None, "对账结果未知")])
def test_settlement_slip(balanced: bool | None, word: str) -> None:
    slip = settlement_slip(mixed_day(), "000001", MERCHANT, settled_at=at(16 * 60),
                           balanced=balanced, lang="zh")
    text = render_text(slip, 32)
    for expected in ("结算单", "898310048990001", "10000001", "000001", "2024/05/02 01:00:00",
                     "内卡", "外卡", "2 / 140.00", "1 / 20.00", "1 / 30.00", "1 / 5.00", word):
        assert expected in text, expected
    raw = render_escpos(slip)
    assert raw.endswith(b"\x1dVB\x00")


def test_export_csv_and_json() -> None:
    records = mixed_day()
    records[0] = replace(records[0], note=f"=HYPERLINK(\"x\") card {PAN}")
    text = export_rows(records, "csv", from_=at(0), to=at(12))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    assert rows[0]["amount"] == "100.00"
    assert rows[0]["note"].startswith("'=")  # a spreadsheet will not run it
    assert rows[0]["pan_masked"] == "622588******0019"
    assert PAN not in text
    assert "pan_hash" not in text
    assert not re.search(r"\d{13,}", text)
    data = json.loads(export_rows(records, "json"))
    assert len(data) == len(records)
    assert data[-1]["created_at"] == "2024-05-02 00:05:00"
    assert PAN not in json.dumps(data)
    with pytest.raises(ValueError, match="csv or json"):
        export_rows(records, "xml")  # type: ignore[arg-type]


def test_export_refuses_an_unmasked_pan() -> None:
    with pytest.raises(ExportError):
        export_rows([make_record(pan_masked=PAN)])
