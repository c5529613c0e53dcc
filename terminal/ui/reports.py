"""报表 Reports: today, the open batch, a batch by number or a date range, as the core lays
them out (totals, refunds by reason / operator / card type, voids)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from textual.containers import VerticalScroll
from textual.widgets import Static

from terminal.ui.base import PosScreen


class ReportsScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "reports_title"

    async def build(self) -> None:
        await self.show_menu(self.t("reports_title"),
                             [self.t("rep_today"), self.t("rep_open_batch"),
                              self.t("rep_batch"), self.t("rep_range")], self.pick)

    async def pick(self, index: int) -> None:
        if index == 0:
            await self.show(lambda: self.backend.report_text(self.lang))
        elif index == 1:
            await self.show(lambda: self.backend.report_text(
                self.lang, batch=self.backend.open_batch()))
        elif index == 2:
            await self.show_fields(self.t("rep_batch"), [(self.t("rep_batch_no"), False, 6)],
                                   self.by_batch)
        else:
            await self.show_fields(self.t("rep_range"), [(self.t("rep_from"), False, 8),
                                                         (self.t("rep_to"), False, 8)],
                                   self.by_range)

    async def by_batch(self, number: str) -> None:
        if not number.strip().isdigit():
            self.say(self.t("rep_bad_input"), error=True)
            await self.build()
            return
        await self.show(lambda: self.backend.report_text(
            self.lang, batch=f"{int(number):06d}"))

    async def by_range(self, first: str, last: str) -> None:
        try:
            if not all(len(d.strip()) == 8 and d.strip().isdigit() for d in (first, last)):
                raise ValueError("dates are YYYYMMDD")
            start = datetime.strptime(first.strip(), "%Y%m%d")
            end = datetime.strptime(last.strip(), "%Y%m%d") + timedelta(days=1)
        except ValueError:
            self.say(self.t("rep_bad_input"), error=True)
            await self.build()
            return
        await self.show(lambda: self.backend.report_text(self.lang, start=start, end=end))

    async def show(self, make: Callable[[], str]) -> None:
        try:
            text = make()
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        body = self.query_one("#body")
        await body.remove_children()
        await body.mount(VerticalScroll(Static(text, id="report", markup=False), id="paper"))
        self.set_focus(None)
