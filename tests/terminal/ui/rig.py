"""The app over the real core and the in-memory rig: fixtures and keypad helpers for Pilot tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Label, Static

from emulator.catalogue import CARDS, card_by_name
from iso8583.masking import mask_pan
from terminal.core.approvals import ApprovalPolicy
from terminal.core.operators import OperatorStore
from terminal.core.ports import Purpose
from terminal.core.session import Session
from terminal.core.till import Outcome
from terminal.ui.app import PosApp, UiConfig
from terminal.ui.backend import Backend
from tests.terminal.core.harness import Rig, make_rig

SUPERVISOR_PW = "0000"
ADMIN_PW = "9999"
CASHIER_PW = "1111"
SCRYPT_N = 2**4  # tests only: cheap password hashes


class FakeClock:
    """The app's idle clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class DemoCard:
    name: str
    label: str
    masked_pan: str


class RigWorld:
    """The demo panel's world over the rig's card slot and PIN pad."""

    reader_mode = "virtual card (in-process)"

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    def cards(self) -> Sequence[DemoCard]:
        return [DemoCard(c.name, c.label, mask_pan(c.pan)) for c in CARDS if c.aid is not None]

    def present(self, name: str, *, contactless: bool = False) -> None:
        card = card_by_name(name)
        self.rig.slot.present(card, contactless=contactless)
        self.rig.pad.pin = card.pin

    def remove(self) -> None:
        self.rig.slot.remove()

    def wrong_pin(self, pin: str | None) -> None:
        card = self.rig.slot.card
        self.rig.pad.pin = pin or (card.pin if card else None)


@dataclass
class Till:
    """One test's till: rig, backend, app and its idle clock."""

    rig: Rig
    backend: Backend
    app: PosApp
    clock: FakeClock

    def present(self, name: str = "cup-debit", *, contactless: bool = False) -> None:
        card = card_by_name(name)
        self.rig.slot.present(card, contactless=contactless)
        self.rig.pad.pin = card.pin

    def seed_sale(self, amount: int, card: str = "cup-debit") -> Outcome:
        """A sale made straight through the core (the refund tests' original)."""
        read = self.rig.card(card, Purpose.SALE, amount)
        outcome = self.rig.till.sale(amount, read, operator="01")
        assert outcome.approved, outcome
        return outcome


def make_till(tmp_path: Path, *, lang: str = "zh", policy: ApprovalPolicy | None = None,
              world: bool = False) -> Till:
    rig = make_rig(tmp_path)
    session = Session(rig.till, policy=policy or ApprovalPolicy())
    session.operators = OperatorStore(rig.till.journal.conn, rig.till.clock,
                                      audit=session.audit, scrypt_n=SCRYPT_N)
    session.operators.bootstrap(ADMIN_PW, SUPERVISOR_PW)
    supervisor = session.operators.login("00", SUPERVISOR_PW)
    session.operators.add("01", CASHIER_PW, by=supervisor, name="Li")
    backend = Backend(session)
    clock = FakeClock()
    config = UiConfig(idle_menu_s=60, idle_lock_s=300, check_every_s=3600,
                      cursor_blink=False, monotonic=clock)
    app = PosApp(backend, lang="en" if lang == "en" else "zh",
                 world=RigWorld(rig) if world else None, config=config)
    return Till(rig, backend, app, clock)


async def settle(pilot: Pilot[None]) -> None:
    """Wait until no core worker runs and every message they posted was handled."""
    app = pilot.app
    for _ in range(50):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(not w.is_finished for w in app.workers):
            await pilot.pause()
            return
    raise AssertionError("workers did not settle")


async def keys(pilot: Pilot[None], text: str, *, enter: bool = True) -> None:
    """Type ``text`` on the keypad (each character a key), then Enter."""
    await pilot.press(*["space" if ch == " " else ch for ch in text])
    if enter:
        await pilot.press("enter")
    await settle(pilot)


async def login(pilot: Pilot[None], number: str = "01", password: str = CASHIER_PW) -> None:
    for _ in range(100):  # the login fields are mounted after the screen (headless runs)
        if pilot.app.screen.query("#field0"):
            break
        await pilot.pause()
    await keys(pilot, number)
    await keys(pilot, password)


def screen_text(app: PosApp) -> str:
    """Every line of text on the current screen."""
    parts: list[str] = []
    for widget in app.screen.query("Static, Label, OptionList"):
        if isinstance(widget, Static | Label):
            parts.append(str(widget.render()))
        else:
            from textual.widgets import OptionList
            assert isinstance(widget, OptionList)
            parts += [str(widget.get_option_at_index(i).prompt)
                      for i in range(widget.option_count)]
    return "\n".join(parts)
