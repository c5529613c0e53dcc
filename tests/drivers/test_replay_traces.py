"""Regression: every checked-in HIL trace (tests/hil/traces/*.jsonl) replays through the kernel.

The traces were recorded by ``tests/hil/test_hil_emv.py`` through the real
PC/SC stack (or the in-process card, as each trace's ``meta`` line says). Their
``meta`` lines hold the transaction and terminal setting the card was read with
and what the read produced, so this test needs no hardware and always runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.emv import TerminalConfig, TransactionData, read_card
from drivers.masking import luhn_valid, mask_pan
from drivers.trace import ReplayTransport, read_trace

TRACE_DIR = Path(__file__).resolve().parents[1] / "hil" / "traces"
TRACES = sorted(TRACE_DIR.glob("*.jsonl"))


def test_at_least_one_trace_is_checked_in() -> None:
    assert TRACES, f"no recorded trace in {TRACE_DIR}"


@pytest.mark.parametrize("path", TRACES, ids=[p.name for p in TRACES])
def test_trace_replays(path: Path) -> None:
    replay = ReplayTransport(path)
    meta: dict[str, Any] = replay.meta
    txn = TransactionData.from_json(meta["transaction"])
    config = TerminalConfig(refund_ends_with=meta.get("refund_ends_with", "aac"))
    result = read_card(replay, txn, config)
    replay.assert_finished()
    expect = meta["expect"]
    assert result.masked_pan == expect["masked_pan"]
    assert luhn_valid(result.pan)
    assert result.aid.hex().upper() == expect["aid"]
    assert result.expiry == expect["expiry"]
    assert result.contactless is expect["contactless"]
    crypt = result.cryptogram.type.value if result.cryptogram else None
    assert crypt == expect["cryptogram"]
    assert result.f55().hex().upper() == expect["f55"]


@pytest.mark.parametrize("path", TRACES, ids=[p.name for p in TRACES])
def test_trace_holds_no_catalogue_pan(path: Path) -> None:
    from emulator.catalogue import CARDS

    text = path.read_text()
    for card in CARDS:
        assert card.pan not in text, mask_pan(card.pan)
    assert any(line["kind"] == "apdu" for line in read_trace(path))
