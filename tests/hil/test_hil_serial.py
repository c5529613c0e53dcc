"""Hardware-in-the-loop: PIN pad and receipt printer through real ptys (or a real PIN pad).

By default the virtual PIN pad and the virtual printer serve ptys and the
drivers open them exactly as they would open ``/dev/ttyUSB0``. With
``POS_HIL_PINPAD=/dev/ttyUSB0`` (any pyserial URL) the PIN pad tests talk to
that device instead; the tests that need the scripted cardholder or the link
fault knobs skip and say so. Every run writes a serial trace (JSONL, see
:mod:`drivers.trace`; PIN blocks and keys starred, PANs substituted) to
``POS_HIL_TRACE_DIR`` or a temporary directory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.errors import (
    PaperOutError,
    PinEntryCancelledError,
    PinPadError,
    PinPadTimeoutError,
)
from drivers.pinpad import PinPad, PinPadLinkError
from drivers.printer import PaperStatus, ReceiptPrinter
from drivers.trace import TraceWriter
from emulator.pinpad import DEFAULT_BDK, DEFAULT_MASTER_KEY, VirtualPinPad
from emulator.printer import VirtualPrinter
from iso8583.crypto import dukpt
from iso8583.crypto.des import encrypt_ecb
from iso8583.crypto.kcv import tdes_kcv
from iso8583.crypto.pinblock import decrypt_format0

pytestmark = pytest.mark.hil

REAL_PINPAD = os.environ.get("POS_HIL_PINPAD")
PIK = bytes.fromhex("807A23AD32B36D457AE91FDF927570EA")  # CUP sign-on test vector
PAN = "6225880000000019"
ACK_TIMEOUT = 0.5  # wide margins: the CI machine is shared and threads can stall


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraceWriter]:
    directory = os.environ.get("POS_HIL_TRACE_DIR")
    base = Path(directory) if directory else tmp_path_factory.mktemp("hil-trace")
    path = base / f"serial-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    with TraceWriter(path) as writer:
        writer.meta(suite="hil-serial", pinpad=REAL_PINPAD or "virtual")
        yield writer


@dataclass
class Rig:
    """The PIN pad under test: the client, and the virtual pad when there is one."""

    client: PinPad
    virtual: VirtualPinPad | None

    def scripted(self) -> VirtualPinPad:
        if self.virtual is None:
            pytest.skip("needs the scripted cardholder / fault knobs of the virtual PIN pad; "
                        f"POS_HIL_PINPAD={REAL_PINPAD} is a real pad")
        return self.virtual


@pytest.fixture
def rig(trace: TraceWriter) -> Iterator[Rig]:
    if REAL_PINPAD:
        with PinPad.open(REAL_PINPAD, ack_timeout=ACK_TIMEOUT, trace=trace) as client:
            yield Rig(client, None)
        return
    with VirtualPinPad(ack_timeout=ACK_TIMEOUT) as pad, \
            PinPad.open(pad.path, ack_timeout=ACK_TIMEOUT, answer_timeout=1.0,
                        trace=trace) as client:
        yield Rig(client, pad)


def load_session_key(client: PinPad) -> None:
    client.load_working_key(encrypt_ecb(DEFAULT_MASTER_KEY, PIK), tdes_kcv(PIK, 4))


# --- PIN pad ---------------------------------------------------------------------------------
def test_status_round_trip(rig: Rig) -> None:
    status = rig.client.status("HIL")
    assert status.echo == "HIL"
    assert status.state in ("IDLE", "PIN")


def test_pin_entry_block_decrypts_to_the_scripted_pin(rig: Rig, trace: TraceWriter) -> None:
    pad = rig.scripted()
    load_session_key(rig.client)
    rig.client.display("请输入密码", "ENTER PIN")
    pad.cardholder.enter_pin("123456", delay=0.05)
    result = rig.client.get_pin_block(PAN, 12_34, 10)
    assert decrypt_format0(PIK, result.pin_block, PAN) == "123456"
    assert trace.path is not None
    text = trace.path.read_text()
    assert result.pin_block.hex().upper() not in text
    assert PAN not in text
    assert '"kind":"serial"' in text


def test_dukpt_pin_entry(rig: Rig) -> None:
    pad = rig.scripted()
    pad.cardholder.enter_pin("4315")
    result = rig.client.get_pin_block(PAN, None, 10, dukpt=True)
    assert result.ksn is not None
    assert decrypt_format0(dukpt.host_pin_key(DEFAULT_BDK, result.ksn), result.pin_block,
                           PAN) == "4315"


def test_pin_cancel_by_cardholder(rig: Rig) -> None:
    pad = rig.scripted()
    load_session_key(rig.client)
    pad.cardholder.press_cancel(delay=0.1)
    with pytest.raises(PinEntryCancelledError):
        rig.client.get_pin_block(PAN, 500, 10)


def test_pin_cancel_by_terminal(rig: Rig) -> None:
    pad = rig.scripted()
    load_session_key(rig.client)
    pad.cardholder.walk_away()
    timer = threading.Timer(0.2, rig.client.cancel)
    timer.start()
    with pytest.raises(PinEntryCancelledError):
        rig.client.get_pin_block(PAN, 500, 10)
    timer.join()


def test_pin_pad_timeout(rig: Rig) -> None:
    pad = rig.scripted()
    load_session_key(rig.client)
    pad.cardholder.walk_away()
    with pytest.raises(PinPadTimeoutError):
        rig.client.get_pin_block(PAN, 500, 1)
    assert rig.client.status().state == "IDLE"


# --- link faults -------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["bad-lrc-1", "bad-lrc-1-2", "drop-byte-1", "nak-2",
                                   "late-ack", "spurious-eot"])
def test_link_faults_are_recovered_by_retry(rig: Rig, fault: str) -> None:
    pad = rig.scripted()
    load_session_key(rig.client)
    f = pad.faults
    if fault == "bad-lrc-1":
        f.bad_lrc_on = {1}
    elif fault == "bad-lrc-1-2":
        f.bad_lrc_on = {1, 2}
    elif fault == "drop-byte-1":
        f.drop_byte_on = {1}
    elif fault == "nak-2":
        f.nak_next = 2
    elif fault == "late-ack":
        f.ack_delay = ACK_TIMEOUT * 1.5  # the terminal resends; the pad must not run it twice
    else:
        f.spurious_eot = 1
    pad.wake()
    entries_before = pad.device.pin_entries
    sent_before = pad.link.frames_sent
    link = rig.client.link
    retries_before, eots_before = link.retries, link.eot_count
    pad.cardholder.enter_pin("111111")
    result = rig.client.get_pin_block(PAN, 100, 10)
    assert decrypt_format0(PIK, result.pin_block, PAN) == "111111"
    assert pad.device.pin_entries == entries_before + 1
    # The fault really happened: the pad resent its answer, or the terminal its
    # request ("at least": a stalled thread on a busy machine may add a resend).
    pad_frames = pad.link.frames_sent - sent_before
    # late-ack: the resent request gets the cached answer again (never a second PIN entry)
    expected_pad_frames = {"bad-lrc-1": 2, "bad-lrc-1-2": 3, "drop-byte-1": 2,
                           "late-ack": 2}.get(fault, 1)
    assert pad_frames >= expected_pad_frames
    if fault in ("nak-2", "late-ack"):
        assert link.retries - retries_before >= (2 if fault == "nak-2" else 1)
    if fault == "spurious-eot":
        assert link.eot_count == eots_before + 1
    f.clear()
    assert rig.client.status().state == "IDLE"


def test_three_naks_fail_cleanly_then_the_link_works_again(rig: Rig) -> None:
    pad = rig.scripted()
    pad.faults.nak_next = 3
    with pytest.raises(PinPadLinkError, match="3 attempts"):
        rig.client.status()
    assert pad.faults.nak_next == 0
    assert rig.client.status().model == "VPP-100"


def test_pad_answer_failing_three_times_ends_in_eot_and_no_answer(rig: Rig) -> None:
    pad = rig.scripted()
    pad.faults.bad_lrc_on = {1, 2, 3}
    with pytest.raises(PinPadError, match="no answer"):
        rig.client.status()
    assert pad.link.send_failures == 1
    pad.faults.clear()
    assert rig.client.status().state == "IDLE"


def test_silent_pad_fails_cleanly(rig: Rig) -> None:
    pad = rig.scripted()
    pad.faults.silent = True
    with pytest.raises(PinPadLinkError):
        rig.client.status()


# --- printer ------------------------------------------------------------------------------------
@pytest.fixture
def printer() -> Iterator[VirtualPrinter]:
    with VirtualPrinter() as vp:
        yield vp


def test_printer_out_of_paper(printer: VirtualPrinter) -> None:
    printer.paper_out = True
    with ReceiptPrinter.open(printer.path) as p:
        assert p.paper_status() is PaperStatus.OUT
        with pytest.raises(PaperOutError):
            p.print_receipt(["退货 REFUND"])
    assert printer.receipts == []


def test_receipt_text_round_trip_in_chinese(printer: VirtualPrinter) -> None:
    lines = ["商户名称: 测试商户", "终端号: 12345678", "卡号: 622588******0019",
             "交易类型: 退货 REFUND", "金额: RMB 12.34", "持卡人签名:"]
    with ReceiptPrinter.open(printer.path) as p:
        p.print_receipt(lines, title="签购单")
    [receipt] = printer.wait_for_receipts(1)
    printed = receipt.splitlines()
    assert printed[0].strip() == "签购单"
    assert printed[1:] == lines
