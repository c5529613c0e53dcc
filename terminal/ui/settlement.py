"""结算 Settlement: the open batch's totals, then settle (batch upload when they differ)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from iso8583.settlement import HalfTotals, SettlementTotals
from terminal.core.money import format_amount
from terminal.ui import messages as msg
from terminal.ui.base import PosScreen


class SettlementScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "settle_title"
    HINT_KEY: ClassVar[str] = "settle_hint"

    def __init__(self) -> None:
        super().__init__()
        self.done = False

    async def build(self) -> None:
        try:
            totals = self.backend.batch_totals()
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        await self.show_lines(self.t("batch", batch=self.backend.batch()),
                              self.total_lines(totals), self.settle)

    def total_lines(self, totals: SettlementTotals) -> list[str]:
        lines: list[str] = []
        for key, half in (("settle_domestic", totals.domestic), ("settle_foreign", totals.foreign)):
            lines.append(self.t(key))
            lines += self.half_lines(half)
        return lines

    def half_lines(self, half: HalfTotals) -> list[str]:
        return ["  " + self.t("settle_debit", count=half.debit_count,
                              amount=format_amount(half.debit_amount)),
                "  " + self.t("settle_credit", count=half.credit_count,
                              amount=format_amount(half.credit_amount))]

    async def settle(self) -> None:
        await self.show_progress(self.t("settle_title"), self.t("step_sending"))
        self.start(lambda progress: msg.Settled(self.backend.settle(progress)))

    async def on_settled(self, message: msg.Settled) -> None:
        self.finished()
        self.done = True
        out = message.outcome
        verdict = (self.t("settle_balanced") if out.balanced
                   else self.t("settle_unbalanced", n=out.uploaded))
        upload = ([self.t("settle_host_counts", received=out.host_received,
                          matched=out.host_matched if out.host_matched is not None else "-")]
                  if out.host_received is not None else [])
        await self.show_lines(verdict, [self.t("batch", batch=out.batch),
                                        *self.total_lines(out.totals), *upload,
                                        self.t("settle_new_batch", batch=out.new_batch)],
                              self.back)
        self.query_one(".heading").add_class("approved")
        self.set_hint("res_hint")

    def back(self) -> None:
        self.pos.go_menu()

    async def on_core_failed(self, message: msg.CoreFailed) -> None:
        self.finished()
        self.say_error(message.error)
        await self.show_lines(self.t("settle_title"), [self.t("settle_hint")], self.settle)
