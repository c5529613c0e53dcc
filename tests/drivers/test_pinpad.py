"""Tests of the PIN pad client: command codec, redaction, and the client against the virtual pad."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import (
    PinEntryCancelledError,
    PinPadError,
    PinPadTimeoutError,
    SerialLinkError,
)
from drivers.pinpad import (
    KeyCheckValueError,
    NoPinKeyError,
    PinBlockResult,
    PinPad,
    PinPadLinkError,
    PinPadProtocolError,
    Request,
    Response,
    decode_request,
    decode_response,
    decode_text,
    encode_text,
    redact_payload,
)
from drivers.serial_link import check_payload
from emulator.pinpad import DEFAULT_BDK, DEFAULT_MASTER_KEY, VirtualPinPad
from iso8583.crypto import dukpt
from iso8583.crypto.des import encrypt_ecb
from iso8583.crypto.kcv import aes_kcv, tdes_kcv
from iso8583.crypto.pinblock import decrypt_format0, decrypt_format4

PIK = bytes.fromhex("807A23AD32B36D457AE91FDF927570EA")
PAN = "6225880000000019"

fields_st = st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                           exclude_characters="|"), max_size=20), max_size=6)
cmd_st = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)


@given(cmd_st, st.integers(0, 99), fields_st)
def test_request_round_trip(cmd: str, seq: int, fields: list[str]) -> None:
    req = Request(cmd, seq, tuple(fields))
    payload = req.encode()
    check_payload(payload)  # always obeys the link's payload rule
    back = decode_request(payload)
    assert (back.cmd, back.seq) == (cmd, seq)
    # an empty single field and no fields encode alike
    assert "|".join(back.fields) == "|".join(fields)


@given(cmd_st, st.integers(0, 99), st.sampled_from(["00", "10", "11", "21"]), fields_st)
def test_response_round_trip(cmd: str, seq: int, rc: str, fields: list[str]) -> None:
    back = decode_response(Response(cmd, seq, rc, tuple(fields)).encode())
    assert (back.cmd, back.seq, back.rc) == (cmd, seq, rc)
    assert "|".join(back.fields) == "|".join(fields)


@given(st.binary(max_size=40))
def test_decoding_random_payloads_gives_only_typed_errors(blob: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(PinPadProtocolError):
            decode(blob)


@given(st.text(max_size=20).filter(lambda t: len(t.encode("gb18030")) <= 64))
def test_display_text_round_trip(text: str) -> None:
    assert decode_text(encode_text(text)) == text


def test_chinese_display_text_is_gb18030() -> None:
    assert encode_text("请输入") == "请输入".encode("gb18030").hex().upper()


def test_bad_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="field"):
        Request("DT", 1, ("a|b",)).encode()
    with pytest.raises(ValueError, match="command"):
        Request("dt", 1).encode()


def test_redaction_hides_keys_pan_and_pin_block() -> None:
    lk = Request("LK", 3, ("00112233445566778899AABBCCDDEEFF", "8D0A74B8")).encode()
    pn_req = Request("PN", 4, ("M", PAN, "4", "12", "30", "1234")).encode()
    pn_resp = Response("PN", 4, "00", ("0123456789ABCDEF",)).encode()
    for payload, secret in ((lk, b"00112233"), (pn_req, PAN.encode()),
                            (pn_resp, b"0123456789ABCDEF")):
        shown = redact_payload(payload)
        assert secret not in shown
        assert shown[:4] == payload[:4]
        assert len(shown) == len(payload)
    echo = Request("EC", 1, ("hello",)).encode()
    assert redact_payload(echo) == echo


def test_pin_block_result_repr_hides_block() -> None:
    r = PinBlockResult(bytes.fromhex("0123456789ABCDEF"), bytes(10), "D")
    assert "0123" not in repr(r)
    assert "01 23" not in str(r)


# --- client against the virtual pad over a pty ------------------------------------------
@pytest.fixture
def pad() -> Iterator[VirtualPinPad]:
    with VirtualPinPad(ack_timeout=0.2) as p:
        yield p


@pytest.fixture
def client(pad: VirtualPinPad) -> Iterator[PinPad]:
    with PinPad.open(pad.path, ack_timeout=0.2, answer_timeout=1.0) as c:
        yield c


def _load_pik(client: PinPad) -> None:
    client.load_working_key(encrypt_ecb(DEFAULT_MASTER_KEY, PIK), tdes_kcv(PIK, 4))


def test_status_and_display(pad: VirtualPinPad, client: PinPad) -> None:
    st_ = client.status("ping")
    assert (st_.model, st_.state, st_.keys, st_.echo) == ("VPP-100", "IDLE", "D", "ping")
    client.display("请插卡", "INSERT CARD")
    assert pad.device.display_lines == ("请插卡", "INSERT CARD")


def test_pin_block_decrypts_to_the_scripted_pin(pad: VirtualPinPad, client: PinPad) -> None:
    _load_pik(client)
    assert client.status().keys == "MD"
    pad.cardholder.enter_pin("123456")
    result = client.get_pin_block(PAN, 1234, 5)
    assert result.ksn is None
    assert decrypt_format0(PIK, result.pin_block, PAN) == "123456"


def test_dukpt_pin_block_decrypts_with_the_host_key(pad: VirtualPinPad, client: PinPad) -> None:
    ksns: list[bytes] = []
    for pin in ("1234", "987654"):
        pad.cardholder.enter_pin(pin)
        result = client.get_pin_block(PAN, None, 5, dukpt=True)
        assert result.ksn is not None
        assert decrypt_format0(dukpt.host_pin_key(DEFAULT_BDK, result.ksn),
                               result.pin_block, PAN) == pin
        ksns.append(result.ksn)
    assert [dukpt.ksn_counter(k) for k in ksns] == [1, 2]


def test_no_secret_reaches_the_log(pad: VirtualPinPad, client: PinPad,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _load_pik(client)
    pad.cardholder.enter_pin("123456")
    result = client.get_pin_block(PAN, 100, 5)
    logged = caplog.text + repr(result)
    assert "PIN entry for 622588******0019" in caplog.text
    assert PAN not in logged
    assert result.pin_block.hex().upper() not in logged.upper()
    assert encrypt_ecb(DEFAULT_MASTER_KEY, PIK).hex().upper() not in logged.upper()


def test_pad_gone_is_a_link_error(pad: VirtualPinPad, client: PinPad) -> None:
    assert client.status().model == "VPP-100"
    pad.stop()

    def poll_status() -> None:
        for _ in range(20):  # the reader thread notices the dead pty within a read or two
            client.status()
            time.sleep(0.05)

    with pytest.raises(PinPadLinkError):
        poll_status()


def test_wrong_check_value_is_refused(client: PinPad) -> None:
    with pytest.raises(KeyCheckValueError):
        client.load_working_key(encrypt_ecb(DEFAULT_MASTER_KEY, PIK), b"\x00\x00\x00\x00")
    with pytest.raises(NoPinKeyError):
        client.get_pin_block(PAN, 100, 5)


def test_cardholder_cancel(pad: VirtualPinPad, client: PinPad) -> None:
    _load_pik(client)
    pad.cardholder.press_cancel(delay=0.05)
    with pytest.raises(PinEntryCancelledError):
        client.get_pin_block(PAN, 100, 5)


def test_pin_entry_timeout(pad: VirtualPinPad, client: PinPad) -> None:
    _load_pik(client)
    pad.cardholder.walk_away()
    with pytest.raises(PinPadTimeoutError):
        client.get_pin_block(PAN, 100, 1)


def test_terminal_cancel_from_another_thread(pad: VirtualPinPad, client: PinPad) -> None:
    _load_pik(client)
    pad.cardholder.walk_away()
    started = threading.Event()

    def cancel_soon() -> None:
        started.wait(2)
        time.sleep(0.1)
        client.cancel()

    t = threading.Thread(target=cancel_soon)
    t.start()
    started.set()
    with pytest.raises(PinEntryCancelledError, match="terminal"):
        client.get_pin_block(PAN, 100, 10)
    t.join()
    assert client.status().state == "IDLE"  # the CN answer was skipped as stale


def test_bad_arguments_are_refused_before_sending(client: PinPad) -> None:
    with pytest.raises(PinPadError):
        client.get_pin_block("12", 1, 5)
    with pytest.raises(PinPadError):
        client.get_pin_block(PAN, 1, 5, min_len=8, max_len=6)
    with pytest.raises(PinPadError):
        client.display("x" * 65)


def test_silent_pad_fails_with_link_error(pad: VirtualPinPad, client: PinPad) -> None:
    pad.faults.silent = True
    with pytest.raises(PinPadLinkError) as info:
        client.status()
    assert isinstance(info.value, SerialLinkError)


def test_open_missing_port_is_a_pinpad_error() -> None:
    with pytest.raises(PinPadLinkError):
        PinPad.open("/dev/no-such-pinpad")


def test_aes_session_key_gives_a_format4_block(pad: VirtualPinPad, client: PinPad) -> None:
    aes_pik = bytes(range(16))
    with pytest.raises(KeyCheckValueError):
        client.load_working_key(encrypt_ecb(DEFAULT_MASTER_KEY, aes_pik), b"\x00\x01\x02",
                                aes=True)
    with pytest.raises(NoPinKeyError):
        client.get_pin_block(PAN, 100, 5, aes=True)
    client.load_working_key(encrypt_ecb(DEFAULT_MASTER_KEY, aes_pik), aes_kcv(aes_pik, 5),
                            aes=True)
    assert "A" in client.status().keys
    pad.cardholder.enter_pin("2468")
    result = client.get_pin_block(PAN, 100, 5, aes=True)
    assert (result.mode, len(result.pin_block)) == ("A", 16)
    assert decrypt_format4(aes_pik, result.pin_block, PAN) == "2468"
    with pytest.raises(PinPadError):
        client.get_pin_block(PAN, 100, 5, aes=True, dukpt=True)
