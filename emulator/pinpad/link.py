"""Device side of the STX/ETX/LRC link for the virtual PIN pad, with fault knobs.

Written apart from :mod:`drivers.serial_link` on purpose (the emulator does not
import the drivers it tests): the same wire rules from DESIGN.md section 4,
``STX payload ETX LRC``, ACK/NAK, three attempts then EOT, printable-ASCII
payloads. Sans-I/O: the pad's loop feeds bytes and times in and writes the
:class:`Unit` values whose ``at`` time has come (late ACKs are units in the
future).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

STX, ETX, EOT, ACK, NAK = 0x02, 0x03, 0x04, 0x06, 0x15


def lrc(payload: bytes) -> int:
    value = ETX
    for b in payload:
        value ^= b
    return value


@dataclass
class LinkFaults:
    """What the virtual pad does wrong on the wire, set by tests or the CLI at run time.

    ``bad_lrc_on`` / ``drop_byte_on``: attempt numbers (1 = first transmission
    of a frame, 2 = first retry, ...) on which every answer frame gets a wrong
    LRC / loses a byte from its middle. ``nak_next``: NAK this many good frames
    from the terminal. ``ack_delay``: seconds every ACK is held back (a late
    ACK). ``silent``: read nothing, answer nothing. ``spurious_eot``: write this
    many bare EOTs before the next answer frame.
    """

    bad_lrc_on: set[int] = field(default_factory=set)
    drop_byte_on: set[int] = field(default_factory=set)
    nak_next: int = 0
    ack_delay: float = 0.0
    silent: bool = False
    spurious_eot: int = 0

    def clear(self) -> None:
        self.bad_lrc_on.clear()
        self.drop_byte_on.clear()
        self.nak_next = 0
        self.ack_delay = 0.0
        self.silent = False
        self.spurious_eot = 0


@dataclass(frozen=True)
class Unit:
    """Bytes to write at time ``at`` or later."""

    at: float
    data: bytes = field(repr=False)


class DeviceLink:
    """One pad end of the link: parses frames, ACKs/NAKs, sends answers one at a time."""

    def __init__(self, faults: LinkFaults, *, ack_timeout: float = 0.5, max_attempts: int = 3,
                 inter_byte_timeout: float = 0.2) -> None:
        self.faults = faults
        self.ack_timeout = ack_timeout
        self.max_attempts = max_attempts
        self.inter_byte_timeout = inter_byte_timeout
        self._in_frame = False
        self._await_lrc = False
        self._buf = bytearray()
        self._last_rx = 0.0
        self._queue: deque[bytes] = deque()
        self._inflight: bytes | None = None
        self._attempt = 0
        self._ack_deadline: float | None = None
        self._units: list[Unit] = []
        self.frames_sent = 0
        self.send_failures = 0

    # -- receive -----------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Good frames from the terminal (already ACKed); faults applied."""
        if self.faults.silent:
            return []
        if (self._in_frame or self._await_lrc) and now - self._last_rx > self.inter_byte_timeout:
            self._reset_rx()
        self._last_rx = now
        frames: list[bytes] = []
        for b in data:
            if self._await_lrc:
                self._await_lrc = False
                self._in_frame = False
                payload = bytes(self._buf)
                self._buf.clear()
                if payload and b == lrc(payload):
                    if self.faults.nak_next > 0:
                        self.faults.nak_next -= 1
                        self._emit(now, bytes([NAK]))
                    else:
                        self._emit(now + self.faults.ack_delay, bytes([ACK]))
                        frames.append(payload)
                else:
                    self._emit(now, bytes([NAK]))
            elif b == STX:
                self._in_frame = True
                self._buf.clear()
            elif b in (ACK, NAK, EOT):
                self._reset_rx()
                self._control(b, now)
            elif self._in_frame:
                if b == ETX:
                    self._await_lrc = True
                elif 0x20 <= b <= 0x7E and len(self._buf) < 4096:
                    self._buf.append(b)
                else:
                    self._reset_rx()
                    self._emit(now, bytes([NAK]))
        return frames

    def _reset_rx(self) -> None:
        self._in_frame = False
        self._await_lrc = False
        self._buf.clear()

    def _control(self, b: int, now: float) -> None:
        if self._inflight is None:
            return  # stray ACK/NAK, or the terminal's EOT: nothing of ours to settle
        if b == ACK:
            self._inflight = None
            self._ack_deadline = None
            self._start_next(now)
        elif b == NAK:
            self._retry(now)

    # -- send ----------------------------------------------------------------------
    def send(self, payload: bytes, now: float) -> None:
        """Queue an answer frame; it goes out when the one before is ACKed or given up."""
        if self.faults.silent:
            return
        self._queue.append(payload)
        if self._inflight is None:
            self._start_next(now)

    def _start_next(self, now: float) -> None:
        if not self._queue:
            return
        self._inflight = self._queue.popleft()
        self._attempt = 0
        while self.faults.spurious_eot > 0:
            self.faults.spurious_eot -= 1
            self._emit(now, bytes([EOT]))
        self._transmit(now)

    def _transmit(self, now: float) -> None:
        assert self._inflight is not None
        self._attempt += 1
        payload = self._inflight
        frame = bytearray([STX]) + payload + bytes([ETX, lrc(payload)])
        if self._attempt in self.faults.bad_lrc_on:
            frame[-1] ^= 0xA5
        if self._attempt in self.faults.drop_byte_on:
            del frame[len(frame) // 2]
        self.frames_sent += 1
        self._emit(now, bytes(frame))
        self._ack_deadline = now + self.ack_timeout

    def _retry(self, now: float) -> None:
        if self._attempt >= self.max_attempts:
            self.send_failures += 1
            self._emit(now, bytes([EOT]))
            self._inflight = None
            self._ack_deadline = None
            self._start_next(now)
        else:
            self._transmit(now)

    # -- timers and output -----------------------------------------------------------
    def tick(self, now: float) -> None:
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._retry(now)

    def next_deadline(self) -> float | None:
        times = [u.at for u in self._units]
        if self._ack_deadline is not None:
            times.append(self._ack_deadline)
        return min(times) if times else None

    def _emit(self, at: float, data: bytes) -> None:
        self._units.append(Unit(at, data))

    def due(self, now: float) -> bytes:
        """Bytes to write now (in order of creation among the units that are due)."""
        ready = [u for u in self._units if u.at <= now]
        self._units = [u for u in self._units if u.at > now]
        return b"".join(u.data for u in ready)

    @property
    def idle(self) -> bool:
        return self._inflight is None and not self._queue and not self._units
