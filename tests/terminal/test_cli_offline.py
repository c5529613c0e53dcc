"""pos-terminal commands that need no host: init, operators, password expiry, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terminal.cli import main

TMK = "CA5D92598DCA48CE8A4C76361A9269E9"


def run(capsys: pytest.CaptureFixture[str], data: Path,
        *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["--data-dir", str(data), "--lang", "en", "--json", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if out else {}


@pytest.fixture
def till(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    data, pw = tmp_path / "till", tmp_path / "pw"
    pw.mkdir()
    (pw / "99").write_text("12345678\n")
    (pw / "00").write_text("123456\n")
    code, _ = run(capsys, data, "init", "--tid", "10000001", "--mid", "123456789012345",
                  "--tmk", TMK, "--admin-password-file", str(pw / "99"),
                  "--supervisor-password-file", str(pw / "00"))
    assert code == 0
    return data, pw


def test_only_the_administrator_sets_the_password_expiry(
        till: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, pw = till
    code, out = run(capsys, data, "--operator", "00", "--password-file", str(pw / "00"),
                    "operator", "expiry", "90")
    assert code == 2
    assert "cannot set the password expiry" in str(out["error"])
    code, out = run(capsys, data, "--operator", "99", "--password-file", str(pw / "99"),
                    "operator", "expiry", "90")
    assert (code, out["password_expiry_days"]) == (0, 90)
    code, out = run(capsys, data, "--operator", "99", "--password-file", str(pw / "99"),
                    "operator", "expiry", "-3")
    assert code == 2


def test_commands_on_a_directory_without_a_terminal_say_how_to_set_one_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, tmp_path / "nothing", "status")
    assert code == 2
    assert "init" in str(out["error"])
    assert not (tmp_path / "nothing").exists()  # nothing created by a mistyped --data-dir
