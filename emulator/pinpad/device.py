"""The virtual PIN pad: command handling, keys and PIN entry, served on a pty in a thread.

:class:`PinPadDevice` is the sans-I/O core (requests in, answers out, times
passed in); :class:`VirtualPinPad` serves it on the master side of a pty, with
the device link and its fault knobs, and prints nothing. The command set is the
one documented in :mod:`drivers.pinpad`; it is re-implemented here from that
text, not imported, so the two sides check each other.

Keys: the pad holds a master key (the terminal master key of the CUP test
vectors by default) and, after ``LK``, a session PIN key (TDES for format 0, or
AES for format 4) that it unwrapped with the master key and checked against the
check value sent with it. With a BDK and
an initial KSN it also holds a DUKPT key (ANSI X9.24-1): every DUKPT PIN entry
advances the KSN and encrypts under that transaction's PIN key.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import select
import threading
import time
from dataclasses import dataclass

from emulator.pinpad.cardholder import Cardholder, CardholderAction, EnterPin, PressCancel
from emulator.pinpad.link import DeviceLink, LinkFaults
from emulator.pty_pair import PtyPair
from iso8583.crypto import dukpt, pinblock
from iso8583.crypto.des import decrypt_ecb
from iso8583.crypto.kcv import aes_kcv, kcv_matches
from iso8583.errors import CryptoError

log = logging.getLogger(__name__)

DEFAULT_MASTER_KEY = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")  # TMK of the CUP test vector
DEFAULT_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # X9.24 published test BDK
DEFAULT_KSN = bytes.fromhex("FFFF9876543210E00000")
MODEL = "VPP-100"


@dataclass
class _PinEntry:
    seq: int
    mode: str
    pan: str
    min_len: int
    max_len: int
    amount: int
    deadline: float
    action: CardholderAction | None = None
    act_at: float | None = None
    started_at: float = 0.0  # when the cardholder began (first digit comes after the delay)
    shown: int = 0  # digits shown as "*" so far


def _amount_text(fen: int) -> str:
    return f"金额 {fen // 100}.{fen % 100:02d}"


class PinPadDevice:
    """What the pad does with each request; every call gets ``now`` from the caller."""

    def __init__(self, *, master_key: bytes = DEFAULT_MASTER_KEY, bdk: bytes | None = DEFAULT_BDK,
                 initial_ksn: bytes = DEFAULT_KSN, cardholder: Cardholder | None = None) -> None:
        self.master_key = master_key
        self.cardholder = cardholder or Cardholder()
        self.session_pik: bytes | None = None
        self.session_aes_pik: bytes | None = None
        self._ipek = dukpt.derive_ipek(bdk, initial_ksn) if bdk is not None else None
        self.ksn = initial_ksn
        self.display_lines: tuple[str, str] = ("欢迎", "WELCOME")
        self.pin_entries = 0
        self._entry: _PinEntry | None = None
        self._last: tuple[str, int, bytes | None] | None = None

    @property
    def busy(self) -> bool:
        return self._entry is not None

    # -- requests --------------------------------------------------------------------
    def handle(self, payload: bytes, now: float) -> list[bytes]:
        """Answers to send now for one request frame (possibly none)."""
        try:
            text = payload.decode("ascii")
        except UnicodeDecodeError:
            return []
        if len(text) < 4 or not text[2:4].isdigit():
            log.info("request without command/sequence ignored")
            return []
        cmd, seq = text[:2], int(text[2:4])
        fields = text[4:].split("|") if len(text) > 4 else []
        if self._last is not None and self._last[:2] == (cmd, seq):
            # The terminal resent a request we already have: never execute twice.
            return [self._last[2]] if self._last[2] is not None else []
        self._last = (cmd, seq, None)
        answers = self._dispatch(cmd, seq, fields, now)
        if answers and answers[-1][:4] == payload[:4]:
            self._last = (cmd, seq, answers[-1])
        return answers

    def _answer(self, cmd: str, seq: int, rc: str, *fields: str) -> bytes:
        return f"{cmd}{seq:02d}{rc}{'|'.join(fields)}".encode("ascii")

    def _dispatch(self, cmd: str, seq: int, fields: list[str], now: float) -> list[bytes]:
        if cmd == "EC":
            keys = (("M" if self.session_pik else "") + ("A" if self.session_aes_pik else "")
                    + ("D" if self._ipek else ""))
            state = "PIN" if self._entry else "IDLE"
            return [self._answer(cmd, seq, "00", MODEL, state, keys or "-", *fields[:1])]
        if cmd == "CN":
            out = []
            if self._entry is not None:
                out.append(self._answer("PN", self._entry.seq, "12"))
                self._finish_entry()
            out.append(self._answer(cmd, seq, "00"))
            return out
        if self._entry is not None:
            return [self._answer(cmd, seq, "03")]
        if cmd == "DT":
            return [self._display(seq, fields)]
        if cmd == "LK":
            return [self._load_key(seq, fields)]
        if cmd == "PN":
            return self._start_entry(seq, fields, now)
        return [self._answer(cmd, seq, "01")]

    def _display(self, seq: int, fields: list[str]) -> bytes:
        try:
            lines = [bytes.fromhex(f).decode("gb18030") for f in fields]
        except (ValueError, UnicodeDecodeError):
            return self._answer("DT", seq, "02")
        if len(lines) not in (1, 2):
            return self._answer("DT", seq, "02")
        self.display_lines = (lines[0], lines[1] if len(lines) > 1 else "")
        return self._answer("DT", seq, "00")

    def _load_key(self, seq: int, fields: list[str]) -> bytes:
        try:
            enc, kcv = bytes.fromhex(fields[0]), bytes.fromhex(fields[1])
        except (IndexError, ValueError):
            return self._answer("LK", seq, "02")
        alg = fields[2] if len(fields) > 2 else "T"
        sizes = (16, 24, 32) if alg == "A" else (8, 16, 24)
        if alg not in ("T", "A") or len(enc) not in sizes or not 2 <= len(kcv) <= 8:
            return self._answer("LK", seq, "02")
        try:
            key = decrypt_ecb(self.master_key, enc)
            good = (hmac.compare_digest(aes_kcv(key, len(kcv)), kcv) if alg == "A"
                    else kcv_matches(key, kcv))
        except CryptoError:
            return self._answer("LK", seq, "22")
        if not good:
            return self._answer("LK", seq, "21")
        if alg == "A":
            self.session_aes_pik = key
        else:
            self.session_pik = key
        return self._answer("LK", seq, "00")

    def _start_entry(self, seq: int, fields: list[str], now: float) -> list[bytes]:
        try:
            mode, pan = fields[0], fields[1]
            min_len, max_len, timeout, amount = (int(f) for f in fields[2:6])
        except (IndexError, ValueError):
            return [self._answer("PN", seq, "02")]
        if mode not in ("M", "A", "D") or not pan.isdigit() or not 4 <= min_len <= max_len <= 12:
            return [self._answer("PN", seq, "02")]
        keys = {"M": self.session_pik, "A": self.session_aes_pik, "D": self._ipek}
        if keys[mode] is None:
            return [self._answer("PN", seq, "20")]
        self.pin_entries += 1
        self._entry = _PinEntry(seq, mode, pan, min_len, max_len, amount, now + timeout)
        self.display_lines = (_amount_text(amount) if amount >= 0 else "", "请输入密码 PIN")
        return self.poll(now)

    def _finish_entry(self) -> None:
        self._entry = None
        self.display_lines = ("欢迎", "WELCOME")

    # -- PIN entry progress ------------------------------------------------------------
    def poll(self, now: float) -> list[bytes]:
        """Advance a running PIN entry: take the cardholder's action, act, or time out."""
        answers = self._progress(now)
        for answer in answers:
            if self._last is not None and self._last[:2] == ("PN", int(answer[2:4])):
                self._last = ("PN", self._last[1], answer)  # a resent PN gets this answer
        return answers

    def _progress(self, now: float) -> list[bytes]:
        e = self._entry
        if e is None:
            return []
        if e.action is None:
            e.action = self.cardholder.take()
            e.started_at = now
            if isinstance(e.action, PressCancel):
                e.act_at = now + e.action.delay
            elif isinstance(e.action, EnterPin):
                e.act_at = now + e.action.delay + e.action.per_digit * len(e.action.digits)
        self._show_typed(e, now)
        if e.act_at is not None and now >= e.act_at and now < e.deadline:
            action = e.action
            if isinstance(action, PressCancel):
                self._finish_entry()
                return [self._answer("PN", e.seq, "10")]
            if isinstance(action, EnterPin) and len(action.digits) >= e.min_len:
                answer = self._pin_answer(e, action.digits[: e.max_len])
                self._finish_entry()
                return [answer]
            e.act_at = None  # too short a PIN: the pad ignores Enter and keeps waiting
        if now >= e.deadline:
            self._finish_entry()
            return [self._answer("PN", e.seq, "11")]
        return []

    @staticmethod
    def _digit_times(e: _PinEntry) -> list[float]:
        a = e.action
        if not isinstance(a, EnterPin) or a.per_digit <= 0:
            return []
        start = e.started_at + a.delay
        return [start + a.per_digit * (i + 1) for i in range(min(len(a.digits), e.max_len))]

    def _show_typed(self, e: _PinEntry, now: float) -> None:
        typed = sum(1 for t in self._digit_times(e) if t <= now)
        if typed != e.shown:
            e.shown = typed
            self.display_lines = (self.display_lines[0], "*" * typed)

    def _pin_answer(self, e: _PinEntry, pin: str) -> bytes:
        if e.mode == "M":
            assert self.session_pik is not None
            block = pinblock.encrypt_format0(self.session_pik, pin, e.pan)
            return self._answer("PN", e.seq, "00", block.hex().upper())
        if e.mode == "A":
            assert self.session_aes_pik is not None
            block = pinblock.encrypt_format4(self.session_aes_pik, pin, e.pan)
            return self._answer("PN", e.seq, "00", block.hex().upper())
        assert self._ipek is not None
        self.ksn = dukpt.next_ksn(self.ksn)
        block = dukpt.encrypt_pin_block(self._ipek, self.ksn, pin, e.pan)
        return self._answer("PN", e.seq, "00", block.hex().upper(), self.ksn.hex().upper())

    def next_deadline(self) -> float | None:
        e = self._entry
        if e is None:
            return None
        times = [e.deadline]
        if e.act_at is not None:
            times.append(e.act_at)
        pending = self._digit_times(e)[e.shown:]
        if pending:
            times.append(pending[0])  # wake up to show the next "*"
        return min(times)


class VirtualPinPad:
    """The virtual PIN pad on a pty, running in its own thread.

    ``path`` is the device to open (``PinPad.open(pad.path)``); ``cardholder``
    and ``faults`` can be changed while it runs. Use as a context manager or
    call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, *, master_key: bytes = DEFAULT_MASTER_KEY,
                 bdk: bytes | None = DEFAULT_BDK, initial_ksn: bytes = DEFAULT_KSN,
                 cardholder: Cardholder | None = None, faults: LinkFaults | None = None,
                 ack_timeout: float = 0.5) -> None:
        self.device = PinPadDevice(master_key=master_key, bdk=bdk, initial_ksn=initial_ksn,
                                   cardholder=cardholder)
        self.faults = faults or LinkFaults()
        self.link = DeviceLink(self.faults, ack_timeout=ack_timeout)
        self._pty = PtyPair()
        self.path = self._pty.path
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="virtual-pinpad", daemon=True)
        self.cardholder.subscribe(self.wake)

    @property
    def cardholder(self) -> Cardholder:
        return self.device.cardholder

    def wake(self) -> None:
        """Make the serving loop look at the cardholder and the fault knobs now."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"w")

    def start(self) -> VirtualPinPad:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the pty (idempotent)."""
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self._pty.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> VirtualPinPad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            deadlines = [d for d in (self.link.next_deadline(), self.device.next_deadline())
                         if d is not None]
            wait = max(0.0, min(deadlines) - now) if deadlines else 0.5
            try:
                ready, _, _ = select.select([self._pty.master_fd, self._wake_r], [], [],
                                            min(wait, 0.5))
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
            with self._lock:
                now = time.monotonic()
                if self._pty.master_fd in ready:
                    data = self._pty.read()
                    for frame in self.link.receive(data, now):
                        for answer in self.device.handle(frame, now):
                            self.link.send(answer, now)
                for answer in self.device.poll(now):
                    self.link.send(answer, now)
                self.link.tick(now)
                out = self.link.due(now)
            if out:
                try:
                    self._pty.write(out)
                except OSError:
                    return
