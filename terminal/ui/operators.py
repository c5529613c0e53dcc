"""操作员管理 Operators (supervisor and administrator): add, unlock, reset, deactivate.

Who may manage whom is the core's rule (:mod:`terminal.core.operators`); a
refusal comes back as an error with the cashier's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.core.operators import ROLE_TEXT
from terminal.ui.base import PosScreen
from terminal.ui.text import pick

ACTIONS = ("ops_add", "ops_unlock", "ops_reset", "ops_deactivate")


class OperatorsScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "ops_title"

    async def build(self) -> None:
        try:
            ops = self.backend.list_operators()
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        now = self.backend.now()
        rows = [self.t("ops_row", number=op.number, role=pick(ROLE_TEXT[op.role], self.lang),
                       name=op.name,
                       state=self.t("ops_locked") if op.locked_until and op.locked_until > now
                       else self.t("ops_active") if op.active else "-")
                for op in ops]
        await self.show_menu(self.t("ops_title"), [self.t(key) for key in ACTIONS],
                             self.chosen, info=rows)

    async def chosen(self, index: int) -> None:
        key = ACTIONS[index]
        fields = [(self.t("ops_number"), False, 2)]
        if key in ("ops_add", "ops_reset"):
            fields.append((self.t("ops_password"), True, 64))

        async def done(number: str, password: str = "") -> None:
            number = number.strip()
            try:
                if key == "ops_add":
                    self.backend.add_operator(number, password)
                elif key == "ops_unlock":
                    self.backend.unlock_operator(number)
                elif key == "ops_reset":
                    self.backend.reset_password(number, password)
                else:
                    self.backend.deactivate_operator(number)
            except Exception as exc:  # not permitted, exists, policy: said on screen
                self.say_error(exc)
                await self.build()
                return
            await self.build()
            self.say(self.t("ops_done", number=number))

        await self.show_fields(self.t(key), fields, done)

    def action_cancel(self) -> None:
        self.app.pop_screen()
