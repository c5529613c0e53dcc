"""Tests of ``pos-emulator pinpad``: argument errors and the stdin control commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from drivers.pinpad import PinPad
from emulator.pinpad import EnterPin, VirtualPinPad
from emulator.pinpad.cli import apply_command, main
from emulator.pinpad.link import LinkFaults


def faults_of(pad: VirtualPinPad) -> LinkFaults:
    return pad.faults  # a call, so mypy does not carry narrowing across commands


@pytest.fixture
def pad() -> Iterator[VirtualPinPad]:
    with VirtualPinPad() as p:
        yield p


def test_bad_key_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--master-key", "XYZ"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "master-key" in err


def test_unknown_option_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nope"]) == 2
    assert capsys.readouterr().err.startswith("pos-emulator pinpad:")


def test_control_commands_set_cardholder_and_faults(pad: VirtualPinPad) -> None:
    assert apply_command("pin 1234 0.5", pad) == "ok"
    assert apply_command("cancel", pad) == "ok"
    assert apply_command("walkaway", pad) == "ok"
    assert apply_command("pin 5678 0 0.2", pad) == "ok"
    assert [type(pad.cardholder.take()).__name__ for _ in range(3)] == [
        "EnterPin", "PressCancel", "WalkAway"]
    assert pad.cardholder.take() == EnterPin("5678", 0.0, 0.2)
    assert apply_command("fault bad-lrc 1,3", pad) == "ok"
    assert pad.faults.bad_lrc_on == {1, 3}
    assert apply_command("fault late-ack 0.8", pad) == "ok"
    assert pad.faults.ack_delay == 0.8
    assert apply_command("fault nak 2", pad) == "ok"
    assert apply_command("fault silent on", pad) == "ok"
    assert faults_of(pad).silent
    assert apply_command("fault clear", pad) == "ok"
    assert not faults_of(pad).silent
    assert pad.faults.nak_next == 0
    assert apply_command("fault eot 1", pad) == "ok"
    assert (apply_command("status", pad) or "").startswith("display=")
    assert apply_command("quit", pad) is None
    assert apply_command("", pad) == ""


@pytest.mark.parametrize("line", ["pin", "pin 12ab", "fault", "fault nak x", "fault bogus 1",
                                  "dance"])
def test_bad_control_commands_answer_an_error(pad: VirtualPinPad, line: str) -> None:
    reply = apply_command(line, pad)
    assert reply is not None
    assert reply.startswith("error:")


def test_main_prints_path_and_serves_until_quit(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    class Stdin:
        """Checks the pad on its path before the CLI reads ``quit``."""

        def __iter__(self) -> Iterator[str]:
            yield "pin 1111\n"
            path = capsys.readouterr().out.splitlines()[0]
            assert os.path.exists(path)
            with PinPad.open(path) as client:
                assert client.status().model == "VPP-100"
            yield "quit\n"

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert main(["--pin", "123456"]) == 0
