"""Record a PIN pad session through a real pty, then replay the recording with no pad."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.pinpad import PinPad, redact_payload
from drivers.serial_link import SerialLink
from drivers.serial_replay import ReplaySerialPort
from tests.drivers import serial_scenario

pytestmark = pytest.mark.hil


def test_recorded_session_replays(tmp_path: Path) -> None:
    if os.environ.get("POS_HIL_PINPAD"):
        pytest.skip("records the virtual pad's scripted cardholder; POS_HIL_PINPAD is a real pad")
    directory = Path(os.environ.get("POS_HIL_TRACE_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pinpad-session.jsonl"
    recorded = serial_scenario.record(str(path))
    port = ReplaySerialPort(path, redact=redact_payload)
    with PinPad(SerialLink(port, ack_timeout=0.3, redact=redact_payload)) as pad:
        assert serial_scenario.run(pad) == recorded
    port.assert_finished()
