"""The login screen comes up before the core: the till loads behind it."""

from __future__ import annotations

import threading
from pathlib import Path

from terminal.core.session import Session
from terminal.ui.app import PosApp
from terminal.ui.backend import Backend
from tests.terminal.core.harness import make_rig


async def test_login_waits_for_a_core_that_loads_behind_the_first_screen(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    session = Session(rig.till)
    session.operators.bootstrap("12345678", "123456")
    release = threading.Event()

    def load() -> Backend:
        assert release.wait(10)
        return Backend(session)

    app = PosApp(loader=load, lang="en", training=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not app.backend_ready
        assert app.first_screen_at is not None  # painted, and the loader started
        assert app.training  # known before the core is there
        status = str(app.screen.query_one("#status").render())
        assert "Starting the till" in status
        for key in "99":
            await pilot.press(key)
        await pilot.press("enter")
        for key in "12345678":
            await pilot.press(key)
        threading.Timer(0.3, release.set).start()  # the core arrives while...
        await pilot.press("enter")  # ...the login waits for it
        await app.wait_backend()
        for _ in range(20):
            await pilot.pause(0.05)
            if session.operator is not None:
                break
        assert session.operator is not None
        assert session.operator.number == "99"


async def test_a_core_that_fails_to_load_is_an_error_on_screen(tmp_path: Path) -> None:
    def load() -> Backend:
        from terminal.core.errors import ConfigError
        raise ConfigError("no terminal here", cashier_en="Terminal not set up")

    app = PosApp(loader=load, lang="en")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await app.wait_backend()
        assert app.load_error is not None
        for key in "01":
            await pilot.press(key)
        await pilot.press("enter")
        await pilot.press("0", "0", "0", "0", "enter")
        await pilot.pause(0.2)
        message = str(app.screen.query_one("#message").render())
        assert "Terminal not set up" in message
