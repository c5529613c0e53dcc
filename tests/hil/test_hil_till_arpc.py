"""HIL: the real till completes chip sales through pcscd + vpcd against the real host server.

A virtual card of each scheme sits in a vpcd slot of the private pcscd and is read
with pyscard; the acquirer emulator answers over TCP with the ARPC of the card's
CVN; the till keeps the card in the reader across the exchange and runs the second
GENERATE AC. With the ``corrupt-arpc`` fault the host approves but the card
declines (AAC), and the till reverses the sale (issue 11's acceptance).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.pcsc import PcscReader
from drivers.transport import CardTransport
from emulator.catalogue import card_by_name
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from iso8583.trace import TERMINAL_TO_HOST, parse_trace
from terminal.core.config import TerminalSettings, init_terminal
from terminal.core.devices import EmvCardReader
from terminal.core.journal import Journal
from terminal.core.ports import Purpose
from terminal.core.records import TxnStatus
from terminal.core.till import CardEnding, Outcome, Till
from terminal.demo_world import TPDU, HostThread
from terminal.hostlink import IsoTraceFile, TcpHostLink
from tests.hil.pcscd import VirtualCardSlot
from tests.terminal.core.harness import VirtualPinEntry

pytestmark = pytest.mark.hil

EVENT_TIMEOUT = 5.0
TRACE_ENV = "POS_HIL_TRACE_DIR"  # keep the ISO 8583 traces there (default: a pytest tmp dir)


def iso_trace_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    directory = Path(os.environ.get(TRACE_ENV) or tmp_path)
    return directory / f"iso-{request.node.name}.jsonl"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostThread]:
    """The acquirer emulator's TCP server with a ledger of its own (one per till journal)."""
    thread = HostThread(tmp_path / "ledger.db")
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def till(host: HostThread, pcsc_reader: str, tmp_path: Path,
         request: pytest.FixtureRequest) -> Iterator[tuple[Till, VirtualPinEntry]]:
    journal = Journal.open(tmp_path / "terminal")
    init_terminal(journal, TerminalSettings(tid=DEMO_TID, mid=DEMO_MID), DEMO_TMK)
    journal.close()
    reader = PcscReader(pcsc_reader)

    @contextlib.contextmanager
    def source(timeout: float) -> Iterator[CardTransport]:
        reader.wait_for_card(min(timeout, EVENT_TIMEOUT))
        transport = reader.connect()
        try:
            yield transport
        finally:
            transport.close()

    dialect = host.dialect
    trace = IsoTraceFile(iso_trace_path(tmp_path, request), dialect, append=False)
    link = TcpHostLink(dialect, "127.0.0.1", host.port, timeout=3.0, tpdu=TPDU, trace=trace)
    pad = VirtualPinEntry(DEMO_TMK)
    till = Till.open(tmp_path / "terminal", link=link, pinpad=pad, reader=EmvCardReader(
        source, description=f"PC/SC {pcsc_reader}", f55_tags=dialect.settings.f55_tags))
    try:
        till.sign_on()
        yield till, pad
    finally:
        host.faults.clear()
        till.close()
        reader.close()


def sale(till: Till, pad: VirtualPinEntry, slot: VirtualCardSlot, name: str, amount: int, *,
         remove_after_read: bool = False) -> Outcome:
    slot.insert(name)
    pad.pin = card_by_name(name).pin
    read = till.read_card(Purpose.SALE, amount)
    assert read.cryptogram_type == "ARQC"
    assert read.held is not None  # contact chip: the card stays for the second GENERATE AC
    if remove_after_read:
        slot.remove()
    return till.sale(amount, read)


def host_row_status(host: HostThread, outcome: Outcome) -> str:
    record = outcome.record
    row = host.host.transaction((DEMO_TID, record.batch, record.stan, record.mti))
    assert row is not None
    return row.status


@pytest.mark.parametrize("name", ["cup-debit", "visa-credit", "mastercard"])
def test_chip_sale_with_arpc_ends_with_a_tc(name: str, host: HostThread,
                                            till: tuple[Till, VirtualPinEntry],
                                            virtual_card_slot: VirtualCardSlot) -> None:
    out = sale(*till, virtual_card_slot, name, 42_00)
    assert out.status is TxnStatus.APPROVED
    assert out.record.cryptogram_type == "TC"
    assert host_row_status(host, out) == "approved"


def test_a_corrupted_arpc_ends_with_an_aac_and_a_reversal(
        host: HostThread, till: tuple[Till, VirtualPinEntry],
        virtual_card_slot: VirtualCardSlot, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    host.faults.add("corrupt-arpc@card=visa-credit,once")
    out = sale(*till, virtual_card_slot, "visa-credit", 43_00)
    assert out.status is TxnStatus.REVERSED
    assert out.card_refused is CardEnding.DECLINED
    assert out.record.response_code == "00"
    assert out.record.cryptogram_type == "AAC"
    assert host_row_status(host, out) == "reversed"
    assert till[0].journal.open_count() == 0
    assert host.faults.describe() == [{"spec": "corrupt-arpc@card=visa-credit,once",
                                       "fired": 1, "armed": False}]
    # the ISO conversation says the same: the approved sale, then its reversal (F39 06)
    trace = parse_trace(iso_trace_path(tmp_path, request).read_text())
    sent = [e.message() for e in trace if e.direction == TERMINAL_TO_HOST]
    assert [m.mti if m is not None else None for m in sent][-2:] == ["0200", "0400"]
    reversal = sent[-1]
    assert reversal is not None
    assert (reversal.get(39), reversal.get(4)) == ("06", f"{43_00:012d}")


def test_a_card_pulled_out_before_the_second_generate_ac_is_reversed(
        host: HostThread, till: tuple[Till, VirtualPinEntry],
        virtual_card_slot: VirtualCardSlot) -> None:
    out = sale(*till, virtual_card_slot, "mastercard", 44_00, remove_after_read=True)
    assert out.status is TxnStatus.REVERSED
    assert out.card_refused is CardEnding.REMOVED
    assert host_row_status(host, out) == "reversed"
