"""EMV dialogue through the real PC/SC stack (pcscd + vpcd + pyscard), traced and replayed.

Each catalogue chip card is read for a refund, contact and contactless, by the
kernel in :mod:`drivers.emv` over :class:`drivers.pcsc.PcscCardTransport`
wrapped in a :class:`drivers.trace.RecordingTransport`. Every test writes its
trace (directory from ``POS_HIL_TRACE_DIR``, default a pytest tmp dir) and
replays it through :class:`drivers.trace.ReplayTransport` in the same test:
the replay must give the same card (masked) and the same F55.

``meta`` lines of each trace hold the transaction, the terminal setting and
the expected outcome, so a trace copied into ``tests/hil/traces/`` becomes a
CI regression test (``tests/drivers/test_replay_traces.py``).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from drivers.emv import (
    CardReadResult,
    CryptogramType,
    TerminalConfig,
    TransactionData,
    TransactionType,
    read_card,
)
from drivers.errors import CardBlockedError, CardRemovedError
from drivers.masking import luhn_valid
from drivers.pcsc import PcscReader
from drivers.trace import RecordingTransport, ReplayTransport, TraceWriter
from emulator.catalogue import CARDS, CardStatus, card_by_name
from emulator.host.security import card_arqc_matches
from iso8583 import tlv
from tests.hil.pcscd import VirtualCardSlot, real_reader

pytestmark = pytest.mark.hil

EVENT_TIMEOUT = 5.0
TRACE_ENV = "POS_HIL_TRACE_DIR"
DATE = dt.date(2026, 11, 23)

CHIP_READS = [pytest.param(c.name, cl, id=f"{c.name}-{'contactless' if cl else 'contact'}")
              for c in CARDS if c.chip for cl in (False, True)
              if (c.contactless if cl else c.contact)]


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    configured = os.environ.get(TRACE_ENV)
    path = Path(configured) if configured else tmp_path / "traces"
    path.mkdir(parents=True, exist_ok=True)
    return path


def refund(un: str = "5A5A0001", amount: int = 8800) -> TransactionData:
    return TransactionData(TransactionType.REFUND, amount, DATE, dt.time(15, 4, 5),
                           unpredictable_number=bytes.fromhex(un), sequence_counter=271)


def expectation(res: CardReadResult) -> dict[str, Any]:
    return {"masked_pan": res.masked_pan, "aid": res.aid.hex().upper(), "expiry": res.expiry,
            "contactless": res.contactless,
            "cryptogram": res.cryptogram.type.value if res.cryptogram else None,
            "f55": res.f55().hex().upper()}


def read_traced(reader: PcscReader, path: Path, txn: TransactionData, config: TerminalConfig,
                **meta: Any) -> CardReadResult:
    """Read the presented card with the kernel, writing the trace; meta + expect lines."""
    with TraceWriter(path) as writer:
        writer.meta(transaction=txn.to_json(), refund_ends_with=config.refund_ends_with,
                    reader=reader.name, **meta)
        reader.wait_for_card(EVENT_TIMEOUT)
        with reader.connect() as transport:
            res = read_card(RecordingTransport(transport, writer, reader=reader.name), txn,
                            config)
        writer.meta(expect=expectation(res))
    return res


def replay_matches(path: Path, live: CardReadResult) -> None:
    replay = ReplayTransport(path)
    txn = TransactionData.from_json(replay.meta["transaction"])
    again = read_card(replay, txn, TerminalConfig(refund_ends_with=replay.meta[
        "refund_ends_with"]))
    replay.assert_finished()
    assert expectation(again) == expectation(live)
    assert again.pan != live.pan  # the trace holds a substitute number ...
    assert luhn_valid(again.pan)  # ... of valid format


# Every card once with the AAC ending; the simple flow (records) on two cards is
# enough, as the ending does not depend on the card (keeps the HIL run short).
REFUND_READS = [pytest.param(*p.values, "aac", id=f"{p.id}-aac") for p in CHIP_READS] + [
    pytest.param(*p.values, "records", id=f"{p.id}-records") for p in CHIP_READS
    if p.values[0] in ("cup-debit", "visa-credit")]


@pytest.mark.parametrize(("name", "contactless", "ending"), REFUND_READS)
def test_refund_read_of_each_card_traced_and_replayed(
        name: str, contactless: bool, ending: str, virtual_card_slot: VirtualCardSlot,
        card_reader: PcscReader, trace_dir: Path) -> None:
    card = card_by_name(name)
    config = TerminalConfig(refund_ends_with=ending)  # type: ignore[arg-type]
    path = trace_dir / f"emv-refund-{ending}-{name}-{'cl' if contactless else 'ct'}.jsonl"
    virtual_card_slot.insert(name, contactless=contactless)
    meta = {"card": name, "recorded_via": "pcscd+vpcd+pyscard (virtual card)"}
    if card.status is CardStatus.BLOCKED:
        with pytest.raises(CardBlockedError):
            read_traced(card_reader, path, refund(), config, **meta)
        with pytest.raises(CardBlockedError):
            read_card(ReplayTransport(path), refund(), config)
        return
    res = read_traced(card_reader, path, refund(), config, **meta)
    assert res.pan == card.pan  # compared, never printed
    assert res.psn == card.psn
    assert res.expiry == card.expiry
    assert res.contactless is contactless
    assert res.tags[0x9C] == b"\x20"
    if ending == "aac":
        assert res.cryptogram is not None
        assert res.cryptogram.type is CryptogramType.AAC
        f55 = tlv.decode_flat(res.f55())
        assert card.psn is not None
        assert card_arqc_matches(card, f55)
    else:
        assert res.cryptogram is None
    assert card.pan not in path.read_text()
    replay_matches(path, res)


def test_sale_through_t0_card_arqc_verifies(virtual_card_slot: VirtualCardSlot,
                                            card_reader: PcscReader, trace_dir: Path) -> None:
    card = card_by_name("cup-credit")
    virtual_card_slot.insert(card.name, t0=True)
    txn = TransactionData(TransactionType.SALE, 12345, DATE, dt.time(8, 0),
                          unpredictable_number=bytes.fromhex("CAFEF00D"), sequence_counter=9)
    path = trace_dir / "emv-sale-t0-cup-credit.jsonl"
    res = read_traced(card_reader, path, txn, TerminalConfig(), card=card.name)
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.ARQC
    f55 = tlv.decode_flat(res.f55())
    assert card.psn is not None
    assert card_arqc_matches(card, f55)
    replay_matches(path, res)


def test_card_removed_mid_read_is_traced(virtual_card_slot: VirtualCardSlot,
                                         card_reader: PcscReader, trace_dir: Path) -> None:
    virtual_card_slot.insert("cup-debit", faults="remove@read_record:2")
    path = trace_dir / "emv-refund-removed-cup-debit.jsonl"
    with pytest.raises(CardRemovedError):
        read_traced(card_reader, path, refund(), TerminalConfig(), card="cup-debit")
    with pytest.raises(CardRemovedError):
        read_card(ReplayTransport(path), refund(), TerminalConfig())
    card_reader.wait_for_removal(EVENT_TIMEOUT)


def test_real_card_refund_read(trace_dir: Path) -> None:
    name = real_reader()
    if name is None:
        pytest.skip("reads a real card: set POS_HIL_READER to a reader name and present a card")
    path = trace_dir / "emv-refund-real-card.jsonl"
    with PcscReader(name) as reader:
        reader.wait_for_card(30)
        res = read_traced(reader, path, refund(), TerminalConfig(refund_ends_with="records"),
                          recorded_via="real reader")
    assert luhn_valid(res.pan), "the PAN read does not pass the Luhn check"
    replay_matches(path, res)
