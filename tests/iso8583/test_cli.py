"""pos-iso: each subcommand, JSON output, and bad input -> exit 2, one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iso8583.cli import main
from iso8583.crypto.mac import cup_pos_mac
from iso8583.dialects import get_dialect

CUP = get_dialect("cup")
MAK = bytes.fromhex("5BB5C72CD00B7338")
PAN = "6225880000000019"


def _frame(with_mac: bool = True) -> bytes:
    m = CUP.message("0200", {2: PAN, 3: "000000", 4: 1234, 11: 7, 41: "10000001",
                             42: "123456789012345", 49: "156", 60: "22000001000"})
    if with_mac:
        m[64] = cup_pos_mac(MAK, CUP.mac_block(m))
    return CUP.pack(m, tpdu=bytes.fromhex("6000030000"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_frame_masks_pan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", _frame().hex())
    assert code == 0
    assert "622588******0019" in out
    assert PAN not in out
    assert "TPDU 6000030000" in out


def test_decode_json_and_body_form(capsys: pytest.CaptureFixture[str]) -> None:
    body = _frame()[13:]
    code, out, _ = run(capsys, "decode", body.hex(), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["mti"] == "0200"
    assert doc["fields"]["4"] == "000000001234"


def test_encode_round_trip_with_mac(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.dumps({"mti": "0200", "fields": {"3": "000000", "4": 1234, "11": "000007",
                                               "41": "10000001"}})
    code, out, _ = run(capsys, "encode", doc, "--frame", "--mac-key", MAK.hex())
    assert code == 0
    frame = bytes.fromhex(out.strip())
    code, out, _ = run(capsys, "mac", frame.hex(), "--key", MAK.hex(), "--verify")
    assert code == 0
    assert "MAC OK" in out


def test_mac_verify_mismatch_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "mac", _frame().hex(), "--key", "00" * 8, "--verify", "--json")
    assert code == 1
    assert json.loads(out)["verified"] is False


def test_kcv(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "kcv", "--key", "0123456789ABCDEFFEDCBA9876543210",
                       "--length", "2")
    assert (code, out.strip()) == (0, "08D7")


@pytest.mark.parametrize("argv", [
    ["decode", "zz"],
    ["decode", "00020200"],
    ["encode", "{not json"],
    ["encode", '{"mti": "0200", "fields": {"99": "1"}}'],
    ["encode", '{"mti": "0200", "fields": {"4": "12x"}}'],
    ["mac", "0011", "--key", "00"],
    ["kcv", "--key", "0011"],
    ["nosuchcommand"],
])
def test_bad_input_exit_2_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    assert err.strip()


def test_console_script_stdin_and_no_traceback() -> None:
    ok = subprocess.run([sys.executable, "-m", "iso8583", "decode"], input=_frame().hex(),
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0
    assert "622588******0019" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "iso8583", "decode"], input="0002ffff",
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


VECTORS = {
    "tmk": "CA5D92598DCA48CE8A4C76361A9269E9",
    "f62": "6701EAD6A9AD51E51AA406E2C27FCFA98D0A74B8B651F9E9BACE9AE10000000000000000AB7153CA",
}


def test_signon_keys_hides_keys_unless_revealed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "signon-keys", "--tmk", VECTORS["tmk"], "--f62", VECTORS["f62"])
    assert code == 0
    assert "every check value matches" in out
    assert "807A23AD32B36D457AE91FDF927570EA" not in out
    code, out, _ = run(capsys, "signon-keys", "--tmk", VECTORS["tmk"], "--f62",
                       VECTORS["f62"], "--reveal", "--json")
    assert json.loads(out)["pik"]["key"] == "807A23AD32B36D457AE91FDF927570EA"
    bad = VECTORS["f62"][:-2] + "00"
    code, _, err = run(capsys, "signon-keys", "--tmk", VECTORS["tmk"], "--f62", bad)
    assert code == 2
    assert "check" in err.lower()


def test_pinblock_clear_and_encrypted_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "pinblock", "--pin", "1234", "--pan", "5544332211009966",
                       "--reveal")
    assert (code, out.strip()) == (0, "041277CDDEEFF669")
    code, out, _ = run(capsys, "pinblock", "--pin", "1234", "--pan", "5544332211009966")
    assert "1277CDDEEFF669" not in out
    key = "0123456789ABCDEFFEDCBA9876543210"
    code, out, _ = run(capsys, "pinblock", "--pin", "1234", "--pan", "5544332211009966",
                       "--key", key, "--reveal")
    block = out.strip()
    code, out, _ = run(capsys, "pinblock", "--pan", "5544332211009966", "--key", key,
                       "--decrypt", block)
    assert code == 0
    assert "1234" not in out
    assert "4 digits" in out
