"""APDU and serial-frame traces: record a hardware dialogue to JSONL and replay it.

A trace is what a hardware-in-the-loop run leaves behind so a regression test
can play the same card dialogue back without the hardware. Three pieces:

* :class:`TraceWriter` writes the lines (any thread; one line per event,
  flushed at once so a crash keeps what happened).
* :class:`RecordingTransport` wraps any :class:`~drivers.transport.CardTransport`
  and writes every exchange through a ``TraceWriter``, masking card data.
* :class:`ReplayTransport` is a ``CardTransport`` that answers each recorded
  C-APDU with its recorded R-APDU and raises :class:`ReplayMismatch` naming the
  step when the dialogue asks something else.

Line format (UTF-8 JSON, one object per line, keys in this order)::

    {"kind": "meta", "t": 0.0, ...free JSON fields...}
    {"kind": "card", "t": 0.000012, "atr": "3B68...", "contactless": false, "reader": "..."}
    {"kind": "apdu", "t": 0.000130, "step": 1, "dir": "out", "contactless": false,
     "hex": "00A40400..."}
    {"kind": "apdu", "t": 0.000310, "step": 1, "dir": "in", "hex": "6F1A...", "sw": "9000"}
    {"kind": "apdu", "t": 0.000901, "step": 7, "dir": "in", "error": "CardRemovedError",
     "message": "card removed"}
    {"kind": "serial", "t": 0.002000, "dir": "out", "device": "pinpad", "hex": "02...03..."}

``t`` is seconds since the writer started (monotonic clock). ``dir`` is seen
from the terminal: ``out`` = terminal to device (C-APDU, frame sent), ``in`` =
device to terminal (R-APDU data + SW, frame received). ``step`` numbers the
exchanges of one card session from 1; a ``card`` line starts a new session
(a trace may hold several; :class:`ReplayTransport` picks one). An ``in`` line
with ``error`` instead of ``hex`` records a transport failure (the name is a
:mod:`drivers.errors` class), and replays as that error. ``meta`` lines carry
whatever the recorder wants to keep (the transaction the card was read for, so
a replay can send the same GPO and GENERATE AC data).

Masking versus replay
---------------------
A trace must never hold a cardholder's PAN or track data, yet it has to replay
into a valid dialogue, so stars are not an option. :class:`CardDataMasker`
learns card numbers from the card's answers (tags 5A, 57, 9F6B, 56, parsed as
TLV; a byte scan for 5A/57 when the answer is not valid TLV) and writes in their
place the substitutes of :func:`drivers.masking.substitute_pan` /
:func:`~drivers.masking.substitute_track2`: same length, same BIN and last four
digits, filler digits in the middle fixed up to pass Luhn, discretionary track
data zeroed. Substitutes have the same length, so TLV lengths stay right. Every
later byte string (C-APDUs too) has the learnt numbers replaced in BCD and ASCII,
so a command that echoes the PAN is recorded with the substitute, which is what
the kernel sends when it reads the substitute back in a replay. The replayed
dialogue therefore reads a valid-format, different PAN that masks to the same
``622588******0019``. Serial frames get the ASCII digit-run substitution only
(13-19 digits); callers redact PIN blocks before calling
:meth:`TraceWriter.serial`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

from drivers import errors as _errors
from drivers.errors import CardError, DriverError, ReaderError
from drivers.masking import substitute_pan, substitute_track2
from drivers.transport import CardTransport, transmit
from iso8583 import tlv
from iso8583.errors import Iso8583Error

__all__ = [
    "TRACE_VERSION",
    "CardDataMasker",
    "Direction",
    "RecordingTransport",
    "ReplayMismatch",
    "ReplayTransport",
    "TraceFormatError",
    "TraceWriter",
    "read_trace",
]

TRACE_VERSION = 1
Direction: TypeAlias = Literal["out", "in"]
JsonDict: TypeAlias = dict[str, Any]


class ReplayMismatch(CardError):  # noqa: N818 - the name the trace format documents
    """The dialogue sent a C-APDU the trace did not record at this step."""


class TraceFormatError(DriverError):
    """A trace file cannot be read (bad JSON, missing fields, no such session)."""


# --- masking ----------------------------------------------------------------------

_PAN_ASCII_RE = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")
# Raw scan for answers that are not valid TLV: tag, length, BCD digits.
_RAW_5A_RE = re.compile(rb"\x5a([\x06-\x0a])", re.DOTALL)
_RAW_57_RE = re.compile(rb"\x57([\x08-\x13])", re.DOTALL)


def _bcd_text(value: bytes) -> str:
    return value.hex().upper()


class CardDataMasker:
    """Replaces PANs and track data in APDUs by replay-safe substitutes (see module doc)."""

    def __init__(self) -> None:
        self._subs: dict[bytes, bytes] = {}

    @property
    def learnt(self) -> int:
        """How many byte patterns are being replaced."""
        return len(self._subs)

    def command(self, apdu: bytes) -> bytes:
        """Mask a C-APDU: only numbers already learnt from the card are replaced."""
        return self._apply(apdu)

    def response(self, data: bytes) -> bytes:
        """Learn card numbers from an R-APDU's data and return it masked."""
        if data:
            try:
                items = tlv.decode(data)
            except Iso8583Error:
                self._scan_raw(data)
            else:
                self._learn_items(items)
            for m in _PAN_ASCII_RE.finditer(data):
                self._learn_pan(m.group(0).decode("ascii"))
        return self._apply(data)

    def text(self, data: bytes) -> bytes:
        """Mask free bytes (serial frames): ASCII PAN-like digit runs and learnt numbers."""
        for m in _PAN_ASCII_RE.finditer(data):
            self._learn_pan(m.group(0).decode("ascii"))
        return self._apply(data)

    # -- learning --------------------------------------------------------------

    def _learn_items(self, items: list[tlv.Tlv]) -> None:
        for item in items:
            if item.children:
                self._learn_items(list(item.children))
            elif item.tag == 0x5A:
                self._learn_bcd_pan(item.value)
            elif item.tag in (0x57, 0x9F6B):
                self._learn_track2(item.value)
            elif item.tag in (0x56, 0x9F1F, 0x9F20):
                self._learn_ascii_track(item.value)

    def _learn_bcd_pan(self, value: bytes) -> None:
        digits = _bcd_text(value).rstrip("F")
        if digits.isdigit() and 12 <= len(digits) <= 19:
            self._learn_pan(digits)

    def _learn_track2(self, value: bytes) -> None:
        text = _bcd_text(value)
        padded = text.endswith("F")
        body = text.rstrip("F")
        if "D" not in body:
            return
        pan = body.split("D", 1)[0]
        if not pan.isdigit() or not 12 <= len(pan) <= 19:
            return
        sub = substitute_track2(body)
        if not all(c in "0123456789D" for c in sub):
            return
        self._add(value, bytes.fromhex(sub + ("F" * (len(text) - len(body)) if padded else "")))
        self._learn_pan(pan)

    def _learn_ascii_track(self, value: bytes) -> None:
        for m in _PAN_ASCII_RE.finditer(value):
            self._learn_pan(m.group(0).decode("ascii"))
        # Track 1 discretionary data (after ^name^YYMMSSS) is verification data: zero it.
        parts = value.split(b"^")
        if len(parts) == 3 and len(parts[2]) > 7:
            tail = bytes(b if not 0x30 <= b <= 0x39 else 0x30 for b in parts[2][7:])
            self._add(value, b"^".join((parts[0], parts[1], parts[2][:7] + tail)))

    def _learn_pan(self, pan: str) -> None:
        sub = substitute_pan(pan)
        self._add(pan.encode("ascii"), sub.encode("ascii"))
        if len(pan) % 2 == 0:
            self._add(bytes.fromhex(pan), bytes.fromhex(sub))
        else:
            self._add(bytes.fromhex(pan + "F"), bytes.fromhex(sub + "F"))
            # inside track 2 an odd PAN shares its last byte with the separator
            self._add(bytes.fromhex(pan[:-1]), bytes.fromhex(sub[:-1]))

    def _scan_raw(self, data: bytes) -> None:
        for m in _RAW_5A_RE.finditer(data):
            start = m.end()
            self._learn_bcd_pan(data[start:start + m.group(1)[0]])
        for m in _RAW_57_RE.finditer(data):
            start = m.end()
            self._learn_track2(data[start:start + m.group(1)[0]])

    def _add(self, real: bytes, sub: bytes) -> None:
        if real != sub and len(real) == len(sub) and len(real) >= 6:
            self._subs[real] = sub

    def _apply(self, data: bytes) -> bytes:
        # Longest patterns first so a whole track 2 wins over the PAN inside it.
        for real in sorted(self._subs, key=len, reverse=True):
            if real in data:
                data = data.replace(real, self._subs[real])
        return data


# --- writing ----------------------------------------------------------------------


class TraceWriter:
    """Writes trace lines (module doc) to a file path or an open text stream.

    Safe to share between threads (a card reader and a PIN pad writing into one
    trace). Each line is flushed when written.
    """

    def __init__(self, sink: str | PathLike[str] | IO[str], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(sink, (str, PathLike)):
            path = Path(sink)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream: IO[str] = path.open("w", encoding="utf-8")
            self._owned = True
            self.path: Path | None = path
        else:
            self._stream = sink
            self._owned = False
            self.path = None
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._step = 0
        self._closed = False
        self.masker = CardDataMasker()

    def _write(self, kind: str, fields: JsonDict) -> None:
        with self._lock:
            if self._closed:
                return
            line = {"kind": kind, "t": round(self._clock() - self._t0, 6), **fields}
            self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._stream.flush()

    def meta(self, **info: Any) -> None:
        """Record free information (JSON-serialisable values) for whoever replays."""
        if "v" not in info:
            info = {"v": TRACE_VERSION, **info}
        self._write("meta", info)

    def card(self, atr: bytes, contactless: bool, reader: str | None = None) -> None:
        """Start a card session: its ATR and interface. Steps restart at 1."""
        with self._lock:
            self._step = 0
        fields: JsonDict = {"atr": atr.hex().upper(), "contactless": contactless}
        if reader is not None:
            fields["reader"] = reader
        self._write("card", fields)

    def apdu(self, command: bytes, data: bytes | None = None, sw: int | None = None, *,
             contactless: bool = False, error: BaseException | None = None,
             masked: bool = False) -> int:
        """Record one exchange (``out`` then ``in`` line); returns its step number.

        Give ``data`` and ``sw`` for an answer or ``error`` for a transport
        failure. Unless ``masked`` is set the bytes go through this writer's
        :class:`CardDataMasker` first.
        """
        with self._lock:
            self._step += 1
            step = self._step
        if not masked:
            command = self.masker.command(command)
            data = self.masker.response(data) if data is not None else None
        self._write("apdu", {"step": step, "dir": "out", "contactless": contactless,
                             "hex": command.hex().upper()})
        if error is not None:
            self._write("apdu", {"step": step, "dir": "in", "error": type(error).__name__,
                                 "message": str(error)})
        else:
            self._write("apdu", {"step": step, "dir": "in",
                                 "hex": (data or b"").hex().upper(),
                                 "sw": f"{(sw or 0) & 0xFFFF:04X}"})
        return step

    def serial(self, direction: Direction, data: bytes, *, device: str = "pinpad") -> None:
        """Record one serial frame (or raw chunk) sent (``out``) or received (``in``).

        ASCII digit runs that look like PANs are substituted; redact PIN blocks
        and keys before calling.
        """
        if direction not in ("out", "in"):
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
        self._write("serial", {"dir": direction, "device": device,
                               "hex": self.masker.text(data).hex().upper()})

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owned:
                self._stream.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingTransport:
    """A CardTransport that passes everything to ``inner`` and writes it to a trace."""

    def __init__(self, inner: CardTransport, sink: TraceWriter | str | PathLike[str] | IO[str],
                 *, reader: str | None = None) -> None:
        self.inner = inner
        self._owns_writer = not isinstance(sink, TraceWriter)
        self.writer = sink if isinstance(sink, TraceWriter) else TraceWriter(sink)
        self.writer.card(inner.atr, inner.contactless, reader)

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def contactless(self) -> bool:
        return self.inner.contactless

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        try:
            data, sw = transmit(self.inner, apdu)
        except DriverError as exc:
            self.writer.apdu(apdu, error=exc, contactless=self.inner.contactless)
            raise
        self.writer.apdu(apdu, data, sw, contactless=self.inner.contactless)
        return data, sw

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._owns_writer:
                self.writer.close()


# --- reading and replay ----------------------------------------------------------


def read_trace(path: str | PathLike[str]) -> list[JsonDict]:
    """All lines of a trace file, parsed; :class:`TraceFormatError` on bad content."""
    out: list[JsonDict] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"cannot read trace {path}: {exc}") from None
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"trace {path} line {n}: {exc.msg}") from None
        if not isinstance(line, dict) or not isinstance(line.get("kind"), str):
            raise TraceFormatError(f"trace {path} line {n}: not a trace record")
        out.append(line)
    return out


@dataclass(frozen=True)
class _Step:
    n: int
    command: bytes
    data: bytes
    sw: int
    error: str | None
    message: str


def _hexfield(line: Mapping[str, Any], key: str, where: str) -> bytes:
    value = line.get(key)
    if not isinstance(value, str):
        raise TraceFormatError(f"{where}: missing {key!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TraceFormatError(f"{where}: {key!r} is not hex") from None


def _short(data: bytes) -> str:
    text = data.hex().upper()
    return text if len(text) <= 48 else text[:44] + "..."


class ReplayTransport:
    """A CardTransport that plays one card session of a recorded trace back.

    ``session`` picks the n-th ``card`` line of the file (0 = first). Each
    :meth:`transmit` must send exactly the C-APDU recorded at that step; the
    recorded answer (or error) comes back. Nothing sleeps: replay runs at full
    speed.
    """

    def __init__(self, trace_path: str | PathLike[str], *, session: int = 0) -> None:
        self.path = Path(trace_path)
        lines = read_trace(self.path)
        self.meta: dict[str, Any] = {}
        sessions: list[tuple[JsonDict, list[JsonDict]]] = []
        for line in lines:
            kind = line["kind"]
            if kind == "meta":
                self.meta.update({k: v for k, v in line.items() if k not in ("kind", "t")})
            elif kind == "card":
                sessions.append((line, []))
            elif kind == "apdu" and sessions:
                sessions[-1][1].append(line)
        if not 0 <= session < len(sessions):
            raise TraceFormatError(f"trace {self.path} has {len(sessions)} card session(s); "
                                   f"no session {session}")
        head, apdus = sessions[session]
        where = f"trace {self.path.name}"
        self._atr = _hexfield(head, "atr", where)
        self._contactless = bool(head.get("contactless", False))
        self.steps = self._pair(apdus, where)
        self._pos = 0
        self._closed = False

    @staticmethod
    def _pair(lines: list[JsonDict], where: str) -> list[_Step]:
        steps: list[_Step] = []
        it: Iterator[JsonDict] = iter(lines)
        for out in it:
            n = out.get("step")
            if out.get("dir") != "out":
                raise TraceFormatError(f"{where} step {n}: answer without a command")
            command = _hexfield(out, "hex", f"{where} step {n}")
            answer = next(it, None)
            if answer is None or answer.get("dir") != "in" or answer.get("step") != n:
                raise TraceFormatError(f"{where} step {n}: command without its answer")
            error = answer.get("error")
            if error is not None:
                steps.append(_Step(len(steps) + 1, command, b"", 0, str(error),
                                   str(answer.get("message", ""))))
                continue
            data = _hexfield(answer, "hex", f"{where} step {n}")
            sw_text = answer.get("sw")
            try:
                sw = int(str(sw_text), 16)
            except ValueError:
                sw = -1
            if not 0 <= sw <= 0xFFFF:
                raise TraceFormatError(f"{where} step {n}: bad sw {sw_text!r}")
            steps.append(_Step(len(steps) + 1, command, data, sw, None, ""))
        return steps

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def contactless(self) -> bool:
        return self._contactless

    @property
    def finished(self) -> bool:
        """True when every recorded exchange has been replayed."""
        return self._pos >= len(self.steps)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self._closed:
            raise ReaderError(f"replay of {self.path.name} is closed")
        if self._pos >= len(self.steps):
            raise ReplayMismatch(f"replay {self.path.name}: trace ended after step "
                                 f"{len(self.steps)} but the dialogue sent {_short(apdu)}")
        step = self.steps[self._pos]
        if apdu != step.command:
            raise ReplayMismatch(f"replay {self.path.name} step {step.n}: expected C-APDU "
                                 f"{_short(step.command)}, got {_short(apdu)}")
        self._pos += 1
        if step.error is not None:
            raise _error_class(step.error)(step.message or f"recorded {step.error}")
        return step.data, step.sw

    def assert_finished(self) -> None:
        """Raise :class:`ReplayMismatch` when recorded exchanges were not replayed."""
        if not self.finished:
            step = self.steps[self._pos]
            raise ReplayMismatch(f"replay {self.path.name}: dialogue stopped before step "
                                 f"{step.n} of {len(self.steps)}")

    def close(self) -> None:
        self._closed = True


def _error_class(name: str) -> type[DriverError]:
    cls = getattr(_errors, name, None)
    with suppress(TypeError):
        if isinstance(cls, type) and issubclass(cls, DriverError):
            return cls
    return ReaderError
