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


def test_readme_pos_terminal_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's pos-terminal block, run by bash against a real pos-emulator serve.

    Only the port (a free one instead of 5858) and /tmp/ (this test's directory) change.
    """
    import socket
    import subprocess

    start = README.index("## `pos-terminal`: the terminal for scripts and QA")
    block = README[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = (block.replace("127.0.0.1:5858", f"127.0.0.1:{port}")
              .replace("serve --ledger", f"serve --port {port} --ledger")
              .replace("/tmp/", f"{tmp_path}/"))
    # wait for the emulator to listen before the first pos-terminal command
    script = script.replace(" &   ", f" & for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"
                                     f"{port}) 2>/dev/null && break; sleep 0.1; done; ", 1)
    runner = tmp_path / "readme.sh"
    runner.write_text("set -u\ncd " + str(ROOT) + "\n" + script + "\nkill %1\nwait\n",
                      encoding="utf-8")
    done = subprocess.run(["bash", str(runner)], capture_output=True, text=True, timeout=240,
                          check=False)
    out = done.stdout + done.stderr
    assert out.count("REFUND APPROVED") == 2, out
    assert "not the card of the original sale" in out
    assert "approval needed" in out
    assert "approved by supervisor 00" in out
    assert "重打印 DUPLICATE" in out
    assert "退款凭证 REFUND PROOF" in out
    assert "Expected arrival" in out
    assert "TRANSACTION REPORT" in out
    assert "totals agree with the host" in out
    assert '"approver": "00"' in out
    assert "6225880000000019" not in out
