"""Reports by batch and by date range; an expired password is changed before any work."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from terminal.ui.menu import MenuScreen
from tests.terminal.ui.rig import CASHIER_PW, keys, login, make_till, screen_text


async def test_reports_of_a_settled_batch_and_of_a_date_range(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    till.seed_sale(10_00)
    till.seed_sale(15_00)
    till.rig.till.settle()
    till.seed_sale(7_00)  # batch 000002
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "6", enter=False)
        await keys(pilot, "3", enter=False)  # a batch by number
        await keys(pilot, "1")
        text = screen_text(till.app)
        assert "batch 000001" in text
        assert "2 / 25.00" in text
        await pilot.press("escape")
        await keys(pilot, "6", enter=False)
        await keys(pilot, "2", enter=False)  # the open batch
        assert "1 / 7.00" in screen_text(till.app)
        await pilot.press("escape")
        day = till.rig.clock().strftime("%Y%m%d")
        await keys(pilot, "6", enter=False)
        await keys(pilot, "4", enter=False)  # a date range, both days inclusive
        await keys(pilot, day)
        await keys(pilot, day)
        assert "3 / 32.00" in screen_text(till.app)
        await pilot.press("escape")
        await keys(pilot, "6", enter=False)
        await keys(pilot, "4", enter=False)
        await keys(pilot, "2026130")  # not a date
        await keys(pilot, day)
        assert "Check the input" in screen_text(till.app)


async def test_an_expired_password_is_changed_before_any_work(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    store = till.backend.session.operators
    store.set_password_expiry(30, by=store.get("99"))
    till.rig.clock.advance(days=31)
    till.clock.now += timedelta(days=31).total_seconds()  # the UI's idle clock too
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        assert "Password expired" in screen_text(till.app)
        await keys(pilot, "5678")
        await keys(pilot, "9999")  # not the same twice
        assert "differ" in screen_text(till.app)
        await keys(pilot, "5678")
        await keys(pilot, "5678")
        assert isinstance(till.app.screen, MenuScreen)
    assert store.login("01", "5678", allow_expired=False).number == "01"
    assert CASHIER_PW != "5678"
