"""The demo plays its whole day and every step ends as expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.card.pcscd_harness import unavailable_reason
from terminal import demo


def test_demo_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    code = demo.main(["--in-process", "--ledger", str(ledger)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 of 10 steps ended as expected." in out
    assert "REFUND APPROVED" in out
    assert "DECLINED BY HOST 64" in out
    assert "TOTALS AGREE" in out
    assert "6225880000000019" not in out  # the PAN only ever appears masked
    assert ledger.exists()


def test_demo_rejects_unknown_card_and_existing_ledger(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--card", "nope"]) == 2
    existing = tmp_path / "x.db"
    existing.write_text("")
    assert demo.main(["--ledger", str(existing)]) == 2
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
    assert "10 of 10 steps ended as expected." in out
    assert "PC/SC reader 'Virtual PCD 00 00'" in out
    assert "6225880000000019" not in out
