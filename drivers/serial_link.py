"""STX/ETX/LRC serial framing with ACK/NAK retries: a sans-I/O protocol and a pyserial link.

Wire format (both directions, DESIGN.md section 4)::

    STX(02) | payload | ETX(03) | LRC          LRC = XOR of payload bytes and ETX

The receiver answers a good frame with ACK (06) and a bad one with NAK (15).
The sender keeps one frame in flight (stop and wait). A NAK or no ACK within
``ack_timeout`` is a failed attempt and the frame is sent again; after
``max_attempts`` failed attempts (default 3: the first transmission and two
retries, so "EOT after 3 NAKs") the sender writes EOT (04) and the send fails.

Payload rule (no escaping): a payload is 1..``MAX_PAYLOAD`` bytes of printable
ASCII (0x20..0x7E). Binary data (keys, PIN blocks, GB18030 text) travels as hex
in the layer above. So STX, ETX, ACK, NAK and EOT can never appear inside a
payload, and a receiver can resynchronise on any STX. The LRC byte itself may
take any value; it is always the single byte after ETX.

Receiving rules: bytes outside a frame that are not ACK/NAK/EOT are skipped as
garbage; an STX inside a frame restarts the frame (the earlier one was cut
short); a control byte inside a frame aborts the frame and is then handled as a
control byte; a non-printable byte inside a frame or a bad LRC gets a NAK; a
partial frame with no new byte for ``inter_byte_timeout`` is dropped. An EOT
from the peer only resets the receive side (the peer gave up on its frame); it
never fails our own frame in flight. Nothing in here raises on input bytes.

:class:`LinkProtocol` does no I/O and reads no clock: the caller passes ``now``
(seconds, any monotonic origin) into every call and asks for
:meth:`LinkProtocol.next_deadline`. :class:`SerialLink` is the thin blocking
adapter over any pyserial URL (``/dev/ttyUSB0``, a pty path,
``socket://host:port``, ``loop://``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

import serial

from drivers.errors import SerialLinkError

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
EOT = 0x04
ACK = 0x06
NAK = 0x15
CONTROL_BYTES = frozenset({EOT, ACK, NAK})
MAX_PAYLOAD = 2048


class PayloadError(SerialLinkError):
    """A payload handed to :meth:`LinkProtocol.send` breaks the payload rule (local misuse)."""


class LinkBusyError(SerialLinkError):
    """:meth:`LinkProtocol.send` was called while an earlier frame still waits for its ACK."""


class LinkTimeoutError(SerialLinkError):
    """No frame arrived from the peer within the time allowed."""


class LinkClosedError(SerialLinkError):
    """The port was closed or went away."""


def lrc(payload: bytes) -> int:
    """The LRC of a frame carrying ``payload``: XOR of the payload bytes and ETX."""
    value = ETX
    for b in payload:
        value ^= b
    return value


def check_payload(payload: bytes) -> None:
    """Raise :class:`PayloadError` unless ``payload`` obeys the payload rule."""
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise PayloadError(f"payload length {len(payload)} outside 1..{MAX_PAYLOAD}")
    for pos, b in enumerate(payload):
        if not 0x20 <= b <= 0x7E:
            raise PayloadError(f"payload byte 0x{b:02X} at pos {pos} is not printable ASCII")


def encode_frame(payload: bytes) -> bytes:
    """``STX payload ETX LRC`` for a payload that obeys the payload rule."""
    check_payload(payload)
    return bytes([STX]) + payload + bytes([ETX, lrc(payload)])


# --- events -------------------------------------------------------------------
@dataclass(frozen=True)
class FrameReceived:
    """A good frame arrived and was ACKed."""

    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class BadFrame:
    """A damaged frame arrived and was NAKed (``payload`` is what was read)."""

    reason: str
    payload: bytes = field(repr=False)
    lrc: int | None = None


@dataclass(frozen=True)
class FrameAcked:
    """The peer ACKed our frame in flight after ``attempts`` transmissions."""

    attempts: int


@dataclass(frozen=True)
class FrameRetried:
    """Our frame in flight was sent again after a NAK or an ACK timeout."""

    attempt: int  # number of the transmission just made (2, 3, ...)
    reason: str  # "nak" or "ack-timeout"


@dataclass(frozen=True)
class SendFailed:
    """Our frame failed ``attempts`` times; EOT was written and the frame dropped."""

    attempts: int
    reason: str


@dataclass(frozen=True)
class ControlReceived:
    """A bare control byte arrived: an ACK or NAK nobody waited for, or an EOT."""

    byte: int


@dataclass(frozen=True)
class GarbageSkipped:
    """Bytes outside any frame (or a dropped partial frame) were thrown away."""

    count: int


LinkEvent = (FrameReceived | BadFrame | FrameAcked | FrameRetried | SendFailed
             | ControlReceived | GarbageSkipped)


class UnitKind(Enum):
    """What one outgoing unit is, so adapters can trace and fault-inject per unit."""

    FRAME = "frame"
    ACK = "ack"
    NAK = "nak"
    EOT = "eot"


@dataclass(frozen=True)
class Outgoing:
    """One unit to write: a whole frame or one control byte."""

    kind: UnitKind
    data: bytes = field(repr=False)
    attempt: int = 0  # for frames: 1 for the first transmission, 2 for the first retry, ...


class _Rx(Enum):
    IDLE = 0
    IN_FRAME = 1
    AWAIT_LRC = 2


class LinkProtocol:
    """Sans-I/O state machine of one end of the link.

    Feed received bytes with :meth:`receive_data`, start a frame with
    :meth:`send`, call :meth:`tick` when :meth:`next_deadline` has passed, and
    after every call write :meth:`outgoing` (whole units, in order) to the wire.
    """

    def __init__(self, *, ack_timeout: float = 0.5, max_attempts: int = 3,
                 inter_byte_timeout: float = 0.2,
                 frame_filter: Callable[[bytes], bool] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.ack_timeout = ack_timeout
        self.max_attempts = max_attempts
        self.inter_byte_timeout = inter_byte_timeout
        # A filter returning False NAKs a good frame as if its LRC were bad (fault injection).
        self.frame_filter = frame_filter
        self._rx = _Rx.IDLE
        self._buf = bytearray()
        self._last_byte_at = 0.0
        self._garbage = 0
        self._inflight: bytes | None = None
        self._attempts = 0
        self._ack_deadline: float | None = None
        self._out: deque[Outgoing] = deque()

    # -- sending -----------------------------------------------------------------
    @property
    def awaiting_ack(self) -> bool:
        """True while a frame of ours waits for its ACK."""
        return self._inflight is not None

    def send(self, payload: bytes, now: float) -> bytes:
        """Start sending ``payload``; return the frame bytes to write now.

        Retransmissions and the final EOT come later through :meth:`outgoing`.
        Raises :class:`PayloadError` or :class:`LinkBusyError` on misuse.
        """
        if self._inflight is not None:
            raise LinkBusyError("a frame is already waiting for its ACK")
        frame = encode_frame(payload)
        self._inflight = frame
        self._attempts = 1
        self._ack_deadline = now + self.ack_timeout
        return frame

    def _fail_attempt(self, reason: str, now: float, events: list[LinkEvent]) -> None:
        assert self._inflight is not None
        if self._attempts >= self.max_attempts:
            events.append(SendFailed(self._attempts, reason))
            self._out.append(Outgoing(UnitKind.EOT, bytes([EOT])))
            self._inflight = None
            self._ack_deadline = None
            return
        self._attempts += 1
        self._out.append(Outgoing(UnitKind.FRAME, self._inflight, self._attempts))
        self._ack_deadline = now + self.ack_timeout
        events.append(FrameRetried(self._attempts, reason))

    # -- receiving ---------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[LinkEvent]:
        """Consume received bytes; return the events they caused (never raises)."""
        events: list[LinkEvent] = []
        if data and self._rx is not _Rx.IDLE and now - self._last_byte_at > self.inter_byte_timeout:
            self._drop_partial(events)
        for b in data:
            self._byte(b, now, events)
        if data:
            self._last_byte_at = now
        self._flush_garbage(events)
        return events

    def _byte(self, b: int, now: float, events: list[LinkEvent]) -> None:
        if self._rx is _Rx.AWAIT_LRC:
            self._end_frame(b, events)
            return
        if b == STX:
            if self._rx is _Rx.IN_FRAME:
                self._garbage += 1 + len(self._buf)  # cut-short frame: resync on this STX
            self._flush_garbage(events)
            self._rx = _Rx.IN_FRAME
            self._buf.clear()
            return
        if b in CONTROL_BYTES:
            if self._rx is _Rx.IN_FRAME:
                self._garbage += 1 + len(self._buf)
                self._rx = _Rx.IDLE
                self._buf.clear()
            self._flush_garbage(events)
            self._control(b, now, events)
            return
        if self._rx is _Rx.IDLE:
            self._garbage += 1
            return
        # inside a frame
        if b == ETX:
            self._rx = _Rx.AWAIT_LRC
            return
        if not 0x20 <= b <= 0x7E or len(self._buf) >= MAX_PAYLOAD:
            payload = bytes(self._buf)
            self._rx = _Rx.IDLE
            self._buf.clear()
            self._out.append(Outgoing(UnitKind.NAK, bytes([NAK])))
            events.append(BadFrame("bad payload byte" if len(payload) < MAX_PAYLOAD
                                   else "payload too long", payload))
            return
        self._buf.append(b)

    def _end_frame(self, got: int, events: list[LinkEvent]) -> None:
        payload = bytes(self._buf)
        self._rx = _Rx.IDLE
        self._buf.clear()
        if not payload:
            self._out.append(Outgoing(UnitKind.NAK, bytes([NAK])))
            events.append(BadFrame("empty frame", payload, got))
        elif got != lrc(payload):
            self._out.append(Outgoing(UnitKind.NAK, bytes([NAK])))
            events.append(BadFrame("bad LRC", payload, got))
        elif self.frame_filter is not None and not self.frame_filter(payload):
            self._out.append(Outgoing(UnitKind.NAK, bytes([NAK])))
            events.append(BadFrame("rejected by filter", payload, got))
        else:
            self._out.append(Outgoing(UnitKind.ACK, bytes([ACK])))
            events.append(FrameReceived(payload))

    def _control(self, b: int, now: float, events: list[LinkEvent]) -> None:
        if b == ACK and self._inflight is not None:
            events.append(FrameAcked(self._attempts))
            self._inflight = None
            self._ack_deadline = None
        elif b == NAK and self._inflight is not None:
            self._fail_attempt("nak", now, events)
        else:
            events.append(ControlReceived(b))

    def _drop_partial(self, events: list[LinkEvent]) -> None:
        self._garbage += 1 + len(self._buf) + (1 if self._rx is _Rx.AWAIT_LRC else 0)
        self._rx = _Rx.IDLE
        self._buf.clear()
        self._flush_garbage(events)

    def _flush_garbage(self, events: list[LinkEvent]) -> None:
        if self._garbage:
            events.append(GarbageSkipped(self._garbage))
            self._garbage = 0

    # -- timers --------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has something to do, or None."""
        deadlines = []
        if self._ack_deadline is not None:
            deadlines.append(self._ack_deadline)
        if self._rx is not _Rx.IDLE:
            deadlines.append(self._last_byte_at + self.inter_byte_timeout)
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[LinkEvent]:
        """Run the timers that are due at ``now``."""
        events: list[LinkEvent] = []
        if self._rx is not _Rx.IDLE and now - self._last_byte_at > self.inter_byte_timeout:
            self._drop_partial(events)
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._fail_attempt("ack-timeout", now, events)
        return events

    # -- output --------------------------------------------------------------------
    def outgoing(self) -> list[Outgoing]:
        """Units produced by the last calls (ACK, NAK, retransmissions, EOT), to write in order."""
        units = list(self._out)
        self._out.clear()
        return units

    def data_to_send(self) -> bytes:
        """:meth:`outgoing` joined into one byte string."""
        return b"".join(u.data for u in self.outgoing())


# --- tracing ----------------------------------------------------------------------
class SerialTraceSink(Protocol):
    """Anything that records serial traffic (``drivers.trace.TraceWriter`` fits)."""

    def serial(self, direction: Literal["out", "in"], data: bytes) -> None:
        """Record one unit: a frame or a control byte, ``out`` = sent by us, ``in`` = received."""
        ...


Redactor = Callable[[bytes], bytes]


def _traced_frame(payload: bytes, good: bool, got_lrc: int | None, redact: Redactor) -> bytes:
    # The trace carries the redacted payload; a good frame gets an LRC that
    # matches the redacted payload so the trace stays well-formed.
    shown = redact(payload)
    tail = lrc(shown) if good else (got_lrc if got_lrc is not None else 0)
    return bytes([STX]) + shown + bytes([ETX, tail])


def _no_redaction(payload: bytes) -> bytes:
    return payload


# --- blocking adapter ---------------------------------------------------------------
class Port(Protocol):
    """The part of a pyserial port the link uses (``serial.Serial`` and URL handlers fit)."""

    @property
    def in_waiting(self) -> int: ...

    @property
    def is_open(self) -> bool: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class SerialLink:
    """A blocking, thread-safe link over a pyserial port.

    A reader thread feeds received bytes and timers into a :class:`LinkProtocol`
    and writes its ACK/NAK/retransmissions; :meth:`send` blocks until the frame
    is ACKed (or raises :class:`SerialLinkError` after EOT) and
    :meth:`receive` returns the next frame from the peer.
    """

    def __init__(self, port: Port, *, ack_timeout: float = 0.5,
                 max_attempts: int = 3, inter_byte_timeout: float = 0.2,
                 trace: SerialTraceSink | None = None, redact: Redactor | None = None) -> None:
        self._port = port
        self._proto = LinkProtocol(ack_timeout=ack_timeout, max_attempts=max_attempts,
                                   inter_byte_timeout=inter_byte_timeout)
        self._trace = trace
        self._redact: Redactor = redact or _no_redaction
        self._cond = threading.Condition()
        self._inbox: deque[bytes] = deque()
        self._send_result: FrameAcked | SendFailed | None = None
        self._eot_count = 0
        self._retries = 0
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._reader, name="serial-link", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, url: str, *, baudrate: int = 9600, ack_timeout: float = 0.5,
             max_attempts: int = 3, trace: SerialTraceSink | None = None,
             redact: Redactor | None = None) -> SerialLink:
        """Open ``url`` with pyserial and start the link (baud rate means nothing on ptys)."""
        try:
            port: Port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SerialLinkError(f"cannot open serial port {url}: {exc}") from exc
        return cls(port, ack_timeout=ack_timeout, max_attempts=max_attempts,
                   trace=trace, redact=redact)

    def set_redactor(self, redact: Redactor) -> None:
        """Use ``redact`` on payloads before they reach the trace."""
        self._redact = redact

    @property
    def eot_count(self) -> int:
        """How many bare EOTs the peer has sent (a spurious EOT is logged, not fatal)."""
        return self._eot_count

    @property
    def retries(self) -> int:
        """How many frames of ours have been resent (after a NAK or an ACK timeout)."""
        return self._retries

    # -- reader thread -------------------------------------------------------------
    def _reader(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial internals after close() from another thread.
                with self._cond:
                    if not self._closed:
                        self._error = exc
                        log.warning("serial port failed: %s", exc)
                    self._closed = True
                    self._cond.notify_all()
                return
            now = time.monotonic()
            with self._cond:
                events = self._proto.receive_data(data, now) if data else []
                events += self._proto.tick(now)
                self._handle(events)
                self._flush()

    def _handle(self, events: list[LinkEvent]) -> None:
        for ev in events:
            if isinstance(ev, FrameReceived):
                self._trace_rx(_traced_frame(ev.payload, True, None, self._redact))
                self._inbox.append(ev.payload)
            elif isinstance(ev, BadFrame):
                self._trace_rx(_traced_frame(ev.payload, False, ev.lrc, self._redact))
                log.info("NAK sent: %s", ev.reason)
            elif isinstance(ev, FrameAcked | SendFailed):
                self._trace_rx(bytes([ACK]) if isinstance(ev, FrameAcked) else b"")
                self._send_result = ev
            elif isinstance(ev, FrameRetried):
                self._retries += 1
                log.info("frame resent (attempt %d, %s)", ev.attempt, ev.reason)
                if ev.reason == "nak":
                    self._trace_rx(bytes([NAK]))
            elif isinstance(ev, ControlReceived):
                self._trace_rx(bytes([ev.byte]))
                if ev.byte == EOT:
                    self._eot_count += 1
                    log.info("EOT received from peer")
            else:
                log.debug("skipped %d garbage bytes", ev.count)
        if events:
            self._cond.notify_all()

    def _trace_rx(self, data: bytes) -> None:
        if self._trace is not None and data:
            self._trace.serial("in", data)

    def _write(self, data: bytes, traced: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise LinkClosedError(f"serial write failed: {exc}") from exc
        if self._trace is not None:
            self._trace.serial("out", traced)

    def _flush(self) -> None:
        for unit in self._proto.outgoing():
            if unit.kind is UnitKind.FRAME:
                traced = _traced_frame(unit.data[1:-2], True, None, self._redact)
            else:
                traced = unit.data
            try:
                self._write(unit.data, traced)
            except LinkClosedError as exc:
                self._error = exc
                self._closed = True

    # -- public API ------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        """Send one frame and wait for its ACK.

        Raises :class:`SerialLinkError` after ``max_attempts`` failed attempts
        (EOT has then been written) or when the port is gone.
        """
        with self._cond:
            self._check_open()
            # Another thread (a cancel) may hold the line: wait for its ACK first.
            limit = time.monotonic() + self._proto.ack_timeout * (self._proto.max_attempts + 1)
            while self._proto.awaiting_ack:
                if not self._cond.wait(timeout=max(0.0, limit - time.monotonic())):
                    raise SerialLinkError("link stayed busy")
                self._check_open()
            self._send_result = None
            frame = self._proto.send(payload, time.monotonic())
            self._write(frame, _traced_frame(payload, True, None, self._redact))
            result = self._wait_send_result()
        if isinstance(result, SendFailed):
            raise SerialLinkError(
                f"no ACK after {result.attempts} attempts ({result.reason}); EOT sent")

    def _wait_send_result(self) -> FrameAcked | SendFailed:
        # Called with the condition held; the reader thread runs the ACK timer
        # (its reads time out every 50 ms), so this wait always ends.
        while True:
            result = self._send_result
            if result is not None:
                self._send_result = None
                return result
            self._check_open()
            self._cond.wait(timeout=0.05)

    def receive(self, timeout: float) -> bytes:
        """The next frame from the peer; :class:`LinkTimeoutError` if none within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._inbox:
                self._check_open()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LinkTimeoutError(f"no frame within {timeout:.1f} s")
                self._cond.wait(timeout=left)
            return self._inbox.popleft()

    def drain(self) -> int:
        """Throw away frames already received (stale answers); return how many."""
        with self._cond:
            n = len(self._inbox)
            self._inbox.clear()
            return n

    def _check_open(self) -> None:
        if self._closed:
            reason = f": {self._error}" if self._error is not None else ""
            raise LinkClosedError(f"serial link closed{reason}")

    def close(self) -> None:
        """Stop the reader thread and close the port (idempotent)."""
        with self._cond:
            already = self._closed
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        if not already or self._port.is_open:
            try:
                self._port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("closing port: %s", exc)

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
