"""撤销 Void: today's sale by voucher -> confirm -> approval when needed -> send -> result."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.core.approvals import Approval
from terminal.core.money import format_amount
from terminal.core.till import VoidQuote
from terminal.ui import messages as msg
from terminal.ui.approval import send_with_approval
from terminal.ui.base import PosScreen
from terminal.ui.result import ResultScreen


class VoidScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "void_title"

    def __init__(self) -> None:
        super().__init__()
        self.quote: VoidQuote | None = None
        self.sending = False

    async def build(self) -> None:
        await self.ask_voucher()

    async def ask_voucher(self) -> None:
        await self.show_fields(self.t("void_title"), [(self.t("voucher_prompt"), False, 6)],
                               self.by_voucher)

    async def by_voucher(self, voucher: str) -> None:
        try:
            original = self.backend.find_by_voucher(voucher)
            self.quote = self.backend.quote_void(original)
        except Exception as exc:  # not found, refunded, voided, settled: said on screen
            self.say_error(exc)
            return
        self.say("")
        await self.show_confirm()

    async def show_confirm(self) -> None:
        q = self.quote
        assert q is not None
        lines = [f"{self.t('v_voucher')}: {q.original.voucher}",
                 f"{self.t('q_card')}: {q.original.pan_masked}",
                 f"{self.t('v_amount')}: {format_amount(q.amount)}"]
        await self.show_lines(self.t("void_confirm"), lines, self.confirmed)
        self.set_hint("confirm_hint")

    async def confirmed(self) -> None:
        quote = self.quote
        assert quote is not None
        await send_with_approval(self, lambda: self.backend.void_approvals(quote), self.send)

    async def send(self, approval: Approval | None) -> None:
        quote = self.quote
        assert quote is not None
        self.set_hint("keys_hint")
        await self.show_progress(self.t("void_title") + " " + format_amount(quote.amount),
                                 self.t("step_sending"))
        self.sending = True
        self.start(lambda progress: msg.VoidSent(self.backend.void(quote, approval, progress)))

    def on_void_sent(self, message: msg.VoidSent) -> None:
        self.finished()
        self.app.switch_screen(ResultScreen(message.outcome))

    async def on_core_failed(self, message: msg.CoreFailed) -> None:
        self.finished()
        self.say_error(message.error)
        if self.sending:
            self.sending = False
            await self.show_confirm()
