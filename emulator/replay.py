"""Replay a recorded ISO 8583 trace against the host: a regression test of its answers.

A trace (:mod:`iso8583.trace`) holds every request the terminal sent, masked,
and the answer it got. :class:`TraceReplayer` sends each request again to a
host (any ``exchange(payload) -> reply payload | None``: the host core in
process, or a TCP connection to ``pos-emulator serve``) and compares each
answer with the recorded one by the rule ``pos-iso trace diff`` uses (STAN,
times, RRN, auth code, MAC and cryptograms ignored).

How a masked request becomes a valid one again:

* **Keys.** The recorded sign-on is sent as it was; the replay host answers
  with working keys of its own (F62, encrypted under the terminal master key),
  which the replayer unwraps with the TMK it is given (the demo terminal's by
  default: :data:`emulator.host.terminals.DEMO_TMK`). Every later request is
  MACed again with that MAK and every answer's MAC is checked with it. So the
  replay host must know the terminal (TID/MID with that TMK), as a fresh
  emulator ledger does for the demo terminal.
* **Card data.** The trace keeps substitutes for PANs and tracks (same BIN and
  last four, Luhn-valid). The substitution is a fixed function of the PAN, so
  for the public test cards of :mod:`emulator.catalogue` it is inverted
  exactly: F2, F35 and F55 card tags get the test card's real values back, and a
  PIN block is built again from the card's test PIN under the new PIK. A trace
  of a card outside the catalogue replays with the substitute (the host then
  answers 14, which the comparison shows).
* **Host-chosen values.** A fresh host numbers RRNs from its own counter and
  dates answers by its clock. What an answer carried (F37, F38, F13) is mapped
  from the recorded value to the replayed one, and later requests that echo it
  (a void's F37/F38, a refund's F37 and 61.3 original date) are rewritten.
* **STANs** are sent as recorded: replay into a host that has not seen this
  terminal's STANs (a fresh ledger), or the host answers 94 (duplicates).

A request recorded without an answer (the demo's lost sale) is sent and its
answer is not compared: the host booked it in the recording too, and the
reversal that follows in the trace undoes it in both.

From the command line (exit 0 when every answer is as recorded, 1 when one
differs, 2 for bad input)::

    pos-emulator replay tests/traces/demo-cup.jsonl            # a fresh host in process
    pos-emulator replay TRACE --connect 127.0.0.1:5858         # a running host, fresh ledger
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from emulator.catalogue import CARDS, TestCard
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from iso8583 import composite
from iso8583.crypto import pinblock, signon
from iso8583.crypto.message_mac import apply_mac, received_mac_ok
from iso8583.dialect import Dialect, Frame
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error
from iso8583.framing import encode_length
from iso8583.masking import substitute_pan
from iso8583.message import Message
from iso8583.trace import (
    HOST_TO_TERMINAL,
    TERMINAL_TO_HOST,
    Difference,
    TraceEntry,
    build_line,
    diff,
    format_differences,
    kind_of,
    parse_trace,
)

Exchange = Callable[[bytes], bytes | None]
"""Send one request payload (no length prefix); the reply payload, or None for no answer."""

# Fields whose value the host picks and a later request repeats.
_ECHOED = (37, 38)


class ReplayError(Iso8583Error):
    """The trace cannot be replayed (no sign-on before a MACed request, keys that fail)."""


@dataclass(frozen=True)
class ReplayStep:
    """One request of the trace, sent again."""

    index: int  # the request's message number in the trace (1-based)
    about: str  # "terminal->host 0200 sale"
    answered: bool  # the replay host answered
    differences: tuple[Difference, ...] = ()
    note: str = ""


@dataclass
class ReplayReport:
    """Every request replayed, with what differed from the recorded answers."""

    steps: list[ReplayStep] = field(default_factory=list)

    @property
    def differences(self) -> list[Difference]:
        return [d for step in self.steps for d in step.differences]

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "requests": len(self.steps),
                "steps": [{"message": s.index, "about": s.about, "answered": s.answered,
                           "note": s.note, "differences": [d.as_dict() for d in s.differences]}
                          for s in self.steps]}

    def text(self) -> str:
        lines = [f"replayed {len(self.steps)} request(s): "
                 + ("every answer as recorded" if self.ok else
                    f"{len(self.differences)} difference(s)")]
        for step in self.steps:
            if step.note:
                lines.append(f"message {step.index}: {step.about}: {step.note}")
        if not self.ok:
            lines.append(format_differences(self.differences, a_name="recorded",
                                            b_name="replayed"))
        return "\n".join(lines)


def pairs(entries: Sequence[TraceEntry]) -> list[tuple[int, TraceEntry, TraceEntry | None]]:
    """Each request (1-based message number, entry) with the first answer recorded after it."""
    out: list[tuple[int, TraceEntry, TraceEntry | None]] = []
    for i, entry in enumerate(entries):
        if entry.direction != TERMINAL_TO_HOST:
            continue
        answer = None
        if i + 1 < len(entries) and entries[i + 1].direction == HOST_TO_TERMINAL:
            answer = entries[i + 1]
        out.append((i + 1, entry, answer))
    return out


class TraceReplayer:
    """Sends a trace's requests to a host and compares its answers (module doc)."""

    def __init__(self, entries: Sequence[TraceEntry], exchange: Exchange, *,
                 tmk: bytes = DEMO_TMK, cards: Iterable[TestCard] = CARDS,
                 ignore: Iterable[str] = ()) -> None:
        self.entries = list(entries)
        self.ignore = tuple(ignore)  # more labels to leave out (iso8583.trace.diff)
        self.exchange = exchange
        self.tmk = tmk
        self._cards = {substitute_pan(c.pan): c for c in cards}
        self.keys: signon.WorkingKeys | None = None
        self._seen: dict[int, dict[str, str]] = {n: {} for n in (*_ECHOED, 13)}

    # --- restoring a request ------------------------------------------------------
    def _card(self, message: Message) -> TestCard | None:
        pan = message.get(2)
        if isinstance(pan, str):
            return self._cards.get(pan)
        track = message.get(35)
        if isinstance(track, str):
            return self._cards.get(track.split("D", 1)[0].split("=", 1)[0])
        return None

    def _restore(self, dialect: Dialect, message: Message) -> Message:
        out = message.copy()
        card = self._card(message)
        if card is not None:
            if 2 in out:
                out[2] = card.pan
            if 35 in out:
                out[35] = card.track2
            icc = out.get(55)
            if isinstance(icc, bytes):
                out[55] = _swap_bcd(icc, substitute_pan(card.pan), card.pan)
            if 52 in out and card.pin is not None and self.keys is not None:
                out[52] = _pin_block(dialect, self.keys.pik, card.pin, card.pan)
        for number in _ECHOED:
            value = out.get(number)
            if isinstance(value, str) and value in self._seen[number]:
                out[number] = self._seen[number][value]
        f61 = out.get(61)
        if isinstance(f61, str):
            try:
                named = composite.F61.decode(f61)
            except Iso8583Error:
                named = None
            if named is not None and named.date in self._seen[13]:
                out[61] = composite.F61(named.batch, named.stan,
                                        self._seen[13][named.date]).encode()
        if dialect.spec.mac_field in message:
            if self.keys is None:
                raise ReplayError("the trace MACs a request before any sign-on: replay needs "
                                  "the sign-on to learn the working keys")
            apply_mac(dialect, self.keys.mak, out)
        return out

    # --- learning from an answer ---------------------------------------------------
    def _learn(self, dialect: Dialect, recorded: Message | None, live: Message) -> None:
        f62 = live.get(62)
        if kind_of(dialect, live) in ("sign_on", "key_change") and live.response_code == "00" \
                and f62 is not None:
            raw = f62 if isinstance(f62, bytes) else bytes.fromhex(f62)
            try:
                self.keys = signon.unwrap_signon_keys(self.tmk, raw)
            except Iso8583Error as exc:
                raise ReplayError(f"the replay host's sign-on keys do not unwrap with the "
                                  f"TMK given: {exc}") from None
        if recorded is None:
            return
        for number in (*_ECHOED, 13):
            old, new = recorded.get(number), live.get(number)
            if isinstance(old, str) and isinstance(new, str):
                self._seen[number][old] = new

    # --- the replay -----------------------------------------------------------------
    def run(self) -> ReplayReport:
        """Replay every request in order; never stops at a difference."""
        report = ReplayReport()
        for index, request, answer in pairs(self.entries):
            report.steps.append(self._step(index, request, answer))
        return report

    def _step(self, index: int, request: TraceEntry, answer: TraceEntry | None) -> ReplayStep:
        dialect = get_dialect(request.dialect)
        frame = _frame(dialect, request)
        if frame is None:
            return ReplayStep(index, f"{TERMINAL_TO_HOST} (undecodable)", False,
                              note="recorded undecodable: not sent")
        kind = kind_of(dialect, frame.message)
        about = f"{TERMINAL_TO_HOST} {frame.message.mti}" + (f" {kind}" if kind else "")
        message = self._restore(dialect, frame.message)
        reply = self.exchange(dialect.payload(message, tpdu=frame.tpdu, header=frame.header))
        recorded = _frame(dialect, answer) if answer is not None else None
        if reply is None:
            if answer is None:
                return ReplayStep(index, about, False, note="no answer, as recorded")
            about_answer = _about(dialect, recorded)
            return ReplayStep(index, about, False, (Difference(
                index + 1, None, "message", about_answer, None, about_answer),))
        try:
            live = dialect.unpack_payload(reply)
        except Iso8583Error as exc:
            return ReplayStep(index, about, True, (Difference(
                index + 1, index + 1, "frame", "as recorded", f"undecodable: {exc}", about),))
        self._learn(dialect, recorded.message if recorded is not None else None, live.message)
        notes = []
        if dialect.spec.mac_field in live.message and self.keys is not None \
                and not received_mac_ok(dialect, self.keys.mak, live.body, live.message):
            notes.append("the answer's MAC does not verify")
        if answer is None:
            code = live.message.response_code
            notes.append(f"no answer was recorded (the replay host answered {code})")
            return ReplayStep(index, about, True, note="; ".join(notes))
        got = TraceEntry.from_line(build_line(dialect, reply, HOST_TO_TERMINAL, by="replay",
                                              t=0.0))
        found = tuple(Difference(index + 1, index + 1, d.label, d.a, d.b, d.about)
                      for d in diff([answer], [got], ignore=self.ignore))
        if notes:
            found += (Difference(index + 1, index + 1, "MAC", "verifies", notes[0], about),)
        return ReplayStep(index, about, True, found)


def _frame(dialect: Dialect, entry: TraceEntry) -> Frame | None:
    if entry.frame is None:
        return None
    try:
        return dialect.unpack_payload(entry.frame)
    except Iso8583Error:
        return None


def _about(dialect: Dialect, frame: Frame | None) -> str:
    if frame is None:
        return HOST_TO_TERMINAL
    kind = kind_of(dialect, frame.message)
    return f"{HOST_TO_TERMINAL} {frame.message.mti}" + (f" {kind}" if kind else "")


def _bcd(pan: str) -> bytes:
    return bytes.fromhex(pan + ("F" if len(pan) % 2 else ""))


def _swap_bcd(data: bytes, old: str, new: str) -> bytes:
    return data.replace(_bcd(old), _bcd(new)) if len(old) == len(new) else data


def _pin_block(dialect: Dialect, pik: bytes, pin: str, pan: str) -> bytes:
    if dialect.settings.pin_block_format == 4:
        return pinblock.encrypt_format4(pik, pin, pan)
    return pinblock.encrypt_format0(pik, pin, pan)


class HostCore(Protocol):
    """What :func:`in_process` needs of the host core (``AcquirerHost`` has it)."""

    def handle(self, payload: bytes, now: datetime) -> Any: ...


def in_process(host: HostCore, clock: Callable[[], datetime] = datetime.now) -> Exchange:
    """An exchange straight into a host core, no socket (the host books in its own store)."""

    def exchange(payload: bytes) -> bytes | None:
        reply: bytes | None = host.handle(payload, clock()).reply
        return reply

    return exchange


class TcpExchange:
    """A blocking TCP exchange with a running host (``pos-emulator serve``).

    One request at a time; no answer within ``timeout`` (or a closed connection)
    is None, and the next request opens a new connection.
    """

    def __init__(self, host: str, port: int, dialect: Dialect, *, timeout: float = 5.0) -> None:
        self.address = (host, port)
        self.dialect = dialect
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._decoder = dialect.frame_decoder()

    def __call__(self, payload: bytes) -> bytes | None:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as exc:
                raise ReplayError(f"cannot connect to {self.address[0]}:{self.address[1]}: "
                                  f"{exc.strerror or exc}") from None
            self._decoder = self.dialect.frame_decoder()
        sock = self._sock
        deadline = time.monotonic() + self.timeout
        try:
            sock.sendall(encode_length(payload, self.dialect.spec.length_bytes))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError
                payloads = self._decoder.feed(chunk)
                if payloads:
                    return payloads[0]
        except (OSError, Iso8583Error):
            self.close()
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --- command line ------------------------------------------------------------------------


def fresh_host(dialect: str, tmk: bytes = DEMO_TMK) -> Exchange:
    """An exchange into a new in-memory host that knows only the demo terminal (TID/MID)
    with ``tmk``: what a trace of the demo terminal replays into."""
    from emulator.host.core import AcquirerHost
    host = AcquirerHost(dialect)
    host.provision(DEMO_TID, DEMO_MID, tmk)
    return in_process(host)


def main(argv: Sequence[str] | None = None) -> int:
    """``pos-emulator replay TRACE [--connect HOST:PORT] [--tmk HEX] [--json]``."""
    parser = argparse.ArgumentParser(
        prog="pos-emulator replay",
        description="replay a recorded ISO 8583 trace against the host and compare its "
                    "answers with the recorded ones (STAN, times, RRN, auth code, MAC and "
                    "cryptograms ignored)")
    parser.add_argument("trace", help="JSONL trace (pos-terminal --trace FILE)")
    parser.add_argument("--connect", metavar="HOST:PORT",
                        help="a running pos-emulator serve with a fresh ledger (default: a "
                             "fresh host in this process, demo terminal provisioned)")
    parser.add_argument("--tmk", help="terminal master key, hex (default: the demo TMK)")
    parser.add_argument("--timeout", type=float, default=5.0, help="answer timeout (s)")
    parser.add_argument("--ignore", action="append", default=[], metavar="FIELD",
                        help="also ignore this field, ICC tag or part (as pos-iso trace diff)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2
    try:
        with open(args.trace, encoding="utf-8") as stream:
            entries = parse_trace(stream.read(), name=args.trace)
        tmk = bytes.fromhex(args.tmk) if args.tmk else DEMO_TMK
        if not entries:
            raise ReplayError(f"{args.trace} holds no ISO 8583 messages")
        dialect = get_dialect(entries[0].dialect)
        tcp: TcpExchange | None = None
        if args.connect:
            host, _, port = args.connect.rpartition(":")
            if not host or not port.isdigit():
                raise ReplayError(f"--connect wants HOST:PORT, not {args.connect!r}")
            tcp = TcpExchange(host, int(port), dialect, timeout=args.timeout)
        exchange = tcp if tcp is not None else fresh_host(dialect.name, tmk)
        try:
            report = TraceReplayer(entries, exchange, tmk=tmk, ignore=args.ignore).run()
        finally:
            if tcp is not None:
                tcp.close()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"pos-emulator replay: cannot read {args.trace}: "
              f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    except (Iso8583Error, ValueError) as exc:
        print(f"pos-emulator replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.text())
    return 0 if report.ok else 1
