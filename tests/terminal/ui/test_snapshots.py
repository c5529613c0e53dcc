"""SVG snapshots of the main screens in both languages at 80x24, and the refund result at 40x16.

The rig's clock is fixed and the host's randomness seeded, so RRNs, times and
batches are the same on every run; cursor blink is off. Update with
``pytest tests/terminal/ui/test_snapshots.py --snapshot-update`` after a
deliberate change, and look at the SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.terminal.ui.rig import Till, keys, login, make_till, settle

Run = Callable[[Pilot[None]], Awaitable[None]]
SnapCompare = Callable[..., bool]
LANGS = ("zh", "en")


def _till(tmp_path: Path, lang: str) -> Till:
    till = make_till(tmp_path, lang=lang)
    till.seed_sale(100_00)
    till.seed_sale(36_50, "visa-credit")
    till.present("cup-debit")
    return till


async def _quote(pilot: Pilot[None]) -> None:
    await login(pilot)
    await keys(pilot, "2", enter=False)
    await keys(pilot, "1", enter=False)
    await keys(pilot, "2")  # voucher 2: the 100.00 sale (sign-on took STAN 000001)
    await keys(pilot, "5", enter=False)
    await keys(pilot, "3000")


async def _result(pilot: Pilot[None]) -> None:
    await _quote(pilot)
    await keys(pilot, "", enter=True)
    await settle(pilot)


SCREENS: dict[str, Run] = {
    "login": settle,
    "menu": login,
    "quote": _quote,
    "result": _result,
}


async def _transactions(pilot: Pilot[None]) -> None:
    await login(pilot)
    await keys(pilot, "4", enter=False)


async def _settlement(pilot: Pilot[None]) -> None:
    await login(pilot)
    await keys(pilot, "5", enter=False)


SCREENS["transactions"] = _transactions
SCREENS["settlement"] = _settlement


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("screen", list(SCREENS))
def test_main_screens_80x24(snap_compare: SnapCompare, tmp_path: Path, screen: str,
                            lang: str) -> None:
    till = _till(tmp_path, lang)
    assert snap_compare(till.app, terminal_size=(80, 24), run_before=SCREENS[screen])


@pytest.mark.parametrize("lang", LANGS)
def test_refund_result_40x16(snap_compare: SnapCompare, tmp_path: Path, lang: str) -> None:
    till = _till(tmp_path, lang)
    assert snap_compare(till.app, terminal_size=(40, 16), run_before=_result)


def test_voucher_of_first_sale(tmp_path: Path) -> None:
    """The snapshots refund voucher 2: it must be the 100.00 sale."""
    till = _till(tmp_path, "zh")
    first: Any = till.rig.till.journal.records("kind = 'sale'")[0]
    assert int(first.voucher) == 2
    assert first.amount == 100_00
