"""The vpcd card server against a fake vpcd on 127.0.0.1 (no pcscd needed)."""

from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.card import VirtualCard, parse_card_faults
from emulator.card.app import PSE_NAME, contact_atr, contactless_atr
from emulator.card.cli import main
from emulator.card.vpcd import VpcdCardServer, vpcd_port
from emulator.catalogue import card_by_name
from tests.emulator.card.test_app import gpo, read_record, select

ROOT = Path(__file__).resolve().parents[3]


class FakeVpcd:
    """The pcscd side of one vpcd slot: accepts the card and drives it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port: int = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)

    def _recv(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        # vpcd writes length and payload separately; do the same.
        self.conn.sendall(len(payload).to_bytes(2, "big"))
        self.conn.sendall(payload)

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload)
        return self._recv(int.from_bytes(self._recv(2), "big"))

    def closed_by_card(self) -> bool:
        assert self.conn is not None
        try:
            return self.conn.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


def served(spec: str = "") -> VirtualCard:
    card = VirtualCard(card_by_name("cup-debit"), faults=parse_card_faults(spec))
    card.power_on(contactless=False)
    return card


def test_port_of_a_slot() -> None:
    assert vpcd_port(0) == 35963
    assert vpcd_port(1) == 35964
    assert vpcd_port(1, 40000) == 40001
    with pytest.raises(ValueError, match="slot"):
        vpcd_port(-1)


def test_control_codes_and_apdus(vpcd: FakeVpcd) -> None:
    card = served()
    with VpcdCardServer(card, port=vpcd.port) as server:
        assert server.insert(wait=5)
        vpcd.accept()
        assert server.connected
        assert vpcd.exchange(b"\x04") == contact_atr()
        vpcd.send(b"\x00")  # power off: no answer
        vpcd.send(b"\x01")  # power on
        assert vpcd.exchange(select(PSE_NAME))[-2:] == b"\x90\x00"
        assert vpcd.exchange(select(card.aid))[-2:] == b"\x90\x00"
        assert vpcd.exchange(gpo())[-2:] == b"\x90\x00"
        record = vpcd.exchange(read_record(2, 2))
        assert record[-2:] == b"\x90\x00"
        assert bytes.fromhex("5A086225880000000019") in record
        vpcd.send(b"\x02")  # reset drops the selection
        assert vpcd.exchange(gpo())[-2:] == b"\x69\x85"
        assert server.apdu_count == 5


def test_remove_and_insert_again(vpcd: FakeVpcd) -> None:
    with VpcdCardServer(served(), port=vpcd.port) as server:
        server.insert()
        vpcd.accept()
        vpcd.exchange(b"\x04")
        server.remove()
        assert vpcd.closed_by_card()
        assert not server.connected
        assert server.insert(wait=5)
        vpcd.accept()
        assert vpcd.exchange(b"\x04") == contact_atr()


def test_removal_fault_closes_the_socket(vpcd: FakeVpcd) -> None:
    with VpcdCardServer(served("remove@select:2"), port=vpcd.port) as server:
        server.insert()
        vpcd.accept()
        vpcd.send(b"\x01")
        assert vpcd.exchange(select(PSE_NAME))[-2:] == b"\x90\x00"
        vpcd.send(select(PSE_NAME))
        assert vpcd.closed_by_card()
        assert not server.inserted


def test_reconnects_when_vpcd_comes_back(vpcd: FakeVpcd) -> None:
    with VpcdCardServer(served(), port=vpcd.port) as server:
        server.insert()
        vpcd.accept()
        assert vpcd.conn is not None
        vpcd.conn.close()  # pcscd went away; the card stays "inserted"
        vpcd.accept()  # ... and comes back to the new pcscd
        assert vpcd.exchange(b"\x04") == contact_atr()
        assert server.inserted


# --- the command line -------------------------------------------------------------------
def test_cli_list_masks_pans(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "622588******0019" in out
    assert "6225880000000019" not in out
    assert "cup-magstripe" not in out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--card", "nope"], "unknown test card"),
    (["--card", "cup-magstripe"], "magnetic-stripe"),
    (["--card", "cup-blocked", "--contactless"], "no contactless"),
    (["--card", "cup-debit", "--faults", "explode"], "unknown card fault"),
    (["--slot", "7", "--card", "cup-debit"], "invalid choice"),
    ([], "--card NAME is required"),
])
def test_cli_bad_input_exits_2(argv: list[str], fragment: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_cli_serves_until_sigterm(vpcd: FakeVpcd) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.card.cli", "--card", "cup-debit", "--slot", "1",
         "--vpcd-port", str(vpcd.port - 1)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        vpcd.accept()
        vpcd.send(b"\x01")
        assert vpcd.exchange(select(PSE_NAME))[-2:] == b"\x90\x00"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "622588******0019" in out
    assert "6225880000000019" not in out + err
    assert "stopped after 1 APDUs" in out
    assert vpcd.closed_by_card()


def test_cli_interactive_keys_on_a_tty(vpcd: FakeVpcd) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.card.cli", "--card", "visa-credit", "--contactless",
         "--vpcd-port", str(vpcd.port)],
        cwd=ROOT, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    os.close(follower)
    try:
        vpcd.accept()
        assert vpcd.exchange(b"\x04") == contactless_atr()
        os.write(leader, b"r\n")
        assert vpcd.closed_by_card()
        os.write(leader, b"i\n")
        vpcd.accept()
        assert vpcd.exchange(b"\x04") == contactless_atr()
        os.write(leader, b"q\n")
        out, err = proc.communicate(timeout=20)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "card removed" in out
    assert "card inserted" in out
    assert "476173******0010" in out
