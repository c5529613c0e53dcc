"""ISO 8583 message traces: one masked JSONL line per frame, and the tools that read them.

The terminal's host link and the host server record every frame they send or
receive (:class:`TraceRecorder`, fed by the I/O adapters; this module opens no
file and reads no clock: both are passed in). ``pos-iso trace show`` prints a
trace as a conversation (:func:`format_conversation`), ``pos-iso trace diff``
compares two runs (:func:`diff`), and the host emulator replays a trace as a
regression test (``emulator.replay``) with the same comparison.

Line format (UTF-8 JSON, one object per line; the ``kind`` key is shared with
the APDU/serial traces of :mod:`drivers.trace`, so one file may hold both)::

    {"kind": "meta", "v": 1, "trace": "iso8583", "by": "terminal", "dialect": "cup",
     "at": "2026-12-01T12:00:00.000000"}
    {"kind": "iso", "v": 1, "t": 0.001234, "at": "2026-12-01T12:00:00.001234",
     "dir": "terminal->host", "by": "terminal", "dialect": "cup", "length": 71,
     "mti": "0200", "message": {"2": "622588******0019", "3": "000000", ...},
     "frame": "6000010000602200000000020070..."}
    {"kind": "iso", ..., "length": 40, "error": "field 4 pos 21: ...",
     "frame": "6000010000602200000000****..."}

``t`` is seconds since the recorder started (monotonic), ``at`` the wall-clock
time; ``dir`` names sender and receiver, ``by`` whose recording it is (the
terminal's link and the host see the same conversation from two ends: a reply
the host dropped is in the host's trace as nothing and in the terminal's as a
request without an answer). ``frame`` is the frame payload (TPDU, header and
message; the length prefix carries nothing and is left out) in hex, masked;
``message`` is the decoded message as :func:`iso8583.pretty.message_dict`
shows it (card data inside F55 shown from the masked frame).

Masking (:func:`mask_message`): the frame must stay decodable and replayable, so
card numbers are not starred but replaced the way the APDU traces do it
(:func:`iso8583.masking.substitute_pan` / ``substitute_track2``: same length, BIN
and last four digits, Luhn-valid, discretionary data zeroed), also inside F55
(tags 5A, 57, 9F6B); PIN blocks, keys (fields marked ``pin``/``key`` in the
dialect table), the MAC field and the other secret ICC tags become ``*`` bytes
(``2A``; digits ``0`` in numeric fields) of the same length. A frame that does not
decode keeps only its routing head (TPDU and header) in hex; every later byte is
written ``**`` (its length is all that is kept), with the decode error beside it.
Recording never raises: a frame the recorder cannot describe becomes such a line.

Comparison (:func:`comparable`, :func:`diff`): two runs of the same script differ
in the values the host or the clock pick every run; those are left out (one
place: :data:`IGNORED_FIELDS`, :data:`IGNORED_ICC_TAGS`, and the STAN and date
parts of F61/F90). F55 is compared tag by tag.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from typing import Any, Final, TypeAlias

from iso8583 import composite, tlv
from iso8583.classify import TransactionTable
from iso8583.codec import FieldValue
from iso8583.dialect import Dialect
from iso8583.dialects import get_dialect
from iso8583.direction import DIRECTIONS, HOST_TO_TERMINAL, TERMINAL_TO_HOST, Direction
from iso8583.errors import Iso8583Error
from iso8583.fields import Kind, Sensitive
from iso8583.masking import mask_pan, mask_text, substitute_pan, substitute_track2
from iso8583.message import Message
from iso8583.pretty import field_text, message_dict
from iso8583.responses import explain

__all__ = [
    "HOST_TO_TERMINAL",
    "IGNORED_FIELDS",
    "IGNORED_ICC_TAGS",
    "TERMINAL_TO_HOST",
    "TRACE_VERSION",
    "Difference",
    "Direction",
    "TraceEntry",
    "TraceFormatError",
    "TraceRecorder",
    "build_line",
    "comparable",
    "conversation",
    "describe",
    "diff",
    "dumps_line",
    "format_conversation",
    "format_differences",
    "kind_of",
    "mask_message",
    "mask_payload",
    "meta_line",
    "parse_trace",
]

TRACE_VERSION: Final = 1
JsonDict: TypeAlias = dict[str, Any]

STAR: Final = 0x2A  # "*": what a starred byte of a binary field becomes

#: Fields whose value changes every run: transmission date-time, STAN, local time
#: and date, settlement date, RRN, auth code (the host derives it from the RRN), MACs.
IGNORED_FIELDS: Final = frozenset({7, 11, 12, 13, 15, 37, 38, 64, 128})
#: ICC data (F55) tags that change every run: the cryptogram, ATC, unpredictable
#: number, issuer authentication data (ARPC), transaction date/time, sequence counter.
IGNORED_ICC_TAGS: Final = frozenset({0x9F26, 0x9F36, 0x9F37, 0x91, 0x9A, 0x9F21, 0x9F41})

# ICC tags with card numbers: substituted (5A PAN; 57 / 9F6B track 2 equivalent)
_ICC_PAN_TAGS = frozenset({0x5A})
_ICC_TRACK_TAGS = frozenset({0x57, 0x9F6B})


class TraceFormatError(Iso8583Error):
    """A trace cannot be read: bad JSON, a missing or malformed key, an unknown dialect."""


# --- masking -------------------------------------------------------------------------


def _starred(kind: Kind, value: FieldValue) -> FieldValue:
    if isinstance(value, bytes):
        return bytes([STAR]) * len(value)
    return ("0" if kind in (Kind.N, Kind.Z) else "*") * len(value)


def _sub_bcd_pan(value: bytes) -> bytes:
    text = value.hex().upper()
    digits = text.rstrip("F")
    if not digits.isdigit():
        return bytes([STAR]) * len(value)
    return bytes.fromhex(substitute_pan(digits) + text[len(digits):])


def _sub_bcd_track(value: bytes) -> bytes:
    text = value.hex().upper()
    body = text.rstrip("F")
    sub = substitute_track2(body)
    if len(sub) != len(body) or not all(c in "0123456789D" for c in sub):
        return bytes([STAR]) * len(value)
    return bytes.fromhex(sub + text[len(body):])


def _mask_icc(data: bytes) -> bytes:
    """F55 with card numbers substituted and the other secret tags starred (same length)."""
    try:
        items = list(tlv.iter_primitives(tlv.decode(data)))
    except Iso8583Error:
        return bytes([STAR]) * len(data)
    out = data
    for item in items:
        if not item.value:
            continue
        if item.tag in _ICC_PAN_TAGS:
            sub = _sub_bcd_pan(item.value)
        elif item.tag in _ICC_TRACK_TAGS:
            sub = _sub_bcd_track(item.value)
        elif item.tag in tlv.SENSITIVE_TAGS:
            sub = bytes([STAR]) * len(item.value)
        else:
            continue
        out = out.replace(tlv.encode_tlv(item.tag, item.value), tlv.encode_tlv(item.tag, sub))
    return out


def mask_message(dialect: Dialect, message: Message) -> Message:
    """A copy of ``message`` fit for a trace (module doc): same layout, no card secrets."""
    masked = message.copy()
    mac_field = dialect.spec.mac_field
    for number, value in message.fields.items():
        spec = dialect.fields.get(number)
        if spec is None:
            continue
        new: FieldValue = value
        if number == mac_field or spec.sensitive in (Sensitive.PIN, Sensitive.KEY):
            new = _starred(spec.kind, value)
        elif spec.sensitive is Sensitive.PAN and isinstance(value, str):
            new = substitute_pan(value)
        elif spec.sensitive is Sensitive.TRACK and isinstance(value, str):
            new = substitute_track2(value)
        elif spec.sensitive is not None:
            new = _starred(spec.kind, value)
        elif number == 55 and isinstance(value, bytes):
            new = _mask_icc(value)
        elif isinstance(value, bytes) and not spec.fixed \
                and mask_text(value.hex()) != value.hex():
            # variable binary data with a card-number-like run (the pretty printer masks it)
            new = _starred(spec.kind, value)
        if new != value:
            masked[number] = new
    return masked


def mask_payload(dialect: Dialect, payload: bytes) -> tuple[bytes, Message, Message]:
    """``(masked payload, decoded message, masked message)``; raises Iso8583Error."""
    frame = dialect.unpack_payload(payload)
    masked = mask_message(dialect, frame.message)
    return (dialect.payload(masked, tpdu=frame.tpdu, header=frame.header),
            frame.message, masked)


def _head_length(dialect: Dialect) -> int:
    return (5 if dialect.spec.tpdu else 0) + dialect.spec.header_len


def _hidden_hex(dialect: Dialect, payload: bytes) -> str:
    head = payload[:_head_length(dialect)]
    return head.hex().upper() + "**" * (len(payload) - len(head))


# --- recording -----------------------------------------------------------------------


def _check_direction(direction: str) -> Direction:
    if direction == TERMINAL_TO_HOST:
        return TERMINAL_TO_HOST
    if direction == HOST_TO_TERMINAL:
        return HOST_TO_TERMINAL
    raise ValueError(f"direction must be {TERMINAL_TO_HOST!r} or {HOST_TO_TERMINAL!r}, "
                     f"not {direction!r}")


def meta_line(dialect: Dialect, *, by: str, at: datetime | None = None, **info: Any) -> JsonDict:
    """The line a recorder starts with: who records, in which dialect."""
    line: JsonDict = {"kind": "meta", "v": TRACE_VERSION, "trace": "iso8583", "by": by,
                      "dialect": dialect.name}
    if at is not None:
        line["at"] = at.isoformat(timespec="microseconds")
    line.update(info)
    return line


def build_line(dialect: Dialect, payload: bytes, direction: str, *, by: str, t: float,
               at: datetime | None = None) -> JsonDict:
    """One trace line for a frame payload (no length prefix). Never raises for bad bytes."""
    line: JsonDict = {"kind": "iso", "v": TRACE_VERSION, "t": round(t, 6)}
    if at is not None:
        line["at"] = at.isoformat(timespec="microseconds")
    line.update({"dir": _check_direction(direction), "by": by, "dialect": dialect.name,
                 "length": len(payload)})
    try:
        masked, message, masked_message = mask_payload(dialect, bytes(payload))
        view = _view(dialect, message, masked_message)
    except Iso8583Error as exc:
        line["error"] = str(exc)
        line["frame"] = _hidden_hex(dialect, payload)
        return line
    except Exception as exc:  # a recorder must never take the link down with it
        line["error"] = f"not described ({type(exc).__name__})"
        line["frame"] = _hidden_hex(dialect, payload)
        return line
    line["mti"] = message.mti
    line["message"] = view
    line["frame"] = masked.hex().upper()
    return line


def _view(dialect: Dialect, message: Message, masked: Message) -> dict[str, str]:
    """The pretty printer's view of ``message``; fields it would show unmasked that the
    trace masks (card data inside F55) are shown from the masked message instead."""
    view: dict[str, str] = message_dict(message, dialect)["fields"]
    for number, value in masked.fields.items():
        spec = dialect.fields.get(number)
        if spec is not None and spec.sensitive is None and number != dialect.spec.mac_field \
                and value != message.get(number):
            view[str(number)] = field_text(spec, value)
    return view


def dumps_line(line: Mapping[str, Any]) -> str:
    """A line as written to the file (compact JSON, non-ASCII kept, newline)."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


class TraceRecorder:
    """Turns frames into trace lines and hands them to ``write``.

    The adapter (host link, server) owns the file and the clocks: ``write``
    takes one finished line, ``monotonic`` gives seconds, ``wall`` the wall-clock
    time. A failing ``write`` stops the recording (kept in :attr:`failed`)
    rather than the exchange.
    """

    def __init__(self, write: Callable[[str], object], dialect: Dialect, *, by: str,
                 monotonic: Callable[[], float], wall: Callable[[], datetime],
                 meta: Mapping[str, Any] | None = None) -> None:
        self._write = write
        self.dialect = dialect
        self.by = by
        self._monotonic = monotonic
        self._wall = wall
        self._t0 = monotonic()
        self.failed: Exception | None = None
        self.lines = 0
        self._emit(meta_line(dialect, by=by, at=wall(), **(meta or {})))

    def _emit(self, line: Mapping[str, Any]) -> None:
        if self.failed is not None:
            return
        try:
            self._write(dumps_line(line))
        except (OSError, ValueError) as exc:  # disk full, closed file
            self.failed = exc
            return
        self.lines += 1

    def record(self, direction: str, payload: bytes) -> None:
        """Record one frame payload sent or received in ``direction``."""
        self._emit(build_line(self.dialect, payload, direction, by=self.by,
                              t=self._monotonic() - self._t0, at=self._wall()))


# --- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceEntry:
    """One ``iso`` line of a trace, checked."""

    direction: Direction
    dialect: str
    by: str
    t: float
    at: datetime | None
    length: int
    frame: bytes | None  # the masked payload; None for an undecodable frame
    view: Mapping[str, str] = field(default_factory=dict)  # the recorded "message"
    mti: str | None = None
    error: str | None = None
    line: int = 0  # line number in the file, for messages

    @classmethod
    def from_line(cls, line: Mapping[str, Any], *, where: str = "trace") -> TraceEntry:
        """Check and convert one parsed ``iso`` line; TraceFormatError names ``where``."""
        direction = line.get("dir")
        if direction not in DIRECTIONS:
            raise TraceFormatError(f"{where}: 'dir' must be {TERMINAL_TO_HOST!r} or "
                                   f"{HOST_TO_TERMINAL!r}")
        dialect = line.get("dialect")
        if not isinstance(dialect, str):
            raise TraceFormatError(f"{where}: missing 'dialect'")
        try:
            get_dialect(dialect)
        except KeyError:
            raise TraceFormatError(f"{where}: unknown dialect {dialect!r}") from None
        t = line.get("t", 0.0)
        length = line.get("length")
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise TraceFormatError(f"{where}: 't' must be a number")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise TraceFormatError(f"{where}: 'length' must be a whole number")
        at = _parse_at(line.get("at"), where)
        error = line.get("error")
        text = line.get("frame")
        if not isinstance(text, str):
            raise TraceFormatError(f"{where}: missing 'frame'")
        frame: bytes | None = None
        if error is None:
            try:
                frame = bytes.fromhex(text)
            except ValueError:
                raise TraceFormatError(f"{where}: 'frame' is not hex") from None
        view = line.get("message", {})
        if not isinstance(view, dict) or not all(isinstance(v, str) for v in view.values()):
            raise TraceFormatError(f"{where}: 'message' must map field numbers to text")
        mti = line.get("mti")
        return cls(direction, dialect, str(line.get("by", "?")), float(t), at, length, frame,
                   dict(view), mti if isinstance(mti, str) else None,
                   str(error) if error is not None else None)

    def message(self) -> Message | None:
        """The masked message decoded from the frame (None when it was not decodable)."""
        if self.frame is None:
            return None
        try:
            return get_dialect(self.dialect).unpack_payload(self.frame).message
        except Iso8583Error:
            return None


def _parse_at(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TraceFormatError(f"{where}: 'at' must be an ISO date-time")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise TraceFormatError(f"{where}: 'at' {value!r} is not an ISO date-time") from None


def parse_trace(text: str, *, name: str = "trace") -> list[TraceEntry]:
    """The ``iso`` lines of a trace's text, in order; other kinds (meta, apdu) are skipped."""
    entries: list[TraceEntry] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{name} line {n}"
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{where}: {exc.msg}") from None
        if not isinstance(line, dict) or not isinstance(line.get("kind"), str):
            raise TraceFormatError(f"{where}: not a trace record")
        if line["kind"] != "iso":
            continue
        entries.append(replace(TraceEntry.from_line(line, where=where), line=n))
    return entries


# --- naming messages -----------------------------------------------------------------


@cache
def _table(dialect_name: str) -> TransactionTable:
    return TransactionTable(get_dialect(dialect_name))


def request_mti(mti: str) -> str:
    """The MTI of the request an answer belongs to (0210 -> 0200); requests map to themselves."""
    if len(mti) == 4 and mti.isdigit() and int(mti[2]) % 2 == 1:
        return mti[:2] + str(int(mti[2]) - 1) + mti[3]
    return mti


def kind_of(dialect: Dialect, message: Message) -> str | None:
    """The transaction a request or its answer belongs to (``sale``, ``refund``...)."""
    probe = message.copy()
    probe.mti = request_mti(message.mti)
    return _table(dialect.name).classify(probe)


# --- comparing -----------------------------------------------------------------------


def _text(value: FieldValue) -> str:
    return value.hex().upper() if isinstance(value, bytes) else value


def comparable(entry: TraceEntry) -> dict[str, str]:
    """What two runs must agree on for this message: ``label -> text``.

    Labels: ``dir``, ``mti``, a field number (``"4"``), an ICC tag (``"55.9F02"``)
    or a part of a composite field (``"61.1"``). The fields of
    :data:`IGNORED_FIELDS`, the tags of :data:`IGNORED_ICC_TAGS` and the STAN and
    date parts of F61/F90 are left out.
    """
    out: dict[str, str] = {"dir": entry.direction}
    message = entry.message()
    if message is None:
        out["frame"] = f"undecodable, {entry.length} bytes"
        return out
    out["mti"] = message.mti
    for number, value in message.fields.items():
        if number in IGNORED_FIELDS:
            continue
        if number == 55 and isinstance(value, bytes):
            try:
                tags = tlv.decode_flat(value)
            except Iso8583Error:
                out["55"] = _text(value)
                continue
            for tag, data in tags.items():
                if tag not in IGNORED_ICC_TAGS:
                    out[f"55.{tlv.format_tag(tag)}"] = data.hex().upper()
            continue
        if number == 61 and isinstance(value, str):
            try:
                f61 = composite.F61.decode(value)
            except Iso8583Error:
                pass
            else:  # 61.2 repeats the original's STAN, 61.3 its date: both change every run
                out["61.1"] = f61.batch
                continue
        if number == 90 and isinstance(value, str):
            try:
                f90 = composite.F90.decode(value)
            except Iso8583Error:
                pass
            else:  # 90.2 STAN and 90.3 transmission time change every run
                out.update({"90.1": f90.mti, "90.4": f90.acquirer, "90.5": f90.forwarder})
                continue
        out[str(number)] = _text(value)
    return out


def _label_key(label: str) -> tuple[int, int, str]:
    head, _, rest = label.partition(".")
    if head.isdigit():
        return (1, int(head), rest)
    return (0, ["dir", "mti", "frame"].index(head) if head in ("dir", "mti", "frame") else 3,
            label)


@dataclass(frozen=True)
class Difference:
    """One way two traces differ, about one message.

    ``a_index``/``b_index`` are the message's number (1-based) in each trace, None
    on the side that lacks the message (label ``message``); ``a``/``b`` the
    values, None when that side has no such field or message.
    """

    a_index: int | None
    b_index: int | None
    label: str
    a: str | None
    b: str | None
    about: str = ""  # the message, as "terminal->host 0200 sale"

    @property
    def index(self) -> int:
        """The message's number in trace a (in b when only b has it)."""
        found = self.a_index if self.a_index is not None else self.b_index
        assert found is not None
        return found

    def mirrored(self) -> Difference:
        """The same difference seen from the other side (``diff(b, a)``)."""
        return Difference(self.b_index, self.a_index, self.label, self.b, self.a, self.about)

    def as_dict(self) -> JsonDict:
        return {"message_a": self.a_index, "message_b": self.b_index, "about": self.about,
                "field": self.label, "a": self.a, "b": self.b}


def _about(entry: TraceEntry) -> str:
    message = entry.message()
    if message is None:
        return f"{entry.direction} (undecodable)"
    kind = kind_of(get_dialect(entry.dialect), message)
    return f"{entry.direction} {message.mti}" + (f" {kind}" if kind else "")


_ALIGN_LIMIT = 4_000_000  # cells of the alignment table; beyond it, pair by position

Pairing: TypeAlias = list[tuple[int | None, int | None]]


def _align(sa: Sequence[str], sb: Sequence[str]) -> Pairing:
    """Pair messages of two runs with the same signature, in order (longest common
    subsequence). Ties are broken by the signatures themselves, never by which
    trace came first, so the pairing of (b, a) is the mirror of (a, b)."""
    head = 0
    while head < min(len(sa), len(sb)) and sa[head] == sb[head]:
        head += 1
    tail = 0
    while tail < min(len(sa), len(sb)) - head and sa[-1 - tail] == sb[-1 - tail]:
        tail += 1
    pairs: Pairing = [(i, i) for i in range(head)]
    ma, mb = sa[head:len(sa) - tail], sb[head:len(sb) - tail]
    n, m = len(ma), len(mb)
    if n * m > _ALIGN_LIMIT:
        middle: Pairing = [(i if i < n else None, i if i < m else None)
                           for i in range(max(n, m))]
    else:
        # table[i][j]: length of the longest common subsequence of ma[i:] and mb[j:]
        table = [[0] * (m + 1) for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            row, below = table[i], table[i + 1]
            for j in range(m - 1, -1, -1):
                row[j] = below[j + 1] + 1 if ma[i] == mb[j] else max(below[j], row[j + 1])
        middle = []
        gap: Pairing = []
        i = j = 0
        while i < n or j < m:
            if i < n and j < m and ma[i] == mb[j]:
                middle += sorted(gap, key=lambda p: _gap_key(p, ma, mb))
                gap = []
                middle.append((i, j))
                i, j = i + 1, j + 1
                continue
            skip_a = j >= m or (i < n and (
                table[i + 1][j] > table[i][j + 1]
                or (table[i + 1][j] == table[i][j + 1] and ma[i] < mb[j])))
            if skip_a:
                gap.append((i, None))
                i += 1
            else:
                gap.append((None, j))
                j += 1
        middle += sorted(gap, key=lambda p: _gap_key(p, ma, mb))
    pairs += [(None if x is None else x + head, None if y is None else y + head)
              for x, y in middle]
    pairs += [(len(sa) - tail + k, len(sb) - tail + k) for k in range(tail)]
    return pairs


def _gap_key(pair: tuple[int | None, int | None], ma: Sequence[str],
             mb: Sequence[str]) -> tuple[str, int]:
    # messages only one side has, between two paired ones: by signature, then position
    # (a gap never holds the same signature on both sides: they would have been paired)
    x, y = pair
    if x is not None:
        return (ma[x], x)
    assert y is not None
    return (mb[y], y)


def diff(a: Sequence[TraceEntry], b: Sequence[TraceEntry], *,
         ignore: Iterable[str] = ()) -> list[Difference]:
    """What differs between two runs, message by message, in conversation order.

    Messages are paired by direction, MTI and transaction kind, in order (a
    longest common subsequence, so one extra message in a run, an echo or a
    resent advice, is one ``message`` difference and the rest still pair up).
    Paired messages are compared by :func:`comparable`; ``ignore`` leaves out more
    labels (``"60"``, ``"55.9F10"``; ``"55"`` is every ICC tag). Symmetric:
    ``diff(a, b) == [d.mirrored() for d in diff(b, a)]``.
    """
    skip = tuple(ignore)
    sa, sb = [_about(e) for e in a], [_about(e) for e in b]
    out: list[Difference] = []
    for x, y in _align(sa, sb):
        if x is None:
            assert y is not None
            out.append(Difference(None, y + 1, "message", None, sb[y], sb[y]))
            continue
        if y is None:
            out.append(Difference(x + 1, None, "message", sa[x], None, sa[x]))
            continue
        ca, cb = comparable(a[x]), comparable(b[y])
        for label in sorted(ca.keys() | cb.keys(), key=_label_key):
            va, vb = ca.get(label), cb.get(label)
            if va != vb and not any(label == i or label.startswith(i + ".") for i in skip):
                out.append(Difference(x + 1, y + 1, label, va, vb, sa[x]))
    return out


def format_differences(differences: Sequence[Difference], *, a_name: str = "A",
                       b_name: str = "B") -> str:
    """A readable list, one block per message that differs."""
    if not differences:
        return "no differences (ignoring STAN, times, RRN, auth code, MAC and cryptograms)"
    lines = [f"{len(differences)} difference(s) between {a_name} (a) and {b_name} (b):"]
    current: tuple[int | None, int | None] = (-1, -1)
    for d in differences:
        if d.label == "message":
            side, number = (a_name, d.a_index) if d.a is not None else (b_name, d.b_index)
            lines.append(f"message {number} of {side} only: {d.about}")
            continue
        if (d.a_index, d.b_index) != current:
            current = (d.a_index, d.b_index)
            where = (f"message {d.a_index}" if d.a_index == d.b_index
                     else f"message {d.a_index} (b: {d.b_index})")
            lines.append(f"{where}: {d.about}")
        lines.append(f"   {d.label:<8} a: {d.a if d.a is not None else '(absent)'}")
        lines.append(f"   {'':<8} b: {d.b if d.b is not None else '(absent)'}")
    return "\n".join(lines)


# --- showing -------------------------------------------------------------------------

_KEY_FIELDS: tuple[tuple[int, str], ...] = (
    (2, "PAN"), (3, "proc"), (4, "amount"), (11, "STAN"), (22, "entry"), (37, "RRN"),
    (38, "auth"), (41, "TID"), (61, "original"), (90, "original"), (63, "org"),
)


def _amount(text: str) -> str:
    if not text.isdigit():
        return text
    value = int(text)
    return f"{value // 100}.{value % 100:02d}"


def describe(entry: TraceEntry, *, offset: float) -> JsonDict:
    """One message as :func:`format_conversation` shows it, as data."""
    out: JsonDict = {"line": entry.line, "offset": round(offset, 6), "dir": entry.direction,
                     "by": entry.by, "length": entry.length}
    message = entry.message()
    if message is None:
        out["error"] = entry.error or "frame does not decode"
        return out
    dialect = get_dialect(entry.dialect)
    out["mti"] = message.mti
    out["kind"] = kind_of(dialect, message)
    fields: dict[str, str] = {}
    for number, name in _KEY_FIELDS:
        value = message.get(number)
        if value is None:
            continue
        text = _text(value)
        if number == 2:
            text = mask_pan(text)
        elif number == 4:
            text = _amount(text)
        elif number == 41:
            text = text.rstrip()
        fields[name] = text
    icc = message.get(55)
    if isinstance(icc, bytes):
        try:
            fields["ICC tags"] = str(len(tlv.decode_flat(icc)))
        except Iso8583Error:
            fields["ICC tags"] = "undecodable"
    if dialect.spec.mac_field in message:
        fields["MAC"] = "yes"
    out["fields"] = fields
    code = message.response_code
    if code is not None and message.is_request:
        fields["reason"] = code  # a reversal's F39: why the terminal reverses
    elif code is not None:
        meaning = explain(code)
        out["response"] = {"code": code, "en": meaning.en, "zh": meaning.zh}
    return out


def conversation(entries: Sequence[TraceEntry]) -> list[JsonDict]:
    """Every message described, with its time offset from the first message."""
    if not entries:
        return []
    first = entries[0]
    out = []
    for entry in entries:
        if first.at is not None and entry.at is not None:
            offset = (entry.at - first.at).total_seconds()
        else:
            offset = entry.t - first.t
        out.append(describe(entry, offset=offset))
    return out


def format_conversation(entries: Sequence[TraceEntry], *, name: str = "trace") -> str:
    """A trace as a readable conversation: one block per message."""
    items = conversation(entries)
    if not items:
        return f"{name}: no ISO 8583 messages"
    bys = sorted({e.by for e in entries})
    dialects = sorted({e.dialect for e in entries})
    lines = [f"{name}: {len(items)} message(s), dialect {', '.join(dialects)}, "
             f"recorded by the {' and the '.join(bys)}"]
    for item in items:
        arrow = "terminal --> host" if item["dir"] == TERMINAL_TO_HOST else "terminal <-- host"
        head = f"+{item['offset']:9.3f}s  {arrow}  "
        if "error" in item:
            lines.append(f"{head}undecodable frame, {item['length']} bytes: {item['error']}")
            continue
        title = f"{item['mti']} {item['kind'] or '?'}"
        response = item.get("response")
        if response is not None:
            title += f"  {response['code']} {response['en']} / {response['zh']}"
        lines.append(head + title)
        shown = "  ".join(f"{k} {v}" for k, v in item["fields"].items())
        if shown:
            lines.append(f"{'':13}{shown}")
    return "\n".join(lines)


def entries_from(lines: Iterable[Mapping[str, Any]]) -> list[TraceEntry]:
    """Entries from lines already parsed (a recorder's output kept in memory)."""
    return [TraceEntry.from_line(line) for line in lines if line.get("kind") == "iso"]
