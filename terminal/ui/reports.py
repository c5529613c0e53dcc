"""报表 Reports: today's transactions by kind and outcome, and the open batch."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.core.money import format_amount
from terminal.ui.base import PosScreen
from terminal.ui.text import kind_text, status_text


class ReportsScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "reports_title"

    async def build(self) -> None:
        try:
            rows = self.backend.today_summary()
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        lines = [self.t("report_row", kind=kind_text(kind, self.lang),
                        status=status_text(status, self.lang), count=count,
                        amount=format_amount(amount))
                 for kind, status, count, amount in rows] or [self.t("report_empty")]
        lines.append(self.t("report_batch", batch=self.backend.batch()))
        await self.show_lines(self.t("report_today"), lines)
