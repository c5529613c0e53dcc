"""``pos-emulator``: usage errors, delegation, and a real ``serve`` subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from emulator import cli
from emulator.catalogue import card_by_name
from emulator.client import HostClient, run_terminal, sign_on
from emulator.host import SqliteLedgerStore
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.simterminal import Approved, Declined, SimTerminal


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["serve", "--port", "70000"], ["serve", "--port", "x"],
    ["serve", "--dialect", "klingon"], ["serve", "--faults", "explode"],
    ["serve", "--admin", "tcp:a:b"], ["serve", "--read-timeout", "0"],
    ["faults"], ["faults", "add"], ["faults", "add", "nonsense@p=3"], ["faults", "list", "x"],
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_faults_without_a_running_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["faults", "list", "--admin", f"unix:{tmp_path}/nobody.sock"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_missing_delegate_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli._DELEGATES, "card", ("emulator.no_such_module", "main"))
    assert cli.main(["card", "--help"]) == 2
    err = capsys.readouterr().err
    assert "not available" in err
    assert len(err.strip().splitlines()) == 1


def test_delegates_receive_the_rest_of_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    import emulator.host.cli as host_cli
    monkeypatch.setattr(host_cli, "ledger_main", fake)
    assert cli.main(["ledger", "--json", "--ledger", "x.db"]) == 7
    assert seen == [["--json", "--ledger", "x.db"]]


# --- a real serve process ---------------------------------------------------------------
class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int, ledger: Path,
                 admin: str, banner: str) -> None:
        self.proc, self.port, self.ledger, self.admin, self.banner = (
            proc, port, ledger, admin, banner)


@pytest.fixture
def served() -> Iterator[Served]:
    # a short directory: the Unix admin socket path must stay under 108 bytes
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="pe-") as tmp:
        ledger = Path(tmp) / "ledger.db"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "serve", "--port", "0", "--ledger", str(ledger),
             "--faults", "code=05@amount=4321"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env)
        assert proc.stdout is not None
        banner = proc.stdout.readline() + proc.stdout.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+).*admin (unix:\S+),", banner)
        assert found, banner
        try:
            yield Served(proc, int(found.group(1)), ledger, found.group(2), banner)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def test_serve_provisions_the_demo_terminal_answers_and_stops_on_sigterm(
        served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert f"provisioned the demo terminal TID {DEMO_TID}" in served.banner
    term = SimTerminal("cup", DEMO_TID, DEMO_MID, DEMO_TMK, datetime.now)
    client = HostClient("127.0.0.1", served.port, "cup", timeout=5)
    await sign_on(term, client)
    sale = await run_terminal(term, client, term.sale(card_by_name("cup-debit"), 2_500,
                                                      pin="123456"))
    assert isinstance(sale.result, Approved)
    forced = await run_terminal(term, client, term.sale(card_by_name("cup-debit"), 4_321,
                                                        pin="123456"))
    assert isinstance(forced.result, Declined)
    assert forced.result.response_code == "05"

    # the admin channel of the running process
    assert cli.main(["faults", "add", "drop@card=cup-credit", "--admin", served.admin]) == 0
    assert cli.main(["faults", "list", "--admin", served.admin]) == 0
    listed = capsys.readouterr().out
    assert "code=05@amount=4321\tfired=1\tarmed" in listed
    assert "drop@card=cup-credit\tfired=0\tarmed" in listed
    assert cli.main(["faults", "clear", "--admin", served.admin]) == 0
    assert "cleared 2" in capsys.readouterr().out
    await client.close()

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(15) == 0
    assert served.proc.stderr is not None
    assert "Traceback" not in served.proc.stderr.read()
    snapshot = SqliteLedgerStore(served.ledger).load()
    assert [t.tid for t in snapshot.terminals] == [DEMO_TID]
    assert [(t.kind, t.status) for t in snapshot.transactions] == [("sale", "approved")]
    assert not Path(served.admin.removeprefix("unix:")).exists()


def test_sigterm_with_an_admin_client_connected_stops_cleanly(served: Served) -> None:
    """A client of the admin channel still connected when the host stops is closed, and
    nothing is logged (its handler cancelled at the loop's end logged a traceback)."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(15)
        client.connect(served.admin.removeprefix("unix:"))
        client.sendall(b'{"cmd": "list"}\n')
        assert b'"ok": true' in client.recv(4096)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(15) == 0
        assert client.recv(4096) == b""  # the host closed it
    assert served.proc.stderr is not None
    assert served.proc.stderr.read() == ""


def test_sigint_also_stops_cleanly(served: Served) -> None:
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(15) == 0


def test_port_in_use_is_exit_2(served: Served) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--port", str(served.port), "--ledger",
         str(served.ledger.with_name("other.db"))],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False)
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr
    assert "Traceback" not in proc.stderr
