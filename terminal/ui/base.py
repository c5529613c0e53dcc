"""The frame every cashier screen shares, and the steps a wizard is built from.

A :class:`PosScreen` is title + body + message line + key hint + status bar.
Its body is replaced step by step (:meth:`PosScreen.show_menu`,
:meth:`~PosScreen.show_fields`, :meth:`~PosScreen.show_amount`,
:meth:`~PosScreen.show_lines`, :meth:`~PosScreen.show_progress`), each
calling back when the cashier presses Enter. Every blocking core call goes
through :meth:`PosScreen.core_job`, a thread worker that posts one past-tense
message back (or :class:`~terminal.ui.messages.CoreFailed`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Label, OptionList, Static

from terminal.core.ports import Progress, Step
from terminal.ui import messages as msg
from terminal.ui.text import Lang, error_text, step_text, tr
from terminal.ui.widgets import AmountEntry, NumberedList, StatusBar

if TYPE_CHECKING:
    from terminal.ui.app import PosApp
    from terminal.ui.backend import Backend

log = logging.getLogger(__name__)

Then = Callable[..., Awaitable[None] | None]


class PosScreen(Screen[None]):
    """Title, body, message line, key hint and status bar; keypad keys."""

    TITLE_KEY: ClassVar[str] = "app_title"
    HINT_KEY: ClassVar[str] = "keys_hint"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", show=False),
        Binding("enter", "enter", show=False),
        Binding("f1", "demo", show=False),
        Binding("f2", "f2", show=False),
        Binding("f3", "f3", show=False),
        Binding("f4", "f4", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._then_pick: Then | None = None
        self._then_fields: Then | None = None
        self._then_amount: Then | None = None
        self._then_enter: Then | None = None
        self.busy = False
        self.current_step: Step | None = None

    # --- shortcuts ------------------------------------------------------------------
    @property
    def pos(self) -> PosApp:
        return cast("PosApp", self.app)

    @property
    def backend(self) -> Backend:
        return self.pos.backend

    @property
    def lang(self) -> Lang:
        return self.pos.lang

    def t(self, key: str, **values: object) -> str:
        return tr(key, self.lang, **values)

    # --- frame ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        if self.pos.training:
            yield Static(self.t("training_banner"), id="training")
        yield Static(self.t(self.TITLE_KEY), id="title")
        with Vertical(id="body"):
            yield from self.compose_body()
        yield Static("", id="message")
        yield Static(self.t(self.HINT_KEY), id="hint")
        yield StatusBar(id="status")

    def compose_body(self) -> ComposeResult:
        yield from ()

    async def on_mount(self) -> None:
        await self.build()

    async def build(self) -> None:
        """Fill the screen after it is composed (again after a language switch)."""

    async def relabel(self) -> None:
        """The language changed: compose again and rebuild."""
        await self.recompose()
        await self.build()

    def say(self, text: str, *, error: bool = False) -> None:
        """One line under the body: an error in the cashier's language, or a note."""
        line = self.query_one("#message", Static)
        line.update(text)
        line.set_class(error, "error")

    def say_error(self, exc: BaseException) -> None:
        if not hasattr(exc, "cashier_zh"):
            log.error("unexpected failure on %s", type(self).__name__, exc_info=exc)
        self.say(error_text(exc, self.lang), error=True)

    def set_hint(self, key: str) -> None:
        self.query_one("#hint", Static).update(self.t(key))

    def refresh_status(self) -> None:
        for bar in self.query(StatusBar):
            bar.update_status()

    # --- keys -------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if not self.busy:
            self.pos.go_menu()
        elif self.current_step is Step.READING_CARD:
            # the only wait that is always safe to cancel: nothing is written or sent yet
            self.backend.cancel_card_wait()

    async def action_enter(self) -> None:
        if self._then_enter is not None and not self.busy:
            callback, self._then_enter = self._then_enter, None
            await _call(callback)

    def action_demo(self) -> None:
        self.pos.open_demo()

    async def action_f2(self) -> None:
        """Overridden where F2 means something."""

    def action_f3(self) -> None:
        """Overridden where F3 means something."""

    def action_f4(self) -> None:
        """Overridden where F4 means something."""

    # --- workers ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="core")
    def core_job(self, job: Callable[[Progress], Message]) -> None:
        """Run one blocking core call off the UI thread; post what happened."""
        try:
            result = job(self._progress)
        except Exception as exc:  # every failure reaches the screen, none is a traceback
            result = msg.CoreFailed(exc)
        self.post_message(result)

    def _progress(self, step: Step) -> None:
        self.post_message(msg.StepReached(step))

    def start(self, job: Callable[[Progress], Message]) -> None:
        self.busy = True
        self.pos.touch()
        self.core_job(job)

    def on_step_reached(self, message: msg.StepReached) -> None:
        self.current_step = message.step
        for widget in self.query("#progress"):
            cast(Static, widget).update(step_text(message.step, self.lang))

    def finished(self) -> None:
        self.busy = False
        self.current_step = None
        self.pos.touch()
        self.refresh_status()

    # --- wizard steps -------------------------------------------------------------------------
    async def _replace(self, *widgets: Static | Label | Input | OptionList | AmountEntry) -> None:
        body = self.query_one("#body", Vertical)
        await body.remove_children()
        await body.mount(*widgets)
        self._then_pick = self._then_fields = self._then_amount = self._then_enter = None

    async def show_menu(self, heading: str, items: Sequence[str], then: Then, *,
                        info: Sequence[str] = ()) -> None:
        """A numbered list; ``then(index)`` on a digit or Enter."""
        menu = NumberedList(list(items), id="menu")
        await self._replace(Label(heading, classes="heading"),
                            *[Static(line, classes="info") for line in info], menu)
        self._then_pick = then
        menu.focus()

    async def show_fields(self, heading: str, fields: Sequence[tuple[str, bool, int]],
                          then: Then, *, info: Sequence[str] = ()) -> None:
        """Inputs (prompt, password, max length); Enter moves on, the last one submits.

        ``then(*values)`` gets every field's text.
        """
        widgets: list[Static | Label | Input] = [Label(heading, classes="heading")]
        widgets += [Static(line, classes="info") for line in info]
        blink = self.pos.config.cursor_blink
        for n, (prompt, password, max_length) in enumerate(fields):
            widgets.append(Label(prompt, classes="prompt"))
            widgets.append(Input(password=password, max_length=max_length, id=f"field{n}",
                                 classes="field"))
        await self._replace(*widgets)
        for field in self.query(Input):
            field.cursor_blink = blink
        self._then_fields = then
        self.query_one("#field0", Input).focus()

    async def show_amount(self, heading: str, then: Then, *, info: Sequence[str] = ()) -> None:
        """The right-shifting amount entry; ``then(amount)`` on Enter."""
        entry = AmountEntry(id="amount")
        await self._replace(Label(heading, classes="heading"),
                            *[Static(line, classes="info") for line in info], entry)
        self._then_amount = then
        entry.focus()

    async def show_lines(self, heading: str, lines: Sequence[str], then: Then | None = None,
                         ) -> None:
        """Text to read; ``then()`` on Enter."""
        await self._replace(Label(heading, classes="heading"),
                            *[Static(line, classes="info") for line in lines])
        self._then_enter = then
        self.set_focus(None)

    async def show_progress(self, heading: str, first: str, *, info: Sequence[str] = ()) -> None:
        """A wait in words; :class:`~terminal.ui.messages.StepReached` updates it."""
        await self._replace(Label(heading, classes="heading"),
                            *[Static(line, classes="info") for line in info],
                            Static(first, id="progress"))
        self.set_focus(None)

    @on(OptionList.OptionSelected, "#menu")
    async def _picked(self, event: OptionList.OptionSelected) -> None:
        if self._then_pick is not None and not self.busy:
            await _call(self._then_pick, event.option_index)

    @on(Input.Submitted, ".field")
    async def _submitted(self, event: Input.Submitted) -> None:
        if self._then_fields is None or self.busy:
            return
        fields = list(self.query(".field").results(Input))
        index = fields.index(event.input)
        if index + 1 < len(fields):
            fields[index + 1].focus()
            return
        await _call(self._then_fields, *[f.value for f in fields])

    @on(AmountEntry.Submitted)
    async def _amount(self, event: AmountEntry.Submitted) -> None:
        if self._then_amount is not None and not self.busy:
            await _call(self._then_amount, event.amount)


async def _call(callback: Then, *args: object) -> None:
    result = callback(*args)
    if result is not None:
        await result
