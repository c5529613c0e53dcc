"""Replaying recorded PIN pad sessions: the checked-in trace, and what a divergence looks like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.pinpad import PinPad, redact_payload
from drivers.serial_link import SerialLink
from drivers.serial_replay import ReplaySerialPort, SerialReplayMismatch, read_serial_units
from drivers.trace import TraceFormatError

from . import serial_scenario

TRACE = (Path(__file__).resolve().parent.parent / "hil" / "traces" / "serial"
         / "pinpad-session.jsonl")


def _pad(port: ReplaySerialPort) -> PinPad:
    return PinPad(SerialLink(port, ack_timeout=0.3, redact=redact_payload), answer_timeout=1.0)


def test_checked_in_session_replays() -> None:
    port = ReplaySerialPort(TRACE, redact=redact_payload)
    with _pad(port) as pad:
        outcome = serial_scenario.run(pad)
    assert outcome == serial_scenario.Outcome("IDLE", 8, cancelled=True)
    port.assert_finished()


def test_checked_in_trace_has_no_secrets() -> None:
    text = TRACE.read_text(encoding="utf-8")
    units = read_serial_units(TRACE)
    raw = b"".join(u.data for u in units)
    assert serial_scenario.PAN.encode() not in raw
    assert serial_scenario.PIK.hex().upper().encode() not in raw
    assert "123456" not in bytes.fromhex(
        "".join(json.loads(line)["hex"] for line in text.splitlines()
                if '"serial"' in line)).decode("latin-1")


def test_a_different_dialogue_is_reported_with_its_position() -> None:
    port = ReplaySerialPort(TRACE, redact=redact_payload)
    with _pad(port) as pad, pytest.raises(Exception):  # noqa: B017, PT011 - the link wraps it
        pad.status("something else")
    assert isinstance(port.mismatch, SerialReplayMismatch)
    assert "after 0 matched units" in str(port.mismatch)
    with pytest.raises(SerialReplayMismatch):
        port.assert_finished()


def test_a_replay_stopped_early_is_not_finished() -> None:
    port = ReplaySerialPort(TRACE, redact=redact_payload)
    with _pad(port) as pad:
        pad.status("hello")
    with pytest.raises(SerialReplayMismatch, match="units left"):
        port.assert_finished()


def test_bad_trace_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"kind":"meta"}\n')
    with pytest.raises(TraceFormatError):
        ReplaySerialPort(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"kind":"serial","dir":"out","hex":"zz"}\n')
    with pytest.raises(TraceFormatError):
        ReplaySerialPort(broken)
    with pytest.raises(TraceFormatError):
        ReplaySerialPort(tmp_path / "missing.jsonl")
