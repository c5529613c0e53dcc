"""The cashier's app: a keypad-first Textual app over the terminal core.

Started by ``pos-terminal ui`` through :func:`run_app`. The till is locked
down: no command palette, no quit keys (a supervisor leaves through
settings), every action reachable with digits, Enter, Backspace, Esc and
F1-F4. After ``idle_menu_s`` without a key the app goes back to the menu;
after ``idle_lock_s`` it locks until the operator's password is typed again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from textual import events
from textual.app import App
from textual.binding import BindingType
from textual.screen import Screen

from terminal.ui.text import Lang

if TYPE_CHECKING:  # the core loads behind the first screen (see PosApp)
    from terminal.core.session import Session
    from terminal.ui.backend import Backend


class DemoCard(Protocol):
    """A test card as the demo panel lists it."""

    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def masked_pan(self) -> str: ...


class DemoWorld(Protocol):
    """What the demo panel needs of the emulated world (``demo_world.EmulatedWorld``)."""

    @property
    def reader_mode(self) -> str: ...

    def cards(self) -> Sequence[DemoCard]: ...

    def present(self, name: str, *, contactless: bool = False) -> None: ...

    def remove(self) -> None: ...

    def wrong_pin(self, pin: str | None) -> None: ...


@dataclass(frozen=True)
class UiConfig:
    """Timeouts and looks; tests make the timeouts short and the clock their own."""

    idle_menu_s: float = 120.0
    idle_lock_s: float = 600.0
    check_every_s: float = 1.0
    cursor_blink: bool = True
    monotonic: Callable[[], float] = time.monotonic


class PosApp(App[None], inherit_bindings=False):
    """The till's app (see the module docstring)."""

    CSS_PATH = Path(__file__).parent / "app.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = []
    TITLE = "POS"

    def __init__(self, backend: Backend | None = None, *, lang: Lang = "zh",
                 world: DemoWorld | None = None, config: UiConfig | None = None,
                 loader: Callable[[], Backend] | None = None, training: bool = False,
                 ascii_only: bool = False) -> None:
        """``backend``, or a ``loader`` that builds it (opening the journal, importing the
        core) in a thread while the login screen is already up."""
        super().__init__()
        if (backend is None) == (loader is None):
            raise ValueError("give a backend or a loader, not both")
        self._backend = backend
        self._loader = loader
        self._training = training
        self._core_ready = threading.Event()
        self.load_error: BaseException | None = None
        self._loading = False
        self.ascii_only = ascii_only  # the raw Linux console: English, ASCII borders
        self.first_screen_at: float | None = None  # wall time the login screen was painted
        self.login_hint: str | None = None  # e.g. the training operators' numbers and passwords
        if backend is not None:
            self._core_ready.set()
        self.lang: Lang = lang
        self.world = world
        self.config = config or UiConfig()
        self._last_key = self.config.monotonic()
        self.locked = False

    # --- screens ---------------------------------------------------------------------------
    def get_default_screen(self) -> Screen[None]:
        from terminal.ui.login import LoginScreen
        return LoginScreen()

    def on_mount(self) -> None:
        self.set_interval(self.config.check_every_s, self.idle_tick)
        if self.ascii_only:
            self.add_class("-ascii")
            self.lang = "en"

    def begin_loading(self) -> None:
        """Load the core now (the login screen calls it once it is painted: the loader's
        imports would otherwise compete with the first frame for the GIL)."""
        if self.first_screen_at is None:
            self.first_screen_at = time.time()
        if self._loader is not None and not self._loading:
            self._loading = True
            threading.Thread(target=self._load, name="core-loader", daemon=True).start()

    # --- the core behind the first screen ----------------------------------------------------
    def _load(self) -> None:
        assert self._loader is not None
        try:
            self._backend = self._loader()
        except BaseException as exc:  # shown on the login screen, never a traceback
            self.load_error = exc
        finally:
            self._core_ready.set()

    @property
    def backend_ready(self) -> bool:
        return self._core_ready.is_set() and self._backend is not None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.load_error is not None:
                raise self.load_error
            raise RuntimeError("the till is still starting")
        return self._backend

    @property
    def training(self) -> bool:
        return self._backend.training if self._backend is not None else self._training

    async def wait_backend(self, timeout: float = 60.0) -> None:
        """Wait (without blocking the screen) until the core is loaded."""
        if not self._core_ready.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self._core_ready.wait, timeout)

    def after_login(self) -> None:
        from terminal.ui.menu import MenuScreen
        self.touch()
        self.push_screen(MenuScreen())

    def go_menu(self) -> None:
        """Back to the main menu (or the login screen when nobody is logged in)."""
        from terminal.ui.lock import LockScreen
        from terminal.ui.menu import MenuScreen
        while len(self.screen_stack) > 1 and not isinstance(self.screen, MenuScreen | LockScreen):
            self.pop_screen()

    def logout(self) -> None:
        self.backend.logout()
        self.locked = False
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def lock(self) -> None:
        from terminal.ui.lock import LockScreen
        if self.locked or not self.backend_ready or self.backend.operator is None:
            return
        self.go_menu()
        self.locked = True
        self.push_screen(LockScreen())

    def unlocked(self) -> None:
        self.locked = False
        self.touch()
        self.pop_screen()

    def open_demo(self) -> None:
        from terminal.ui.demo import DemoPanel
        if self.world is not None and not isinstance(self.screen, DemoPanel):
            self.push_screen(DemoPanel(self.world))

    async def set_lang(self, lang: Lang) -> None:
        """Switch the language of every screen on the stack."""
        from terminal.ui.base import PosScreen
        self.lang = lang
        for screen in self.screen_stack:
            if isinstance(screen, PosScreen):
                await screen.relabel()

    # --- idle ------------------------------------------------------------------------------
    def touch(self) -> None:
        self._last_key = self.config.monotonic()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.touch()
        await super().on_event(event)

    def busy(self) -> bool:
        return any(w.group == "core" and not w.is_finished for w in self.workers)

    def idle_tick(self) -> None:
        """Menu after a short idle time, locked after a longer one (never mid-transaction)."""
        from terminal.ui.login import LoginScreen
        from terminal.ui.menu import MenuScreen
        if self.busy():
            self.touch()
            return
        if not self.backend_ready or self.backend.operator is None \
                or isinstance(self.screen, LoginScreen):
            return
        idle = self.config.monotonic() - self._last_key
        if idle >= self.config.idle_lock_s:
            self.lock()
        elif idle >= self.config.idle_menu_s and not self.locked \
                and not isinstance(self.screen, MenuScreen):
            self.go_menu()


def app_for_session(session: Session, *, lang: Lang = "zh", world: DemoWorld | None = None,
                    config: UiConfig | None = None) -> PosApp:
    """The app over a core ``Session``."""
    from terminal.ui.backend import Backend
    return PosApp(Backend(session), lang=lang, world=world, config=config)


def run_app(session: Session, *, lang: str = "zh", training: bool = False,
            world: DemoWorld | None = None, login_hint: str | None = None,
            ascii_only: bool = False) -> int:
    """Run the cashier app in this terminal until a supervisor exits it; the exit code.

    ``training`` is shown by the till's own setting already (every screen says
    培训 / TRAINING); it is accepted so the CLI can say what it started.
    ``login_hint`` (training only: the training operators) is shown on the login screen.
    """
    del training
    app = app_for_session(session, lang="en" if lang == "en" else "zh", world=world)
    app.login_hint = login_hint
    app.ascii_only = ascii_only
    app.run()
    return 0


def run_app_loading(open_session: Callable[[], Session], *, lang: str = "zh",
                    training: bool = False, world: DemoWorld | None = None,
                    ascii_only: bool = False) -> int:
    """Like :func:`run_app`, but the login screen is up while ``open_session`` runs."""
    def load() -> Backend:
        from terminal.ui.backend import Backend
        return Backend(open_session())

    app = PosApp(loader=load, lang="en" if lang == "en" else "zh", world=world,
                 training=training, ascii_only=ascii_only)
    try:
        app.run()
    finally:
        backend = app._backend
        if backend is not None:
            backend.till.close()
    return 0
