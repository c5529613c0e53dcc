"""Small widgets every screen shares: status bar, keypad amount entry, numbered list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from terminal.core.money import format_amount
from terminal.ui.text import tr

if TYPE_CHECKING:
    from terminal.ui.app import PosApp

#: A keypad amount has at most 12 digits (F4 is n12).
MAX_DIGITS = 12
#: Below this width the status bar leaves out what is fine (devices) and the time.
NARROW = 60


class StatusBar(Static):
    """Operator, signed on, host, reader and PIN pad, pending follow-ups, batch, TRAINING."""

    def on_mount(self) -> None:
        self.update_status()
        self.set_interval(2.0, self.update_status)

    def on_resize(self) -> None:
        self.update_status()

    def update_status(self) -> None:
        app = cast("PosApp", self.app)
        lang = app.lang
        if not app.backend_ready:
            self.update(tr("status_starting", lang))
            return
        s = app.backend.status()
        if s is None:
            return
        narrow = 0 < self.size.width < NARROW
        devices_ok = "none" not in (s.reader, s.pinpad)
        parts = [tr("status_op", lang, op=s.operator) if s.operator else tr("status_no_op", lang),
                 tr("signed_on" if s.signed_on else "not_signed_on", lang),
                 tr({True: "host_up", False: "host_down", None: "host_unknown"}[s.host_reachable],
                    lang)]
        if not (narrow and devices_ok):  # a small screen names the devices only when missing
            parts += [tr("reader", lang, state=_device(s.reader, lang)),
                      tr("pinpad", lang, state=_device(s.pinpad, lang))]
        parts += [tr("pending", lang, n=s.open_items), tr("batch", lang, batch=s.batch)]
        if not narrow:
            parts.append(s.now.strftime("%H:%M"))
        text = " | ".join(parts)
        if s.training:
            text = f"[b reverse] {tr('training', lang)} [/] " + text
        self.update(text)


def _device(description: str, lang: str) -> str:
    if description in ("none", ""):
        return tr("device_none", lang)  # type: ignore[arg-type]
    return tr("device_ok", lang)  # type: ignore[arg-type]


class AmountEntry(Static, can_focus=True):
    """The POS keypad's right-shifting amount: 0.00 -> 0.01 -> 0.12 -> 1.23.

    Digits shift in from the right, Backspace takes the last one back, Enter
    submits (with the amount in fen).
    """

    digits: reactive[str] = reactive("")

    @dataclass
    class Submitted(Message):
        entry: AmountEntry
        amount: int

    @property
    def amount(self) -> int:
        return int(self.digits) if self.digits else 0

    def render(self) -> str:
        return format_amount(self.amount)

    def on_key(self, event: events.Key) -> None:
        if event.character is not None and event.character.isdigit() and len(event.key) == 1:
            if len(self.digits) < MAX_DIGITS and not (event.character == "0" and not self.digits):
                self.digits += event.character
            event.stop()
        elif event.key == "backspace":
            self.digits = self.digits[:-1]
            event.stop()
        elif event.key == "enter":
            self.post_message(self.Submitted(self, self.amount))
            event.stop()


class NumberedList(OptionList):
    """A menu whose items are picked by their digit (1-9) or with arrows and Enter."""

    def __init__(self, items: list[str], *, id: str | None = None) -> None:
        options = [Option(f"{n}  {text}", id=str(n - 1)) for n, text in enumerate(items, 1)]
        super().__init__(*options, id=id)

    def on_key(self, event: events.Key) -> None:
        if event.character is not None and event.character.isdigit() and event.character != "0":
            index = int(event.character) - 1
            if index < self.option_count:
                self.highlighted = index
                self.action_select()
            event.stop()
