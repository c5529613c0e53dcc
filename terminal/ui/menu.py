"""The main menu: eight numbered tasks; F2 language, F3 reprint the last slip, F4 lock."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen

from terminal.core.ports import Step
from terminal.ui import messages as msg
from terminal.ui.base import PosScreen
from terminal.ui.widgets import NumberedList

MENU_KEYS = ("menu_sale", "menu_refund", "menu_void", "menu_txns", "menu_settle",
             "menu_reports", "menu_settings", "menu_signon")


class MenuScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "menu_title"

    def compose_body(self) -> ComposeResult:
        yield NumberedList([self.t(key) for key in MENU_KEYS], id="mainmenu")

    async def build(self) -> None:
        self.set_hint("fkeys_menu" if self.pos.world is not None else "fkeys_menu_nodemo")
        self.query_one("#mainmenu", NumberedList).focus()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.refresh_status()
            for menu in self.query("#mainmenu"):
                menu.focus()

    @on(NumberedList.OptionSelected, "#mainmenu")
    def chosen(self, event: NumberedList.OptionSelected) -> None:
        if not self.busy:
            self.open(MENU_KEYS[event.option_index])

    def open(self, key: str) -> None:
        from terminal.ui.refund import RefundScreen
        from terminal.ui.reports import ReportsScreen
        from terminal.ui.sale import SaleScreen
        from terminal.ui.settings import SettingsScreen
        from terminal.ui.settlement import SettlementScreen
        from terminal.ui.transactions import TransactionsScreen
        from terminal.ui.void import VoidScreen
        screens: dict[str, type[Screen[None]]] = {
            "menu_sale": SaleScreen, "menu_refund": RefundScreen, "menu_void": VoidScreen,
            "menu_txns": TransactionsScreen, "menu_settle": SettlementScreen,
            "menu_reports": ReportsScreen, "menu_settings": SettingsScreen}
        self.say("")
        if key == "menu_signon":
            self.say(self.t("step_signing_on"))
            self.start(lambda progress: msg.SignedOn(self.backend.sign_on(progress)))
            return
        self.app.push_screen(screens[key]())

    def on_signed_on(self, message: msg.SignedOn) -> None:
        self.finished()
        self.say(self.t("signon_ok", batch=message.batch))

    def on_core_failed(self, message: msg.CoreFailed) -> None:
        self.finished()
        self.say_error(message.error)

    def on_step_reached(self, message: msg.StepReached) -> None:
        from terminal.ui.text import step_text
        if message.step is not Step.SIGNING_ON:
            self.say(step_text(message.step, self.lang))

    def action_cancel(self) -> None:
        """Esc on the menu does nothing (F4 locks)."""

    async def action_f2(self) -> None:
        await self.pos.set_lang("en" if self.lang == "zh" else "zh")

    def action_f3(self) -> None:
        from terminal.ui.receipt import ReceiptScreen
        record = self.backend.last_record()
        if record is None:
            self.say(self.t("no_last"), error=True)
            return
        self.app.push_screen(ReceiptScreen(record, reprint=True))

    def action_f4(self) -> None:
        self.pos.lock()
