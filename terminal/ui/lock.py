"""The locked till: the operator's password again, or F4 to log out."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.ui.base import PosScreen


class LockScreen(PosScreen):
    """Pushed by the idle timeout over the menu; nothing else is reachable."""

    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "lock_title"

    async def build(self) -> None:
        await self.ask()

    async def ask(self) -> None:
        op = self.backend.operator
        number = op.number if op else "--"
        await self.show_fields(self.t("lock_hint", op=number),
                               [(self.t("login_password"), True, 64)], self.submit)

    async def submit(self, password: str) -> None:
        try:
            self.backend.unlock(password)
        except Exception as exc:  # wrong password or locked operator: shown, never raised
            self.say_error(exc)
            await self.ask()
            return
        self.pos.unlocked()

    def action_cancel(self) -> None:
        """Esc does not get past the lock."""

    def action_demo(self) -> None:
        """No demo panel over a locked till."""

    def action_f4(self) -> None:
        self.pos.logout()
