"""报表 Reports: today's report as the core lays it out (totals, refunds by reason, voids)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.containers import VerticalScroll
from textual.widgets import Static

from terminal.ui.base import PosScreen


class ReportsScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "reports_title"

    async def build(self) -> None:
        try:
            text = self.backend.report_text(self.lang)
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        body = self.query_one("#body")
        await body.remove_children()
        await body.mount(VerticalScroll(Static(text, id="report", markup=False), id="paper"))
        self.set_focus(None)
