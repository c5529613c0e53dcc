"""Replay a recorded serial trace as the device: a regression test without the device.

:class:`ReplaySerialPort` is a pyserial-like port (what :class:`SerialLink`
needs) built from the ``serial`` lines of a JSONL trace (:mod:`drivers.trace`).
Everything the terminal writes is compared with the next recorded ``out``
unit, after the same redaction the recording used (PIN blocks, keys and PANs
are starred in traces, so the live frame is starred the same way before the
comparison). When a written unit matches, the ``in`` units recorded after it
become readable, as the device sent them.

Starred fields in recorded answers (a PIN block) are replayed as zeros with a
recomputed LRC, so the client still parses them: the replay checks the
dialogue (framing, ACK/NAK, retries, command sequence), not the secret values.
A unit that differs from the recording stops the replay: the port reports
:class:`SerialReplayMismatch` through :attr:`ReplaySerialPort.mismatch` and
fails every later call like a port that went away, so the link raises.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import serial

from drivers.errors import SerialLinkError
from drivers.serial_link import ETX, STX, lrc
from drivers.trace import TraceFormatError

Redactor = Callable[[bytes], bytes]


class SerialReplayMismatch(SerialLinkError):  # noqa: N818 - pairs with trace.ReplayMismatch
    """The terminal wrote something other than what the recording holds."""


@dataclass(frozen=True)
class _Unit:
    index: int  # 1-based position among the device's serial lines
    direction: str  # "out" (terminal -> device) or "in"
    data: bytes


def read_serial_units(path: str | Path, device: str = "pinpad") -> list[_Unit]:
    """The ``serial`` lines of ``device`` in a trace file, in order."""
    units: list[_Unit] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("kind") != "serial" or record.get("device", "pinpad") != device:
                continue
            direction = record["dir"]
            data = bytes.fromhex(record["hex"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TraceFormatError(f"{path} line {number}: not a serial trace line") from None
        if direction not in ("out", "in"):
            raise TraceFormatError(f"{path} line {number}: direction {direction!r}")
        units.append(_Unit(len(units) + 1, direction, data))
    if not units:
        raise TraceFormatError(f"{path}: no serial lines for device {device!r}")
    return units


def _is_frame(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == STX and data[-2] == ETX


def _as_recorded(data: bytes, redact: Redactor) -> bytes:
    """A live unit as the recorder wrote it: frames redacted, LRC over the redacted payload."""
    if not _is_frame(data):
        return data
    shown = redact(data[1:-2])
    return bytes([STX]) + shown + bytes([ETX, lrc(shown)])


def _playable(data: bytes) -> bytes:
    """A recorded device unit as sent again: starred hex replaced by zeros."""
    if not _is_frame(data) or b"*" not in data:
        return data
    payload = data[1:-2].replace(b"*", b"0")
    good = data[-1] == lrc(data[1:-2])
    return bytes([STX]) + payload + bytes([ETX, lrc(payload) if good else data[-1]])


class ReplaySerialPort:
    """The device side of a recorded serial session (see the module docstring)."""

    def __init__(self, trace_path: str | Path, *, device: str = "pinpad",
                 redact: Redactor | None = None, timeout: float = 0.05) -> None:
        self._units = deque(read_serial_units(trace_path, device))
        self._redact: Redactor = redact or (lambda payload: payload)
        self.timeout = timeout
        self._incoming = bytearray()
        self._cond = threading.Condition()
        self._open = True
        self.mismatch: SerialReplayMismatch | None = None
        self.matched = 0
        with self._cond:
            self._release_inbound()  # a device may speak first

    # what SerialLink uses ---------------------------------------------------------
    @property
    def in_waiting(self) -> int:
        with self._cond:
            return len(self._incoming)

    @property
    def is_open(self) -> bool:
        return self._open

    def read(self, size: int = 1) -> bytes:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while not self._incoming and self._open and self.mismatch is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                self._cond.wait(remaining)
            self._check()
            data = bytes(self._incoming[:size])
            del self._incoming[:size]
            return data

    def write(self, data: bytes, /) -> int:
        with self._cond:
            self._check()
            shown = _as_recorded(bytes(data), self._redact)
            expected = self._units[0] if self._units else None
            if expected is None or expected.direction != "out" or expected.data != shown:
                want = "the end of the recording" if expected is None else (
                    f"unit {expected.index} ({expected.direction}) {expected.data.hex().upper()}")
                self.mismatch = SerialReplayMismatch(
                    f"replay mismatch after {self.matched} matched units: the terminal wrote "
                    f"{shown.hex().upper()}, the recording has {want}")
                self._cond.notify_all()
                raise serial.SerialException(str(self.mismatch))
            self._units.popleft()
            self.matched += 1
            self._release_inbound()
            return len(data)

    def flush(self) -> None:
        self._check()

    def reset_input_buffer(self) -> None:
        with self._cond:
            self._incoming.clear()

    def close(self) -> None:
        with self._cond:
            self._open = False
            self._cond.notify_all()

    # replay state -----------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True when every recorded unit has been written or delivered."""
        return not self._units

    def assert_finished(self) -> None:
        if self.mismatch is not None:
            raise self.mismatch
        if self._units:
            raise SerialReplayMismatch(
                f"replay stopped with {len(self._units)} recorded units left "
                f"(next: unit {self._units[0].index}, {self._units[0].direction})")

    def _release_inbound(self) -> None:
        while self._units and self._units[0].direction == "in":
            self._incoming += _playable(self._units.popleft().data)
            self.matched += 1
        self._cond.notify_all()

    def _check(self) -> None:
        if self.mismatch is not None:
            raise serial.SerialException(str(self.mismatch))
        if not self._open:
            raise serial.SerialException("replay port is closed")
