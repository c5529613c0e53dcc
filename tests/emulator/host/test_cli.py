"""``pos-emulator terminal`` and ``pos-emulator ledger``: output, masking, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.host import SqliteLedgerStore
from emulator.host.cli import ledger_main, terminal_main
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.simterminal import Approved
from tests.emulator.host.harness import make_lane

DEBIT = card_by_name("cup-debit")


def test_demo_terminal_is_provisioned_and_listed(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "l.db")
    assert terminal_main(["add", "--demo", "--ledger", db]) == 0
    assert terminal_main(["list", "--ledger", db]) == 0
    out = capsys.readouterr().out
    assert DEMO_TID in out
    assert DEMO_MID in out
    assert DEMO_TMK.hex().upper() not in out  # only with --reveal
    assert terminal_main(["list", "--ledger", db, "--reveal", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["tmk"] == DEMO_TMK.hex().upper()


def test_terminal_add_with_explicit_tmk(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "l.db")
    tmk = "0123456789ABCDEFFEDCBA9876543210"
    assert terminal_main(["add", "--tid", "20000002", "--mid", "123456789012346",
                          "--tmk", tmk, "--ledger", db]) == 0
    terminal_main(["list", "--ledger", db, "--reveal", "--json"])
    out = capsys.readouterr().out
    assert json.loads(out[out.index("["):])[0]["tmk"] == tmk


@pytest.mark.parametrize("argv", [
    ["add", "--tid", "123", "--mid", "123456789012345"],
    ["add", "--tid", "12345678", "--mid", "short"],
    ["add", "--tid", "12345678", "--mid", "123456789012345", "--tmk", "XYZ"],
    ["add", "--tid", "12345678", "--mid", "123456789012345", "--tmk", "00"],
    ["add"],
    ["add", "--demo", "--tid", "12345678"],
    ["remove"],
    [],
])
def test_bad_terminal_usage_is_one_line_and_exit_2(tmp_path: Path, argv: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert terminal_main([*argv, "--ledger", str(tmp_path / "l.db")] if argv else argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_ledger_of_a_missing_file_is_exit_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger_main(["--ledger", str(tmp_path / "none.db")]) == 2
    assert "no ledger" in capsys.readouterr().err


def test_ledger_shows_refundable_amounts_and_batches(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "l.db"
    lane = make_lane(store=SqliteLedgerStore(path))
    sale = lane.exchange(lane.term.sale(DEBIT, 10_000, pin="123456"))
    assert isinstance(sale, Approved)
    lane.exchange(lane.term.refund(sale, 2_500))
    lane.exchange(lane.term.refund(sale, 50_000))  # 64, listed but not counted
    lane.exchange(lane.term.settlement())
    lane.store.close()
    assert ledger_main(["--ledger", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [original] = report["originals"]
    assert original["refundable_amount"] == 7_500
    assert [r["response_code"] for r in original["refunds"]] == ["00", "64"]
    [batch] = report["batches"]
    assert batch["settled"] is True
    assert batch["balanced"] is True
    assert batch["domestic"] == {"debit_count": 1, "debit_amount": 10_000, "credit_count": 1,
                                 "credit_amount": 2_500}
    assert ledger_main(["--ledger", str(path)]) == 0
    text = capsys.readouterr().out
    assert "refundable 75.00" in text
    assert "622588******0019" in text
    assert DEBIT.pan not in text
