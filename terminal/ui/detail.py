"""One transaction: its fields, an original's refund history, each refund's status."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from terminal.core.money import format_amount
from terminal.core.records import TxnKind, TxnRecord
from terminal.ui.base import PosScreen
from terminal.ui.text import Lang, kind_text, status_text, tr


def record_fields(r: TxnRecord, lang: Lang) -> list[tuple[str, str]]:
    """(label, value) lines of one journal record."""
    return [(tr("d_kind", lang), kind_text(r.kind, lang)),
            (tr("d_status", lang), status_text(r.status, lang)),
            (tr("d_amount", lang), format_amount(r.amount)),
            (tr("d_card", lang), r.pan_masked),
            (tr("d_voucher", lang), r.voucher),
            (tr("d_batch", lang), r.batch),
            (tr("d_rrn", lang), r.rrn or "-"),
            (tr("d_auth", lang), r.auth_code or "-"),
            (tr("d_code", lang), r.response_code or "-"),
            *_chip_line(r, lang),
            (tr("d_time", lang), r.created_at.strftime("%Y-%m-%d %H:%M:%S")),
            (tr("d_operator", lang), r.operator or "-")]


def _chip_line(r: TxnRecord, lang: Lang) -> list[tuple[str, str]]:
    """What the chip said last: a TC, or the AAC of a card that declined an approved sale."""
    if r.cryptogram_type is None:
        return []
    if r.cryptogram_type == "AAC" and r.response_code == "00":
        return [(tr("d_chip", lang), tr("d_chip_declined", lang))]
    return [(tr("d_chip", lang), r.cryptogram_type)]


class DetailScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "detail_title"
    HINT_KEY: ClassVar[str] = "detail_hint"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(str(n), f"pick({n})", show=False) for n in range(1, 10)]

    def __init__(self, txn_id: int) -> None:
        super().__init__()
        self.txn_id = txn_id
        self.children_: list[TxnRecord] = []

    def compose_body(self) -> ComposeResult:
        try:
            record = self.backend.record(self.txn_id)
        except Exception:  # the journal could not be read: the message line says so
            yield Static(self.t("unexpected"), classes="info")
            return
        self.record = record
        with VerticalScroll(id="lines"):
            for label, value in record_fields(record, self.lang):
                yield Static(f"{label}: {value}", classes="info")
            if record.kind is TxnKind.SALE:
                yield from self.sale_history(record)
            elif record.kind is TxnKind.REFUND:
                yield Static(self.t("status_title"), classes="heading")
                for label, value in self.backend.refund_status(record).lines(self.lang):
                    yield Static(f"{label}: {value}", classes="info")

    def sale_history(self, sale: TxnRecord) -> ComposeResult:
        self.children_ = self.backend.history(sale)
        left = self.backend.refundable(sale)
        yield Static(f"{self.t('d_left')}: {format_amount(left.refundable)}", classes="info")
        yield Static(self.t("history"), classes="heading")
        if not self.children_:
            yield Static(self.t("history_none"), classes="info")
        for n, child in enumerate(self.children_[:9], 1):
            yield Static(self.t("history_row", n=n, kind=kind_text(child.kind, self.lang),
                                amount=format_amount(child.amount),
                                status=status_text(child.status, self.lang),
                                voucher=child.voucher), classes="info")

    async def build(self) -> None:
        self.set_focus(None)

    def action_pick(self, n: int) -> None:
        if 1 <= n <= len(self.children_):
            self.app.push_screen(RefundStatusScreen(self.children_[n - 1]))

    def action_f3(self) -> None:
        from terminal.ui.receipt import ReceiptScreen
        self.app.push_screen(ReceiptScreen(self.record, reprint=True))

    def action_cancel(self) -> None:
        self.app.pop_screen()


class RefundStatusScreen(PosScreen):
    """"Not arrived yet?": what the terminal knows, the arrival window, reprint the proof."""

    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "status_title"
    HINT_KEY: ClassVar[str] = "status_hint"

    def __init__(self, record: TxnRecord) -> None:
        super().__init__()
        self.record = record

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="lines"):
            if self.record.kind is not TxnKind.REFUND:
                for label, value in record_fields(self.record, self.lang):
                    yield Static(f"{label}: {value}", classes="info")
                return
            for label, value in self.backend.refund_status(self.record).lines(self.lang):
                yield Static(f"{label}: {value}", classes="info")

    async def build(self) -> None:
        self.set_focus(None)

    def action_f3(self) -> None:
        from terminal.ui.receipt import ReceiptScreen
        self.app.push_screen(ReceiptScreen(self.record, reprint=True,
                                           proof=self.record.kind is TxnKind.REFUND))

    def action_cancel(self) -> None:
        self.app.pop_screen()
