"""Operator login: two digits and a password, then the main menu."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult

from terminal.ui.base import PosScreen
from terminal.ui.text import tr


class LoginScreen(PosScreen):
    """The first screen, and where logging out returns to."""

    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "login_title"
    HINT_KEY: ClassVar[str] = "login_hint"

    def __init__(self) -> None:
        super().__init__()
        self._expired = ("", "")  # (number, old password) while an expired one is changed

    def compose_body(self) -> ComposeResult:
        yield from ()

    async def build(self) -> None:
        await self.ask()
        self.call_after_refresh(self.pos.begin_loading)

    async def on_screen_resume(self) -> None:
        """Back from the menu (logout, lock): empty fields, never the last password."""
        if self.is_mounted:
            await self.ask()

    async def ask(self) -> None:
        hint = self.pos.login_hint
        await self.show_fields(self.t("login_title"),
                               [(self.t("login_number"), False, 2),
                                (self.t("login_password"), True, 64)], self.submit,
                               info=[self.t("training_login_hint", ops=hint)] if hint else [])

    async def submit(self, number: str, password: str) -> None:
        await self.pos.wait_backend()
        try:
            op = self.backend.login(number.strip(), password)
        except Exception as exc:  # a refusal is shown, never raised
            self.say_error(exc)
            await self.ask()
            return
        if op.must_change_password:
            self._expired = (number.strip(), password)
            await self.show_fields(self.t("pw_expired"),
                                   [(self.t("pw_new"), True, 64), (self.t("pw_repeat"), True, 64)],
                                   self.change)
            return
        self.say(tr("login_ok", self.lang, op=op.number))
        self.pos.after_login()

    async def change(self, new: str, repeat: str) -> None:
        """An expired password: a new one (typed twice) before any work."""
        number, old = self._expired
        if new != repeat:
            self.say(self.t("pw_mismatch"), error=True)
            await self.show_fields(self.t("pw_expired"),
                                   [(self.t("pw_new"), True, 64), (self.t("pw_repeat"), True, 64)],
                                   self.change)
            return
        try:
            op = self.backend.change_password(number, old, new)
        except Exception as exc:  # a refusal is shown, never raised
            self.say_error(exc)
            await self.ask()
            return
        self._expired = ("", "")
        self.say(tr("login_ok", self.lang, op=op.number))
        self.pos.after_login()

    def action_cancel(self) -> None:
        """Esc on the login screen clears it."""
        self.call_later(self.ask)

    async def action_f2(self) -> None:
        await self.pos.set_lang("en" if self.lang == "zh" else "zh")
