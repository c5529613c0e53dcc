"""Card reading through the real PC/SC stack: pcscd + vpcd + pyscard + drivers.pcsc.

Every catalogue chip card is read at the APDU level on every interface it has
(SELECT PSE/PPSE, the directory, SELECT AID, GPO, READ RECORD per AFL); then
removal mid-read, insert/remove events with timeouts, T=0 chaining through the
reader, and recovery after pcscd restarts. With ``POS_HIL_READER`` set only the
test that reads whatever real card is presented runs; the rest need virtual
cards and skip with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from drivers.errors import CardRemovedError, CardTimeoutError, ReaderError
from drivers.pcsc import PcscCardTransport, PcscReader, list_readers
from drivers.transport import CardTransport
from emulator.card.app import contact_atr, contactless_atr
from emulator.card.pcscd_harness import PcscdHarness
from emulator.catalogue import CARDS, CardStatus, card_by_name
from iso8583 import tlv
from tests.hil.pcscd import VirtualCardSlot, real_reader

pytestmark = pytest.mark.hil

PSE = b"1PAY.SYS.DDF01"
PPSE = b"2PAY.SYS.DDF01"
EVENT_TIMEOUT = 5.0  # pcscd polls about every 400 ms; this is generous

TERMINAL_PDOL_VALUES = {
    0x9F02: bytes.fromhex("000000000100"), 0x9F1A: bytes.fromhex("0156"),
    0x5F2A: bytes.fromhex("0156"), 0x9A: bytes.fromhex("261123"), 0x9C: b"\x20",
    0x9F37: bytes.fromhex("01020304"), 0x9F66: bytes.fromhex("26000000"),
}


def select(name: bytes, p2: int = 0) -> bytes:
    return bytes([0x00, 0xA4, 0x04, p2, len(name)]) + name + b"\x00"


def read_record(sfi: int, number: int) -> bytes:
    return bytes([0x00, 0xB2, number, sfi << 3 | 4, 0x00])


def candidate_aids(t: CardTransport) -> list[bytes]:
    """AIDs from the PPSE (contactless) or the PSE directory records (contact)."""
    data, sw = t.transmit(select(PPSE if t.contactless else PSE))
    assert sw == 0x9000, f"directory SELECT answered {sw:04X}"
    if t.contactless:
        return [i.value for i in tlv.iter_primitives(tlv.decode(data)) if i.tag == 0x4F]
    sfi = tlv.decode_flat(data)[0x88][0]
    aids: list[bytes] = []
    for number in range(1, 11):
        record, sw = t.transmit(read_record(sfi, number))
        if sw == 0x6A83:
            break
        assert sw == 0x9000
        aids += [i.value for i in tlv.iter_primitives(tlv.decode(record)) if i.tag == 0x4F]
    return aids


def read_application(t: CardTransport) -> tuple[int, dict[int, bytes]]:
    """Select the first AID and read its records; (SELECT SW, tags read)."""
    aids = candidate_aids(t)
    assert aids
    fci, sw = t.transmit(select(aids[0]))
    if sw != 0x9000:
        return sw, {}
    pdol = tlv.decode_flat(fci).get(0x9F38, b"")
    pdol_data = tlv.build_dol_data(tlv.decode_dol(pdol), TERMINAL_PDOL_VALUES)
    gpo = bytes([0x80, 0xA8, 0x00, 0x00, len(pdol_data) + 2, 0x83, len(pdol_data)]) \
        + pdol_data + b"\x00"
    answer, sw = t.transmit(gpo)
    assert sw == 0x9000, f"GPO answered {sw:04X}"
    afl = tlv.decode_flat(answer)[0x94]
    tags: dict[int, bytes] = {}
    for i in range(0, len(afl), 4):
        for number in range(afl[i + 1], afl[i + 2] + 1):
            record, sw = t.transmit(read_record(afl[i] >> 3, number))
            assert sw == 0x9000, f"READ RECORD answered {sw:04X}"
            tags.update(tlv.decode_flat(record))
    return 0x9000, tags


def connect(reader: PcscReader) -> PcscCardTransport:
    reader.wait_for_card(EVENT_TIMEOUT)
    return reader.connect()


CHIP_READS = [pytest.param(c.name, cl, id=f"{c.name}-{'contactless' if cl else 'contact'}")
              for c in CARDS if c.chip for cl in (False, True)
              if (c.contactless if cl else c.contact)]


@pytest.mark.parametrize(("name", "contactless"), CHIP_READS)
def test_read_catalogue_card(name: str, contactless: bool, virtual_card_slot: VirtualCardSlot,
                             card_reader: PcscReader) -> None:
    card = card_by_name(name)
    virtual_card_slot.insert(name, contactless=contactless)
    with connect(card_reader) as t:
        assert t.contactless is contactless
        assert t.atr == (contactless_atr() if contactless else contact_atr())
        sw, tags = read_application(t)
        if card.status is CardStatus.BLOCKED:
            assert sw == 0x6283
            return
        assert sw == 0x9000
        pan = tags[0x5A].hex().upper().rstrip("F")
        assert pan == card.pan, "PAN read differs from the catalogue"  # compared, never printed
        assert tags[0x5F34].hex() == card.psn
        assert tags[0x57].hex().upper().rstrip("F").startswith(card.pan + "D" + card.expiry)


def test_reader_list_has_both_vpcd_slots(pcscd_harness: PcscdHarness | None,
                                         pcsc_reader: str) -> None:
    if pcscd_harness is None:
        pytest.skip("checks the private pcscd's vpcd readers")
    assert list_readers() == [pcscd_harness.reader_name(0), pcscd_harness.reader_name(1)]


def test_t0_card_chaining_is_transparent(virtual_card_slot: VirtualCardSlot,
                                         card_reader: PcscReader) -> None:
    virtual_card_slot.insert("cup-credit", t0=True)
    with connect(card_reader) as t:
        assert t.protocol == "T=0"
        sw, tags = read_application(t)
        assert sw == 0x9000
        assert tags[0x5A].hex().upper().rstrip("F") == card_by_name("cup-credit").pan
        data, sw = t.transmit(bytes.fromhex("80CA9F3600"))  # wrong Le: 6C02, then resent
        assert (data, sw) == (bytes.fromhex("9F36020000"), 0x9000)


def test_card_removed_mid_read_by_fault(virtual_card_slot: VirtualCardSlot,
                                        card_reader: PcscReader) -> None:
    virtual_card_slot.insert("cup-debit", faults="remove@read_record:2")
    with connect(card_reader) as t, pytest.raises(CardRemovedError) as err:
        read_application(t)
    assert err.value.cashier_en == "Card removed too early"
    card_reader.wait_for_removal(EVENT_TIMEOUT)


def test_card_pulled_between_commands(virtual_card_slot: VirtualCardSlot,
                                      card_reader: PcscReader) -> None:
    virtual_card_slot.insert("visa-credit", contactless=True)
    with connect(card_reader) as t:
        assert candidate_aids(t) == [bytes.fromhex("A0000000031010")]
        virtual_card_slot.remove()
        card_reader.wait_for_removal(EVENT_TIMEOUT)
        with pytest.raises(CardRemovedError):
            t.transmit(select(bytes.fromhex("A0000000031010")))


def test_insert_and_remove_events_with_timeouts(virtual_card_slot: VirtualCardSlot,
                                                card_reader: PcscReader) -> None:
    assert not card_reader.card_present()
    with pytest.raises(CardTimeoutError):
        card_reader.wait_for_card(0.5)
    virtual_card_slot.insert("mastercard")
    assert card_reader.wait_for_card(EVENT_TIMEOUT) == contact_atr()
    assert card_reader.card_present()
    with pytest.raises(CardTimeoutError):
        card_reader.wait_for_removal(0.5)
    virtual_card_slot.remove()
    card_reader.wait_for_removal(EVENT_TIMEOUT)
    virtual_card_slot.reinsert()
    card_reader.wait_for_card(EVENT_TIMEOUT)


def test_second_slot_is_independent(virtual_card_slot_1: VirtualCardSlot,
                                    card_reader: PcscReader) -> None:
    virtual_card_slot_1.insert("cup-nopin")
    with PcscReader("00 01") as second:
        with connect(second) as t:
            assert read_application(t)[1][0x5A].hex().upper().rstrip("F") == \
                card_by_name("cup-nopin").pan
        assert not card_reader.card_present()  # slot 0 stayed empty


def test_pcscd_restart_recovery(pcscd_harness: PcscdHarness | None,
                                virtual_card_slot: VirtualCardSlot,
                                card_reader: PcscReader) -> None:
    assert pcscd_harness is not None
    virtual_card_slot.insert("cup-debit")
    with connect(card_reader) as t:
        assert read_application(t)[0] == 0x9000
        pcscd_harness.restart()
        with pytest.raises(ReaderError) as err:
            t.transmit(select(PSE))
        assert "restarted" in err.value.message or isinstance(err.value, CardRemovedError)
    # The same reader object recovers: new context, the card (still inserted) is seen again.
    with connect(card_reader) as t:
        assert read_application(t)[0] == 0x9000
    assert card_reader.readers() == [pcscd_harness.reader_name(0), pcscd_harness.reader_name(1)]


def test_wait_spans_a_pcscd_restart(pcscd_harness: PcscdHarness | None,
                                    virtual_card_slot: VirtualCardSlot,
                                    card_reader: PcscReader) -> None:
    assert pcscd_harness is not None
    assert not card_reader.card_present()
    pcscd_harness.stop()
    with pytest.raises(ReaderError) as err:
        card_reader.readers()
    assert err.value.cashier_en == "Card reader service not running"
    with pytest.raises(ReaderError) as err:
        card_reader.wait_for_card(0.3)  # keeps trying until the deadline, then says why
    assert err.value.cashier_en == "Card reader service not running"
    pcscd_harness.start()
    virtual_card_slot.insert("cup-low-funds")
    assert card_reader.wait_for_card(EVENT_TIMEOUT) == contact_atr()


def test_cancel_wakes_a_waiting_reader(virtual_card_slot: VirtualCardSlot,
                                       card_reader: PcscReader) -> None:
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            card_reader.wait_for_card(30)
        except ReaderError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    # Cancel as soon as the waiter is blocked inside pcscd; SCardCancel before that
    # would be lost, so repeat until the thread ends (each call is a no-op otherwise).
    while waiter.is_alive():
        card_reader.cancel()
        waiter.join(0.05)
    assert len(outcome) == 1
    assert isinstance(outcome[0], CardTimeoutError)
    assert "cancelled" in str(outcome[0])


def test_card_cli_serves_through_pcscd(pcscd_harness: PcscdHarness | None,
                                       virtual_card_slot_1: VirtualCardSlot) -> None:
    """``pos-emulator card`` in its own process, read through pcscd in slot 1."""
    assert pcscd_harness is not None
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.card.cli", "--slot", "1", "--card", "cup-credit",
         "--contactless", "--vpcd-port", str(pcscd_harness.port(0))],
        cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)}, text=True)
    try:
        with PcscReader(pcscd_harness.reader_name(1)) as reader:
            with connect(reader) as t:
                assert t.contactless
                sw, tags = read_application(t)
                assert sw == 0x9000
                assert tags[0x5A].hex().upper().rstrip("F") == card_by_name("cup-credit").pan
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
            reader.wait_for_removal(EVENT_TIMEOUT)  # stopping the CLI takes the card out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "625000******0012" in out
    assert card_by_name("cup-credit").pan not in out + err


def test_real_card_is_read() -> None:
    name = real_reader()
    if name is None:
        pytest.skip("reads a real card: set POS_HIL_READER to a reader name and present a card")
    with PcscReader(name) as reader:
        reader.wait_for_card(30)
        with reader.connect() as t:
            sw, tags = read_application(t)
    assert sw == 0x9000
    pan = tags[0x5A].hex().upper().rstrip("F")
    digits = [int(d) for d in reversed(pan)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    assert total % 10 == 0, "the PAN read does not pass the Luhn check"
