"""The demo panel (training and demo only): present a test card, remove it, set the PIN.

One key away (F1) whenever the app was given an emulated world. Digits present
a card by contact (or contactless after F2), 0 removes it, F3 makes the
cardholder type the card's PIN and F4 a wrong one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from terminal.ui.text import Lang, error_text, tr

if TYPE_CHECKING:
    from terminal.ui.app import DemoWorld, PosApp

WRONG_PIN = "000000"


class DemoPanel(ModalScreen[None]):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1", "close", show=False),
        Binding("f2", "mode", show=False),
        Binding("f3", "right_pin", show=False),
        Binding("f4", "wrong_pin", show=False),
        Binding("0", "remove", show=False),
        *[Binding(str(n), f"present({n})", show=False) for n in range(1, 10)],
    ]

    def __init__(self, world: DemoWorld) -> None:
        super().__init__()
        self.world = world
        self.contactless = False

    @property
    def lang(self) -> Lang:
        return cast("PosApp", self.app).lang

    def compose(self) -> ComposeResult:
        lang = self.lang
        with Vertical(id="panel"):
            yield Static(tr("demo_title", lang), id="demo-title")
            yield Static(tr("demo_reader", lang, mode=self.world.reader_mode), classes="info")
            for n, card in enumerate(list(self.world.cards())[:9], 1):
                yield Static(f"{n}  {card.name:<14} {card.masked_pan}", classes="info")
            yield Static(tr("demo_mode_contact", lang), id="demo-mode")
            yield Static("", id="demo-note")
            yield Static(tr("demo_hint", lang), id="demo-hint")

    def note(self, text: str) -> None:
        self.query_one("#demo-note", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_mode(self) -> None:
        self.contactless = not self.contactless
        key = "demo_mode_contactless" if self.contactless else "demo_mode_contact"
        self.query_one("#demo-mode", Static).update(tr(key, self.lang))

    def action_present(self, n: int) -> None:
        cards = list(self.world.cards())
        if not 1 <= n <= len(cards):
            return
        try:
            self.world.present(cards[n - 1].name, contactless=self.contactless)
        except Exception as exc:  # the world's failure, said on the panel
            self.note(error_text(exc, self.lang))
            return
        self.note(tr("demo_presented", self.lang, card=cards[n - 1].name))

    def action_remove(self) -> None:
        self.world.remove()
        self.note(tr("demo_removed", self.lang))

    def action_right_pin(self) -> None:
        self.world.wrong_pin(None)
        self.note(tr("demo_pin_right", self.lang))

    def action_wrong_pin(self) -> None:
        self.world.wrong_pin(WRONG_PIN)
        self.note(tr("demo_pin_wrong", self.lang))
