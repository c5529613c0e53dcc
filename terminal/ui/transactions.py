"""交易查询 Transactions: the journal, newest first, searched by voucher/RRN/date/card/status."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Input

from terminal.core.money import format_amount
from terminal.core.records import TxnRecord
from terminal.ui.base import PosScreen
from terminal.ui.text import kind_text, status_text


def haystack(record: TxnRecord) -> str:
    """Everything a cashier may search a record by, in both languages."""
    words = [record.voucher, str(int(record.voucher)) if record.voucher.isdigit() else "",
             record.rrn or "", record.host_date or "", record.original_rrn or "",
             record.created_at.strftime("%m%d %Y-%m-%d %Y%m%d %m-%d"),
             record.pan_masked, record.pan_masked[-4:], record.batch,
             record.status.value, record.kind.value,
             status_text(record.status, "zh"), status_text(record.status, "en"),
             kind_text(record.kind, "zh"), kind_text(record.kind, "en"),
             format_amount(record.amount)]
    return " ".join(words).lower()


def matches(record: TxnRecord, query: str) -> bool:
    return all(token in haystack(record) for token in query.lower().split())


class TransactionsScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "txns_title"

    def __init__(self) -> None:
        super().__init__()
        self.records: list[TxnRecord] = []

    def compose_body(self) -> ComposeResult:
        search = Input(placeholder=self.t("search_prompt"), id="search")
        search.cursor_blink = self.pos.config.cursor_blink
        yield search
        table: DataTable[str] = DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield table

    async def build(self) -> None:
        table = self.query_one("#table", DataTable)
        for key in ("col_voucher", "col_time", "col_kind", "col_amount", "col_card",
                    "col_status"):
            table.add_column(self.t(key), key=key)
        self.load()
        self.query_one("#search", Input).focus()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.load()

    def load(self) -> None:
        try:
            self.records = self.backend.transactions()
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        self.fill(self.query_one("#search", Input).value)

    def fill(self, query: str) -> None:
        table = self.query_one("#table", DataTable)
        table.clear()
        for rec in self.records:
            if query and not matches(rec, query):
                continue
            table.add_row(rec.voucher, rec.created_at.strftime("%m-%d %H:%M"),
                          kind_text(rec.kind, self.lang), format_amount(rec.amount),
                          rec.pan_masked[-4:], status_text(rec.status, self.lang),
                          key=str(rec.id))

    @on(Input.Changed, "#search")
    def searched(self, event: Input.Changed) -> None:
        self.fill(event.value)

    @on(Input.Submitted, "#search")
    def to_table(self) -> None:
        table = self.query_one("#table", DataTable)
        if table.row_count:
            table.focus()

    @on(DataTable.RowSelected, "#table")
    def opened(self, event: DataTable.RowSelected) -> None:
        from terminal.ui.detail import DetailScreen
        if event.row_key.value is not None:
            self.app.push_screen(DetailScreen(int(event.row_key.value)))

    def action_cancel(self) -> None:
        self.app.pop_screen()
