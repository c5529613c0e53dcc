"""设置 Settings: language, operators (supervisor), approval limits, log out, exit."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.ui.base import PosScreen

ITEMS = ("set_lang", "set_operators", "set_limits", "set_logout", "set_exit")


class SettingsScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "settings_title"

    async def build(self) -> None:
        await self.show_menu(self.t("settings_title"), [self.t(key) for key in ITEMS],
                             self.chosen)
        cfg = self.pos.config
        self.say(self.t("set_timeouts", menu=int(cfg.idle_menu_s), lock=int(cfg.idle_lock_s)))

    async def chosen(self, index: int) -> None:
        from terminal.ui.operators import OperatorsScreen
        key = ITEMS[index]
        if key == "set_lang":
            await self.pos.set_lang("en" if self.lang == "zh" else "zh")
        elif key == "set_operators":
            if not self.backend.is_supervisor():
                self.say(self.t("not_permitted"), error=True)
                return
            self.app.push_screen(OperatorsScreen())
        elif key == "set_limits":
            await self.show_lines(self.t("set_limits"), self.backend.limits(self.lang),
                                  self.build)
        elif key == "set_logout":
            self.pos.logout()
        elif key == "set_exit":
            if not (self.backend.is_supervisor() or self.backend.training):
                self.say(self.t("not_permitted"), error=True)
                return
            self.app.exit()

    def action_cancel(self) -> None:
        self.app.pop_screen()
