"""Tests of the virtual pad's command handling, keys and scripted cardholder (no I/O)."""

from __future__ import annotations

import pytest

from emulator.pinpad import DEFAULT_MASTER_KEY, Cardholder, EnterPin, PinPadDevice
from iso8583.crypto.des import encrypt_ecb
from iso8583.crypto.kcv import tdes_kcv
from iso8583.crypto.pinblock import decrypt_format0

PIK = bytes.fromhex("807A23AD32B36D457AE91FDF927570EA")
PAN = "6225880000000019"


def loaded(cardholder: Cardholder | None = None) -> PinPadDevice:
    dev = PinPadDevice(cardholder=cardholder)
    enc = encrypt_ecb(DEFAULT_MASTER_KEY, PIK).hex().upper()
    assert dev.handle(f"LK01{enc}|{tdes_kcv(PIK, 4).hex()}".encode(), 0.0) == [b"LK0100"]
    return dev


def pn(seq: int, timeout: int = 30, min_len: int = 4) -> bytes:
    return f"PN{seq:02d}M|{PAN}|{min_len}|12|{timeout}|1234".encode()


def test_unknown_and_malformed_requests() -> None:
    dev = PinPadDevice()
    assert dev.handle(b"ZZ01", 0.0) == [b"ZZ0101"]
    assert dev.handle(b"PN02M|123", 0.0) == [b"PN0202"]
    assert dev.handle(b"LK03XYZ|00", 0.0) == [b"LK0302"]
    assert dev.handle(b"DT04ZZ", 0.0) == [b"DT0402"]
    assert dev.handle(b"LK05" + b"00" * 16 + b"|0000|X", 0.0) == [b"LK0502"]  # no such key type
    assert dev.handle(b"LK06" + b"00" * 8 + b"|0000|A", 0.0) == [b"LK0602"]  # 8 bytes: not AES
    assert dev.handle(b"E", 0.0) == []


def test_kcv_mismatch_keeps_no_key() -> None:
    dev = PinPadDevice()
    enc = encrypt_ecb(DEFAULT_MASTER_KEY, PIK).hex()
    assert dev.handle(f"LK01{enc}|00000000".encode(), 0.0) == [b"LK0121"]
    assert dev.session_pik is None
    assert dev.handle(pn(2), 0.0) == [b"PN0220"]


def test_pin_entered_after_delay() -> None:
    ch = Cardholder()
    dev = loaded(ch)
    ch.enter_pin("4321", delay=2.0)
    assert dev.handle(pn(5), 10.0) == []
    assert dev.busy
    assert dev.display_lines[0] == "金额 12.34"
    assert dev.next_deadline() == 12.0
    assert dev.poll(11.9) == []
    [answer] = dev.poll(12.0)
    assert answer[:6] == b"PN0500"
    assert decrypt_format0(PIK, bytes.fromhex(answer[6:].decode()), PAN) == "4321"
    assert not dev.busy


def test_digits_typed_one_by_one_show_as_stars() -> None:
    ch = Cardholder()
    dev = loaded(ch)
    ch.enter_pin("1234", delay=1.0, per_digit=0.5)
    assert dev.handle(pn(3), 0.0) == []
    assert dev.next_deadline() == 1.5
    assert dev.poll(1.5) == []
    assert dev.display_lines[1] == "*"
    assert dev.poll(2.6) == []
    assert dev.display_lines[1] == "***"
    assert dev.next_deadline() == 3.0
    [answer] = dev.poll(3.0)
    assert decrypt_format0(PIK, bytes.fromhex(answer[6:].decode()), PAN) == "1234"


def test_pin_queued_while_waiting_is_taken() -> None:
    ch = Cardholder()
    dev = loaded(ch)
    assert dev.handle(pn(1), 0.0) == []
    assert dev.poll(1.0) == []
    ch.enter_pin("1234")
    assert dev.poll(1.1)[0][:6] == b"PN0100"


def test_duplicate_request_is_not_executed_twice() -> None:
    ch = Cardholder(default=EnterPin("1234"))
    dev = loaded(ch)
    [first] = dev.handle(pn(7), 0.0)
    assert dev.handle(pn(7), 0.5) == [first]  # resent request: same answer, one PIN entry
    assert dev.pin_entries == 1


def test_duplicate_of_running_entry_is_ignored() -> None:
    ch = Cardholder()
    dev = loaded(ch)
    assert dev.handle(pn(8), 0.0) == []
    assert dev.handle(pn(8), 0.3) == []
    assert dev.pin_entries == 1


def test_busy_during_pin_entry_and_cancel() -> None:
    ch = Cardholder()
    dev = loaded(ch)
    dev.handle(pn(1), 0.0)
    assert dev.handle(b"DT02", 0.1) == [b"DT0203"]
    assert dev.handle(b"EC03", 0.1)[0].startswith(b"EC0300VPP-100|PIN")
    assert dev.handle(b"CN04", 0.2) == [b"PN0112", b"CN0400"]
    assert not dev.busy


@pytest.mark.parametrize(("action", "rc"), [("cancel", b"10"), ("walk", b"11"), ("short", b"11")])
def test_cardholder_outcomes(action: str, rc: bytes) -> None:
    ch = Cardholder()
    dev = loaded(ch)
    if action == "cancel":
        ch.press_cancel(delay=1.0)
    elif action == "walk":
        ch.walk_away()
    else:
        ch.enter_pin("12")  # shorter than min 4: Enter is ignored, the entry times out
    dev.handle(pn(9, timeout=5), 0.0)
    answers = dev.poll(1.0) + dev.poll(5.0)
    assert answers == [b"PN09" + rc]


def test_bad_cardholder_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="digits"):
        EnterPin("12a4")
    with pytest.raises(ValueError, match="negative"):
        EnterPin("1234", delay=-1)
