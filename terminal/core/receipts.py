"""Receipts: one pure model (:class:`Receipt`), rendered as text or as ESC/POS bytes.

:func:`build_receipt` makes the CUP slip (签购单) of a sale, refund or void, the
merchant or cardholder copy, in ``zh``, ``en`` or ``both``;
:func:`build_refund_proof` makes the 退款凭证 a cardholder shows their bank.
:func:`render_text` lays a receipt out for 32, 42 or 48 columns (screen,
virtual printer, tests); :func:`render_escpos` makes printer bytes (GB18030,
bold double-size titles, cut; never a drawer kick).

Column widths: ASCII counts 1, East Asian wide, full-width *and ambiguous*
characters count 2 (a GB18030 printer prints every double-byte character two
columns wide), combining marks 0. No rendered line is wider than the paper.

Card data: the record's PAN is already masked; :func:`build_receipt` refuses a
record whose ``pan_masked`` is not (:class:`ReceiptError`). Every other value
goes through :func:`~iso8583.masking.mask_text`, except the MID, which is a
15-digit number printed as it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from drivers.printer import CHINESE_ON, ESC, GS, INIT, sanitize
from iso8583.masking import mask_text
from terminal.core.errors import TerminalError
from terminal.core.money import format_amount
from terminal.core.records import REASON_TEXT, RefundReason, TxnKind, TxnRecord, TxnStatus

Lang = Literal["zh", "en", "both"]
WIDTHS = (32, 42, 48)


class ReceiptError(TerminalError):
    """A receipt cannot be made from this record (not approved, or card data not masked)."""

    cashier_zh, cashier_en = "无法打印凭证", "Cannot print this receipt"


class Copy(StrEnum):
    MERCHANT = "merchant"
    CARDHOLDER = "cardholder"


@dataclass(frozen=True)
class MerchantInfo:
    name: str
    mid: str
    tid: str


@dataclass(frozen=True)
class ChipInfo:
    """What a chip receipt shows: the AID and the card's cryptogram (TC, AAC or ARQC)."""

    aid: str
    cryptogram: str
    cryptogram_type: Literal["TC", "AAC", "ARQC"] = "TC"
    app_label: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("aid", self.aid), ("cryptogram", self.cryptogram)):
            if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value):
                raise ValueError(f"{name} must be hex, got {value!r}")


# --- the model -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Title:
    text: str


@dataclass(frozen=True)
class KeyValue:
    label: str
    value: str


@dataclass(frozen=True)
class Amount:
    label: str
    value: str  # already formatted, with the currency


@dataclass(frozen=True)
class Separator:
    char: str = "-"


@dataclass(frozen=True)
class Signature:
    label: str


@dataclass(frozen=True)
class Notice:
    text: str


Item = Title | KeyValue | Amount | Separator | Signature | Notice


@dataclass(frozen=True)
class Receipt:
    items: tuple[Item, ...]
    lang: Lang
    copy: Copy | None = None
    reprint: bool = False
    training: bool = False

    def text(self, width: int = 32) -> str:
        return render_text(self, width)


# --- words ---------------------------------------------------------------------------------
_LABELS: dict[str, tuple[str, str]] = {
    "slip": ("银联POS签购单", "POS SALES SLIP"),
    "proof": ("退款凭证", "REFUND PROOF"),
    "merchant_copy": ("商户存根", "MERCHANT COPY"),
    "cardholder_copy": ("持卡人存根", "CARDHOLDER COPY"),
    "reprint": ("重打印", "DUPLICATE"),
    "training": ("培训", "TRAINING"),
    "training_notice": ("培训交易，不是有效凭证", "TRAINING - NOT A VALID RECEIPT"),
    "merchant_name": ("商户名称", "MERCHANT NAME"),
    "mid": ("商户编号", "MERCHANT NO."),
    "tid": ("终端编号", "TERMINAL NO."),
    "operator": ("操作员号", "OPERATOR NO."),
    "card": ("卡号", "CARD NO."),
    "entry": ("输入方式", "ENTRY MODE"),
    "type": ("交易类型", "TRANS TYPE"),
    "batch": ("批次号", "BATCH NO."),
    "voucher": ("凭证号", "VOUCHER NO."),
    "auth": ("授权码", "AUTH NO."),
    "rrn": ("参考号", "REF. NO."),
    "orig_rrn": ("原参考号", "ORIG. REF. NO."),
    "orig_voucher": ("原凭证号", "ORIG. VOUCHER"),
    "orig_date": ("原交易日期", "ORIG. DATE"),
    "datetime": ("日期/时间", "DATE/TIME"),
    "amount": ("金额", "AMOUNT"),
    "reason": ("退货原因", "REASON"),
    "arrival": ("预计到账", "EXPECTED ARRIVAL"),
    "signature": ("持卡人签名", "CARDHOLDER SIGNATURE"),
    "confirm_sale": ("本人确认以上交易，同意将其记入本卡账户",
                     "I ACKNOWLEDGE SATISFACTORY RECEIPT OF RELATIVE GOODS/SERVICES"),
    "confirm_refund": ("本人确认以上退货，退款原路退回本卡",
                       "I CONFIRM THE REFUND ABOVE TO THIS CARD"),
    "confirm_void": ("本人确认撤销以上交易", "I CONFIRM THE VOID ABOVE"),
    "proof_notice": ("持卡人可凭此凭证向发卡行查询退款",
                     "SHOW THIS PROOF TO YOUR CARD ISSUER TO TRACE THE REFUND"),
}

KIND_TEXT: dict[TxnKind, tuple[str, str]] = {
    TxnKind.SALE: ("消费", "SALE"),
    TxnKind.REFUND: ("退货", "REFUND"),
    TxnKind.VOID: ("撤销", "VOID"),
    TxnKind.BALANCE: ("余额查询", "BALANCE"),
}

#: F22's first two digits (or the terminal's entry word) -> words on the slip.
ENTRY_TEXT: dict[str, tuple[str, str]] = {
    "05": ("插卡", "CHIP"), "chip": ("插卡", "CHIP"),
    "07": ("挥卡", "CONTACTLESS"), "98": ("挥卡", "CONTACTLESS"),
    "91": ("挥卡", "CONTACTLESS"), "contactless": ("挥卡", "CONTACTLESS"),
    "02": ("刷卡", "SWIPE"), "90": ("刷卡", "SWIPE"), "stripe": ("刷卡", "SWIPE"),
    "01": ("手输", "MANUAL"), "manual": ("手输", "MANUAL"),
    "80": ("降级刷卡", "FALLBACK"), "fallback": ("降级刷卡", "FALLBACK"),
}

_CURRENCY = {"156": "RMB", "CNY": "RMB"}


def say(pair: tuple[str, str], lang: Lang) -> str:
    """A (zh, en) pair in ``lang``; ``both`` puts them side by side."""
    zh, en = pair
    return zh if lang == "zh" else en if lang == "en" else f"{zh} {en}"


def _label(key: str, lang: Lang) -> str:
    return say(_LABELS[key], lang)


def _notices(key: str, lang: Lang) -> list[Item]:
    """A sentence as one notice, or two (zh, then en) so neither is broken mid-language."""
    zh, en = _LABELS[key]
    if lang == "both":
        return [Notice(zh), Notice(en)]
    return [Notice(zh if lang == "zh" else en)]


def entry_words(entry_mode: str | None, lang: Lang) -> str | None:
    if not entry_mode:
        return None
    key = entry_mode.strip().lower()
    pair = ENTRY_TEXT.get(key) or ENTRY_TEXT.get(key[:2])
    return say(pair, lang) if pair else None


def money_text(amount: int, currency: str, *, negative: bool = False) -> str:
    """``RMB 12.34`` (``RMB -12.34`` for money going back to the card)."""
    cur = _CURRENCY.get(currency, currency)
    return f"{cur} {'-' if negative and amount else ''}{format_amount(amount)}"


def txn_time(record: TxnRecord) -> datetime:
    """When the host booked it (F13/F12, year from the journal) or when it was written."""
    created = record.created_at
    date, time = record.host_date, record.host_time
    if date and time and len(date) == 4 and len(time) == 6 and (date + time).isdigit():
        year = created.year + (1 if created.month == 12 and date[:2] == "01" else 0)
        try:
            return datetime(year, int(date[:2]), int(date[2:]), int(time[:2]), int(time[2:4]),
                            int(time[4:]))
        except ValueError:
            pass
    return created.replace(microsecond=0)


def _check_masked(pan_masked: str) -> None:
    if "*" not in pan_masked or re.search(r"\d{7,}", pan_masked):
        raise ReceiptError("the record's card number is not masked; refusing to print it")


def _clean(text: str) -> str:
    """Free text made safe for one receipt value: no controls, no newlines, no PAN."""
    return mask_text(sanitize(text.replace("\n", " ").replace("\r", " ")))


# --- building -----------------------------------------------------------------------------------
def build_receipt(record: TxnRecord, merchant: MerchantInfo, copy: Copy, lang: Lang = "both", *,
                  reprint: bool = False, training: bool = False,
                  original: TxnRecord | None = None, arrival_window: str | None = None,
                  chip: ChipInfo | None = None) -> Receipt:
    """The slip of an approved sale, refund or void (merchant or cardholder copy)."""
    if record.status is not TxnStatus.APPROVED:
        raise ReceiptError(f"txn {record.id} is {record.status.value}: only approved "
                           "transactions get a slip")
    if record.kind is TxnKind.BALANCE:
        raise ReceiptError("a balance enquiry has no slip")
    _check_masked(record.pan_masked)
    training = training or record.training
    copy_key = "merchant_copy" if copy is Copy.MERCHANT else "cardholder_copy"
    items: list[Item] = [Title(_label("slip", lang)), Notice(_label(copy_key, lang))]
    items += _marks(lang, reprint=reprint, training=training)
    items += _merchant(merchant, record, lang)
    items.append(Separator())
    card = record.pan_masked
    entry = entry_words(record.entry_mode, lang)
    items.append(KeyValue(_label("card", lang), f"{card} {entry}" if entry else card))
    items.append(KeyValue(_label("type", lang), say(KIND_TEXT[record.kind], lang)))
    items += _ids(record, lang)
    items += _original(record, original, lang)
    items.append(KeyValue(_label("datetime", lang),
                          txn_time(record).strftime("%Y/%m/%d %H:%M:%S")))
    back = record.kind is not TxnKind.SALE
    items.append(Amount(_label("amount", lang),
                        money_text(record.amount, record.currency, negative=back)))
    if record.kind is TxnKind.REFUND:
        if record.reason:
            items.append(KeyValue(_label("reason", lang), _reason(record, lang)))
        if arrival_window:
            items.append(KeyValue(_label("arrival", lang), _clean(arrival_window)))
    if chip is not None:
        items.append(KeyValue("AID", chip.aid.upper()))
        if chip.app_label:
            items.append(KeyValue("APP", _clean(chip.app_label)))
        items.append(KeyValue(chip.cryptogram_type, chip.cryptogram.upper()))
    items.append(Separator())
    if copy is Copy.MERCHANT:
        items.append(Signature(_label("signature", lang)))
        confirm = {TxnKind.SALE: "confirm_sale", TxnKind.REFUND: "confirm_refund",
                   TxnKind.VOID: "confirm_void"}[record.kind]
        items += _notices(confirm, lang)
    if training:
        items += _notices("training_notice", lang)
    return Receipt(tuple(items), lang, copy, reprint, training)


def build_refund_proof(refund: TxnRecord, merchant: MerchantInfo, lang: Lang = "both", *,
                       original: TxnRecord | None = None, arrival_window: str | None = None,
                       reprint: bool = False, training: bool = False) -> Receipt:
    """The 退款凭证: what the cardholder shows their bank to trace an approved refund."""
    if refund.kind is not TxnKind.REFUND or refund.status is not TxnStatus.APPROVED:
        raise ReceiptError(f"txn {refund.id} is not an approved refund")
    _check_masked(refund.pan_masked)
    training = training or refund.training
    items: list[Item] = [Title(_label("proof", lang))]
    items += _marks(lang, reprint=reprint, training=training)
    items += _merchant(merchant, refund, lang)
    items.append(Separator())
    items.append(KeyValue(_label("card", lang), refund.pan_masked))
    items.append(KeyValue(_label("type", lang), say(KIND_TEXT[TxnKind.REFUND], lang)))
    items += _ids(refund, lang)
    items += _original(refund, original, lang)
    items.append(KeyValue(_label("datetime", lang),
                          txn_time(refund).strftime("%Y/%m/%d %H:%M:%S")))
    items.append(Amount(_label("amount", lang),
                        money_text(refund.amount, refund.currency, negative=True)))
    if arrival_window:
        items.append(KeyValue(_label("arrival", lang), _clean(arrival_window)))
    items.append(Separator())
    items += _notices("proof_notice", lang)
    if training:
        items += _notices("training_notice", lang)
    return Receipt(tuple(items), lang, None, reprint, training)


def _marks(lang: Lang, *, reprint: bool, training: bool) -> list[Item]:
    out: list[Item] = []
    if reprint:
        out.append(Title(_label("reprint", lang)))
    if training:
        out.append(Title(_label("training", lang)))
        out += _notices("training_notice", lang)
    return out


def _merchant(merchant: MerchantInfo, record: TxnRecord, lang: Lang) -> list[Item]:
    return [KeyValue(_label("merchant_name", lang), _clean(merchant.name)),
            KeyValue(_label("mid", lang), sanitize(merchant.mid)),
            KeyValue(_label("tid", lang), _clean(merchant.tid)),
            KeyValue(_label("operator", lang), _clean(record.operator or "-"))]


def _ids(record: TxnRecord, lang: Lang) -> list[Item]:
    out: list[Item] = [KeyValue(_label("batch", lang), record.batch),
                       KeyValue(_label("voucher", lang), record.voucher)]
    if record.auth_code:
        out.append(KeyValue(_label("auth", lang), _clean(record.auth_code)))
    if record.rrn:
        out.append(KeyValue(_label("rrn", lang), _clean(record.rrn)))
    return out


def _original(record: TxnRecord, original: TxnRecord | None, lang: Lang) -> list[Item]:
    if record.kind is TxnKind.SALE:
        return []
    rrn = record.original_rrn or (original.rrn if original else None)
    voucher = record.original_stan or (original.stan if original else None)
    date = record.original_date or (original.host_date if original else None)
    out: list[Item] = []
    if rrn:
        out.append(KeyValue(_label("orig_rrn", lang), _clean(rrn)))
    if voucher:
        out.append(KeyValue(_label("orig_voucher", lang), _clean(voucher)))
    if date and record.kind is TxnKind.REFUND:
        out.append(KeyValue(_label("orig_date", lang), _clean(date)))
    return out


def _reason(record: TxnRecord, lang: Lang) -> str:
    reason = record.reason or ""
    try:
        text = say(REASON_TEXT[RefundReason(reason)], lang)
    except ValueError:
        text = reason
    note = f": {record.note}" if record.note else ""
    return _clean(text + note)


# --- layout ---------------------------------------------------------------------------------
def char_width(ch: str) -> int:
    """Columns one character takes on a receipt (see the module docstring)."""
    if ch.isascii():
        return 1
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F", "A") else 1


def text_width(text: str) -> int:
    return sum(char_width(c) for c in text)


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns, breaking at spaces when it can."""
    lines: list[str] = []
    line = ""
    for piece in text.split(" "):
        word = piece
        candidate = f"{line} {word}" if line else word
        if text_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
            line = ""
        while text_width(word) > width:  # one word wider than the paper: cut it
            cut, used = 0, 0
            while cut < len(word) and used + char_width(word[cut]) <= width:
                used += char_width(word[cut])
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    lines.append(line)
    return lines


def _right(text: str, width: int) -> str:
    return " " * (width - text_width(text)) + text


def _center(text: str, width: int) -> str:
    pad = (width - text_width(text)) // 2
    return " " * pad + text


def _pair(label: str, value: str, width: int) -> list[str]:
    if text_width(label) + 1 + text_width(value) <= width:
        return [label + " " * (width - text_width(label) - text_width(value)) + value]
    return wrap(label, width) + [_right(v, width) for v in wrap(value, width)]


def layout(item: Item, width: int) -> list[str]:
    """One item as lines of at most ``width`` columns."""
    if isinstance(item, Title):
        return [_center(line, width) for line in wrap(item.text, width)]
    if isinstance(item, KeyValue | Amount):
        return _pair(item.label, item.value, width)
    if isinstance(item, Separator):
        return [(item.char or "-")[0] * (width // max(1, char_width((item.char or "-")[0])))]
    if isinstance(item, Signature):
        return [*wrap(item.label, width), "", "", "_" * width]
    return wrap(item.text, width)


def render_text(receipt: Receipt, width: int = 32) -> str:
    """The receipt as plain text lines of at most ``width`` columns (32, 42 or 48)."""
    _check_width(width)
    lines: list[str] = []
    for item in receipt.items:
        lines += layout(item, width)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_escpos(receipt: Receipt, width: int = 32) -> bytes:
    """ESC/POS bytes: init, Chinese mode (GB18030), bold double titles, bold amount, cut.

    No cash-drawer kick (``ESC p``) is ever sent. Titles are laid out at half
    the width because double-size characters take two columns each.
    """
    _check_width(width)
    out = bytearray(INIT + CHINESE_ON)
    left, center = bytes([ESC, 0x61, 0]), bytes([ESC, 0x61, 1])
    bold_on, bold_off = bytes([ESC, 0x45, 1]), bytes([ESC, 0x45, 0])
    for item in receipt.items:
        if isinstance(item, Title):
            out += center + bold_on + bytes([GS, 0x21, 0x11])
            for line in wrap(item.text, width // 2):
                out += _encode(line) + b"\n"
            out += bytes([GS, 0x21, 0x00]) + bold_off + left
            continue
        bold = isinstance(item, Amount)
        if bold:
            out += bold_on
        for line in layout(item, width):
            out += _encode(line.rstrip()) + b"\n"
        if bold:
            out += bold_off
    out += bytes([ESC, 0x64, 3])  # feed past the cutter
    out += bytes([GS, 0x56, 66, 0])  # feed and partial cut
    return bytes(out)


def _encode(text: str) -> bytes:
    return sanitize(text).encode("gb18030", errors="replace")


def _check_width(width: int) -> None:
    if width not in WIDTHS:
        raise ValueError(f"paper width must be one of {WIDTHS} columns, got {width}")


def render_copies(receipts: Sequence[Receipt], width: int = 32) -> str:
    """Several receipts (merchant then cardholder copy) as one text, a cut line between."""
    return ("." * width + "\n").join(render_text(r, width) for r in receipts)
