"""README promises: the two set-up commands, CI calling the test command, working examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iso8583.cli import main as pos_iso

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_two_setup_commands_and_ci_uses_the_test_command() -> None:
    assert "bash scripts/demo.sh" in README
    assert "bash scripts/test.sh" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci
    test_sh = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    for step in ("scripts/setup.sh", "ruff check", "mypy", "pytest"):
        assert step in test_sh


def test_readme_sample_frame_decodes_and_its_mac_verifies(
        capsys: pytest.CaptureFixture[str]) -> None:
    match = re.search(r"^FRAME=([0-9A-F]+)$", README, re.MULTILINE)
    assert match is not None
    frame = match.group(1)
    assert pos_iso(["decode", frame]) == 0
    assert "622588******0019" in capsys.readouterr().out
    assert pos_iso(["mac", frame, "--alg", "cup", "--key", "5BB5C72CD00B7338", "--verify"]) == 0


def test_readme_documents_every_catalogue_card_and_magic_amount() -> None:
    from emulator.catalogue import CARDS
    from emulator.host.codes import MAGIC_AMOUNTS
    for card in CARDS:
        assert card.name in README
        assert card.pan in README
    for cents in MAGIC_AMOUNTS:
        assert f"| .{cents:02d} |" in README
