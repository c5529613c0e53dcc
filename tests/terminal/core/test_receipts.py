"""Receipts: what is printed on each slip, in both languages, never a PAN, never too wide."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from terminal.core.receipts import (
    Amount,
    ChipInfo,
    Copy,
    KeyValue,
    MerchantInfo,
    Notice,
    Receipt,
    ReceiptError,
    Signature,
    Title,
    build_receipt,
    build_refund_proof,
    render_copies,
    render_escpos,
    render_text,
    text_width,
    txn_time,
    wrap,
)
from terminal.core.records import TxnKind, TxnStatus
from tests.terminal.core.test_approvals import make_record, refund

PAN = "6225880000000019"
MERCHANT = MerchantInfo("测试商户 Test Shop", "898310048990001", "10000001")
SALE = make_record(id=1, stan="000011", rrn="123456789011", auth_code="654321",
                   host_date="0501", host_time="101500", amount=123_45)
REFUND = refund(id=2, stan="000012", rrn="123456789012", auth_code="111111", amount=23_45,
                original_rrn="123456789011", original_stan="000011", original_date="0501",
                reason="damaged", note="screen cracked")
VOID = make_record(id=3, kind=TxnKind.VOID, mti="0200", stan="000013", rrn="123456789013",
                   amount=123_45, original_id=1, original_rrn="123456789011",
                   original_stan="000011")
CHIP = ChipInfo("A000000333010101", "1A2B3C4D5E6F7081")


def text_of(receipt: Receipt, width: int = 42) -> str:
    return render_text(receipt, width)


@pytest.mark.parametrize("width", [32, 42, 48])
def test_sale_merchant_copy_both_languages(width: int) -> None:
    out = text_of(build_receipt(SALE, MERCHANT, Copy.MERCHANT, "both", chip=CHIP), width)
    for expected in ("银联POS签购单", "POS SALES SLIP", "商户存根", "MERCHANT COPY",
                     "测试商户 Test Shop", "898310048990001", "10000001", "622588******0019",
                     "插卡 CHIP", "消费 SALE", "000001", "000011", "654321", "123456789011",
                     "2024/05/01 10:15:00", "RMB 123.45", "A000000333010101",
                     "1A2B3C4D5E6F7081", "持卡人签名", "CARDHOLDER SIGNATURE", "____"):
        assert expected in out, expected
    assert "DUPLICATE" not in out
    assert "TRAINING" not in out
    assert "原参考号" not in out


def test_cardholder_copy_has_no_signature_line() -> None:
    receipt = build_receipt(SALE, MERCHANT, Copy.CARDHOLDER, "zh")
    assert not any(isinstance(i, Signature) for i in receipt.items)
    out = text_of(receipt)
    assert "持卡人存根" in out
    assert "持卡人签名" not in out
    assert "MERCHANT" not in out  # Chinese only


def test_refund_slip_english() -> None:
    out = text_of(build_receipt(REFUND, MERCHANT, Copy.MERCHANT, "en",
                                arrival_window="1-3 working days after settlement"))
    for expected in ("REFUND", "ORIG. REF. NO.", "123456789011", "ORIG. VOUCHER", "000011",
                     "ORIG. DATE", "0501", "RMB -23.45", "Damaged goods: screen cracked",
                     "EXPECTED ARRIVAL", "1-3 working days after settlement",
                     "I CONFIRM THE REFUND"):
        assert expected in out, expected
    assert "退" not in out


def test_refund_slip_chinese_takes_originals_from_the_original_record() -> None:
    thin = replace(REFUND, original_rrn=None, original_stan=None, original_date=None)
    out = text_of(build_receipt(thin, MERCHANT, Copy.CARDHOLDER, "zh", original=SALE,
                                arrival_window="结算后1-3个工作日到账"))
    for expected in ("退货", "原参考号", "123456789011", "原凭证号", "000011", "退货原因",
                     "商品损坏: screen cracked", "预计到账", "结算后1-3个工作日到账", "RMB -23.45"):
        assert expected in out, expected


def test_void_slip() -> None:
    out = text_of(build_receipt(VOID, MERCHANT, Copy.MERCHANT, "both"))
    for expected in ("撤销 VOID", "原参考号 ORIG. REF. NO.", "原凭证号 ORIG. VOUCHER",
                     "RMB -123.45", "本人确认撤销以上交易", "I CONFIRM THE VOID ABOVE"):
        assert expected in out, expected
    assert "原交易日期" not in out
    assert "预计到账" not in out


def test_reprint_and_training_marks() -> None:
    receipt = build_receipt(SALE, MERCHANT, Copy.CARDHOLDER, "both", reprint=True,
                            training=True)
    assert Title("重打印 DUPLICATE") in receipt.items
    assert Title("培训 TRAINING") in receipt.items
    out = text_of(receipt)
    assert out.count("TRAINING - NOT A VALID RECEIPT") == 2  # top and bottom
    en = text_of(build_receipt(replace(SALE, training=True), MERCHANT, Copy.MERCHANT, "en"))
    assert "TRAINING" in en
    assert "DUPLICATE" not in en


def test_refund_proof() -> None:
    for lang, words in (("zh", ("退款凭证", "参考号", "原参考号", "预计到账", "发卡行")),
                        ("en", ("REFUND PROOF", "REF. NO.", "ORIG. REF. NO.", "EXPECTED ARRIVAL",
                                "CARD ISSUER"))):
        out = text_of(build_refund_proof(REFUND, MERCHANT, lang,  # type: ignore[arg-type]
                                         arrival_window="7-15 days", reprint=True))
        for expected in (*words, "123456789012", "123456789011", "RMB -23.45",
                         "2024/05/01", "7-15 days"):
            assert expected in out, (lang, expected)
    with pytest.raises(ReceiptError):
        build_refund_proof(SALE, MERCHANT)
    with pytest.raises(ReceiptError):
        build_refund_proof(replace(REFUND, status=TxnStatus.DECLINED), MERCHANT)


@pytest.mark.parametrize("change", [
    {"status": TxnStatus.DECLINED}, {"status": TxnStatus.UNCERTAIN},
    {"kind": TxnKind.BALANCE}, {"pan_masked": PAN}, {"pan_masked": "6225880000"},
])
def test_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ReceiptError):
        build_receipt(replace(SALE, **change), MERCHANT, Copy.MERCHANT)


def test_entry_modes_in_words() -> None:
    for mode, word in (("071", "CONTACTLESS"), ("021", "SWIPE"), ("012", "MANUAL"),
                       ("801", "FALLBACK"), ("chip", "CHIP"), ("052", "CHIP")):
        out = text_of(build_receipt(replace(SALE, entry_mode=mode), MERCHANT,
                                    Copy.CARDHOLDER, "en"))
        assert f"622588******0019 {word}" in out


def test_host_date_and_year_boundary() -> None:
    from datetime import datetime
    late = replace(SALE, created_at=datetime(2024, 12, 31, 23, 59, 59), host_date="0101",
                   host_time="000001")
    assert txn_time(late) == datetime(2025, 1, 1, 0, 0, 1)
    assert txn_time(replace(SALE, host_date=None)) == SALE.created_at.replace(microsecond=0)
    assert txn_time(replace(SALE, host_date="1399")) == SALE.created_at.replace(microsecond=0)


def test_chip_info_must_be_hex() -> None:
    with pytest.raises(ValueError, match="hex"):
        ChipInfo("A0000003330101", "not-hex")


def test_escpos() -> None:
    receipt = build_receipt(REFUND, MERCHANT, Copy.MERCHANT, "both", reprint=True)
    raw = render_escpos(receipt)
    assert raw.startswith(b"\x1b@\x1c&")  # ESC @, FS & (Chinese mode)
    assert raw.endswith(b"\x1dVB\x00")  # GS V 66: cut
    assert b"\x1bp" not in raw  # no drawer kick
    assert b"\x1d!\x11" in raw  # double-size titles
    assert "退货 REFUND".encode("gb18030") in raw
    assert "商户存根 MERCHANT COPY".encode("gb18030") in raw
    assert b"\x1bE\x01" + "金额 AMOUNT".encode("gb18030") in raw  # the amount in bold
    # Control characters in a merchant name cannot become commands.
    evil = MerchantInfo("Shop\x1bp\x00\x19", "898310048990001", "10000001")
    raw = render_escpos(build_receipt(SALE, evil, Copy.CARDHOLDER, "en"))
    assert b"\x1bp" not in raw
    with pytest.raises(ValueError, match="width"):
        render_escpos(receipt, 40)


def test_copies_and_width_check() -> None:
    merchant = build_receipt(SALE, MERCHANT, Copy.MERCHANT, "en")
    cardholder = build_receipt(SALE, MERCHANT, Copy.CARDHOLDER, "en")
    both = render_copies([merchant, cardholder], 32)
    assert both.index("MERCHANT COPY") < both.index("." * 32) < both.index("CARDHOLDER COPY")
    with pytest.raises(ValueError, match="width"):
        render_text(merchant, 30)


def columns(text: str) -> int:
    """Independent oracle: wide and full-width characters take two columns."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def test_cjk_counts_two_columns() -> None:
    assert wrap("测" * 40, 32) == ["测" * 16, "测" * 16, "测" * 8]
    assert text_width("商户A") == 5
    line = render_text(Receipt((KeyValue("商户名称", "测试"),), "zh"), 32).rstrip("\n")
    assert columns(line) == 32


_TEXT = st.text(st.characters(codec="utf-8"), max_size=80)


@given(_TEXT, st.sampled_from([32, 42, 48]))
@example("测" * 40, 32)
@example("a" * 100, 32)
@example("e\u0301" * 50, 32)
@example("x 测试商户名称很长很长很长很长很长很长很长 y", 42)
def test_wrap_never_exceeds_width(text: str, width: int) -> None:
    lines = wrap(text, width)
    assert all(text_width(line) <= width for line in lines)
    assert all(columns(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost


@given(name=_TEXT, note=_TEXT, label=st.one_of(st.none(), _TEXT),
       lang=st.sampled_from(["zh", "en", "both"]), width=st.sampled_from([32, 42, 48]),
       copy=st.sampled_from(list(Copy)), reprint=st.booleans(), training=st.booleans())
@example(name=f"Shop {PAN}", note=f"card {PAN} track {PAN}=2512", label=None, lang="both",
         width=32, copy=Copy.MERCHANT, reprint=True, training=True)
def test_any_receipt_fits_and_shows_no_pan(name: str, note: str, label: str | None, lang: str,
                                           width: int, copy: Copy, reprint: bool,
                                           training: bool) -> None:
    merchant = MerchantInfo(name, "898310048990001", "10000001")
    record = replace(REFUND, note=note, card_label=label)
    receipts = [
        build_receipt(record, merchant, copy, lang, reprint=reprint,  # type: ignore[arg-type]
                      training=training, arrival_window=note, chip=CHIP),
        build_refund_proof(record, merchant, lang, arrival_window=note),  # type: ignore[arg-type]
    ]
    for receipt in receipts:
        out = render_text(receipt, width)
        for line in out.splitlines():
            assert text_width(line) <= width, line
            assert columns(line) <= width, line
        assert PAN not in out
        # The MID, the AID and the cryptogram are the only long numbers a receipt may carry.
        scrubbed = out.replace(merchant.mid, "").replace(CHIP.aid, "")
        assert not re.search(r"\d{13,}", scrubbed.replace(CHIP.cryptogram, ""))
        raw = render_escpos(receipt, width)
        assert PAN.encode() not in raw
        assert b"\x1bp" not in raw


def test_model_items_are_typed() -> None:
    receipt = build_receipt(SALE, MERCHANT, Copy.MERCHANT, "en")
    kinds = {type(i) for i in receipt.items}
    assert {Title, KeyValue, Amount, Notice, Signature} <= kinds
