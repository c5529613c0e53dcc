"""Receipt preview, print and reprint: the core's receipt, shown as the printer prints it."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from terminal.core.records import TxnRecord
from terminal.ui import messages as msg
from terminal.ui.base import PosScreen


class ReceiptScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "receipt_title"
    HINT_KEY: ClassVar[str] = "receipt_hint"

    def __init__(self, record: TxnRecord, *, reprint: bool = False, proof: bool = False,
                 then_menu: bool = False) -> None:
        super().__init__()
        self.record = record
        self.reprint = reprint
        self.proof = proof
        self.then_menu = then_menu
        self.text: str | None = None

    def compose_body(self) -> ComposeResult:
        try:
            self.text = self.backend.receipt_text(self.record, self.lang, reprint=self.reprint,
                                                  proof=self.proof)
        except Exception as exc:  # not approved, or no slip for this record: said on screen
            self.text = None
            yield Static(self.t("receipt_none"), classes="info")
            self._error: BaseException | None = exc
            return
        self._error = None
        with VerticalScroll(id="paper"):
            yield Static(self.text, id="receipt", markup=False)

    async def build(self) -> None:
        if self._error is not None:
            self.say_error(self._error)
            self.set_focus(None)
            return
        self.query_one("#paper", VerticalScroll).focus()  # arrows scroll the slip

    def action_f3(self) -> None:
        if self.text is None or self.busy:
            return
        text = self.text
        self.start(lambda progress: msg.Printed(self.backend.print_text(text)))

    def on_printed(self, message: msg.Printed) -> None:
        self.finished()
        self.say(self.t("printed" if message.printed else "no_printer"))

    def on_core_failed(self, message: msg.CoreFailed) -> None:
        self.finished()
        self.say_error(message.error)

    async def action_enter(self) -> None:
        self.leave()

    def action_cancel(self) -> None:
        self.leave()

    def leave(self) -> None:
        if self.busy:
            return
        if self.then_menu:
            self.pos.go_menu()
        else:
            self.app.pop_screen()
