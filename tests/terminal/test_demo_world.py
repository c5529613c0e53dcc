"""The emulated world's card slot: waits for a card, and Esc stops the wait."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from terminal.core.devices import EmvCardReader
from terminal.core.errors import DeviceError
from terminal.core.ports import Purpose
from terminal.demo_world import CardSlot, virtual_card_reader


def _reader(slot: CardSlot) -> EmvCardReader:
    return EmvCardReader(slot.source, description="slot", timeout=10.0, cancel=slot.cancel)


def test_a_read_waits_for_the_card_presented_later(tmp_path: Path) -> None:
    slot = CardSlot(tmp_path, in_process=True)
    threading.Timer(0.2, slot.present, args=("cup-credit",)).start()
    read = _reader(slot).read_card(Purpose.SALE, 100, datetime(2026, 12, 1, 12), "000001")
    assert read.masked_pan == "625000******0012"
    assert read.card.scheme == "CUP"
    assert read.wants_online_pin


def test_cancel_wakes_a_read_waiting_for_a_card(tmp_path: Path) -> None:
    slot = CardSlot(tmp_path, in_process=True)
    reader = _reader(slot)
    threading.Timer(0.2, reader.cancel).start()
    started = time.monotonic()
    with pytest.raises(DeviceError) as caught:
        reader.read_card(Purpose.REFUND, 100, datetime(2026, 12, 1, 12), "000001")
    assert time.monotonic() - started < 5  # not the 10 s timeout
    assert caught.value.cashier_en == "Cancelled"
    # the next read waits again (a cancel is not sticky)
    threading.Timer(0.2, slot.present, args=("cup-debit",)).start()
    assert reader.read_card(Purpose.REFUND, 100, datetime(2026, 12, 1, 12),
                            "000002").masked_pan == "622588******0019"


def test_virtual_reader_refuses_cards_it_cannot_read() -> None:
    with pytest.raises(DeviceError, match="stripe-only"):
        virtual_card_reader("cup-magstripe")
    with pytest.raises(KeyError):
        virtual_card_reader("no-such-card")
