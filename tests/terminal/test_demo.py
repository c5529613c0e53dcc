"""The scripted walkthrough plays its whole day on the real terminal core; every step ends
as expected, and the journal and the acquirer's ledger it leaves behind agree."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.card.pcscd_harness import unavailable_reason
from terminal import demo


def test_demo_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    code = demo.main(["--in-process", "--keep", str(keep)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "11 of 11 steps ended as expected." in out
    assert "REFUND APPROVED" in out
    assert "REFUSED BY TERMINAL (nothing sent)" in out
    assert "REVERSED" in out
    assert "TOTALS AGREE" in out
    assert "6225880000000019" not in out  # the PAN only ever appears masked
    journal = sqlite3.connect(keep / "terminal" / "journal.db")
    statuses = [row[0] for row in journal.execute("SELECT status FROM txn ORDER BY id")]
    assert statuses == ["approved", "approved", "approved", "reversed", "approved",
                        "approved"]
    ledger = sqlite3.connect(keep / "world" / "acquirer-ledger.db")
    assert ledger.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    for path in (keep / "terminal" / "journal.db", keep / "world" / "acquirer-ledger.db"):
        assert b"6225880000000019" not in path.read_bytes()


def test_demo_rejects_unknown_card_and_existing_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--card", "nope"]) == 2
    assert demo.main(["--keep", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.hil
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_demo_through_pcscd_and_vpcd() -> None:
    # a subprocess: libpcsclite reads its socket path once per process, and the
    # HIL fixtures of this pytest session may already have pointed it elsewhere
    env = {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}
    done = subprocess.run([sys.executable, "-m", "terminal.demo", "--verbose"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "11 of 11 steps ended as expected." in out
    assert "PC/SC reader 'Virtual PCD 00 00'" in out
    assert "6225880000000019" not in out
