"""The raw Linux console theme: English text and ASCII borders only."""

from __future__ import annotations

from pathlib import Path

from tests.terminal.ui.rig import keys, login, make_till


async def test_ascii_mode_draws_no_box_or_cjk_characters(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="zh")
    till.app.ascii_only = True
    till.seed_sale(10_00)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "1", enter=False)  # sale: the amount entry has a border
        await keys(pilot, "500", enter=False)
        await pilot.pause()
        shown = till.app.export_screenshot()
        text = "".join(ch for ch in shown if ord(ch) > 127)
        assert till.app.lang == "en"
        assert not any(0x2500 <= ord(ch) <= 0x259F for ch in text), "box-drawing characters"
        assert not any(0x4E00 <= ord(ch) <= 0x9FFF for ch in text), "CJK characters"
        assert "5.00" in shown
