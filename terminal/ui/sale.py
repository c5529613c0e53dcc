"""消费 Sale: amount (right-shifting) -> card -> PIN where the card asks -> result."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.core.money import format_amount
from terminal.core.ports import CardRead, Purpose
from terminal.ui import messages as msg
from terminal.ui.base import PosScreen
from terminal.ui.result import ResultScreen


class SaleScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "sale_title"

    def __init__(self) -> None:
        super().__init__()
        self.amount = 0
        self.card: CardRead | None = None

    async def build(self) -> None:
        await self.show_amount(self.t("amount_prompt"), self.amount_entered)

    async def amount_entered(self, amount: int) -> None:
        if amount <= 0:
            self.say(self.t("amount_prompt"), error=True)
            return
        self.amount = amount
        self.say("")
        await self.read_card()

    async def read_card(self) -> None:
        await self.show_progress(self.t("sale_title") + " " + format_amount(self.amount),
                                 self.t("present_card"))
        amount = self.amount
        self.start(lambda progress: msg.CardRead(
            self.backend.read_card(Purpose.SALE, amount, progress)))

    def on_card_read(self, message: msg.CardRead) -> None:
        self.card = message.card
        card, amount = message.card, self.amount
        self.start(lambda progress: msg.SaleSent(self.backend.sale(amount, card, progress)))

    def on_sale_sent(self, message: msg.SaleSent) -> None:
        self.finished()
        self.app.switch_screen(ResultScreen(message.outcome))

    async def on_core_failed(self, message: msg.CoreFailed) -> None:
        self.finished()
        self.say_error(message.error)
        if self.card is None:
            await self.show_lines(self.t("sale_title") + " " + format_amount(self.amount),
                                  [self.t("present_card_retry")], self.read_card)
