"""Serial PIN pad client: display, session key load, PIN entry and cancel over the STX/ETX link.

Command set (ours; every payload is printable ASCII, see :mod:`drivers.serial_link`)
==================================================================================

Request:  ``CMD(2 letters) SEQ(2 digits) [field {"|" field}]``
Response: ``CMD SEQ RC(2 chars) [field {"|" field}]``

``SEQ`` runs 00..99 and wraps. The pad answers with the request's CMD and SEQ;
a request repeated with the same CMD and SEQ (the terminal resent it because
its ACK came late) is not executed twice: the pad resends its last answer, or
ignores it while still working on it. The client throws away answers whose SEQ
is not the one it waits for (stale answers).

=====  ==========================================  ================================
CMD    request fields                              response fields (RC 00)
=====  ==========================================  ================================
EC     [text]  echo / status                       model | state | keys | text
DT     line1 | line2  (GB18030, hex)               (none)
LK     PIK under master key (hex; TDES 8/16/24,   (none)
       AES 16/24/32 bytes) | check value (hex,
       2..8 bytes) [| T (default) or A]
PN     mode (M session TDES key, A session AES     PIN block (hex 8 bytes; 16 in mode A)
       key, D DUKPT) | PAN | min | max |           [ | KSN (hex 10 bytes) in mode D ]
       timeout s | amount fen
CN     (none)  cancel a running PIN entry          (none)
=====  ==========================================  ================================

``state`` is ``IDLE`` or ``PIN``; ``keys`` lists the PIN keys ready: ``M``
(a TDES session PIK loaded), ``A`` (an AES session PIK loaded), ``D`` (a DUKPT
key present), or ``-``. In mode ``M`` the PIN block is ISO 9564 format 0 with
the PAN under the session PIK; in mode ``D`` format 0 under the DUKPT PIN key
of the returned KSN (ANSI X9.24-1); in mode ``A`` ISO 9564 format 4 (AES).

``LK`` loads a TDES PIK (``T``, the default: CUP sign-on delivers it as is)
or an AES PIK (``A``). Either is sent encrypted with the pad's TDES master key
in ECB mode (for AES a simplification of this emulated set: real AES keys
travel in TR-31 key blocks); the check value is the TDES KCV (first bytes of
E_K(00..00)) or the AES-CMAC KCV of the clear key.

In ``PN``, ``amount`` (fen) is only shown to the cardholder; ``-1`` shows none.

Result codes: ``00`` ok, ``01`` unknown command, ``02`` bad request, ``03`` busy
(PIN entry running), ``10`` cancelled by the cardholder, ``11`` PIN entry timed
out, ``12`` cancelled by the terminal (CN), ``20`` no PIN key, ``21`` check value
mismatch (key not loaded), ``22`` key error.

A CN during PIN entry gets its own ``CN..00`` answer and ends the running PN
with ``12``. :meth:`PinPad.cancel` does not wait for the CN answer (the thread
blocked in :meth:`PinPad.get_pin_block` gets the ``12`` and raises).

No PIN, PIN block, key or full PAN reaches a log or the serial trace: the link
trace gets payloads through :func:`redact_payload`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from drivers.errors import (
    PinEntryCancelledError,
    PinPadError,
    PinPadTimeoutError,
    SerialLinkError,
)
from drivers.masking import mask_pan
from drivers.serial_link import LinkTimeoutError, SerialLink, SerialTraceSink

log = logging.getLogger(__name__)

RC_OK = "00"
RC_UNKNOWN = "01"
RC_BAD_REQUEST = "02"
RC_BUSY = "03"
RC_CARDHOLDER_CANCEL = "10"
RC_TIMEOUT = "11"
RC_TERMINAL_CANCEL = "12"
RC_NO_KEY = "20"
RC_KCV_MISMATCH = "21"
RC_KEY_ERROR = "22"

MODE_SESSION = "M"
MODE_AES = "A"
MODE_DUKPT = "D"
MAX_LINE_BYTES = 64  # GB18030 bytes per display line


class PinPadProtocolError(PinPadError):
    """The PIN pad answered something this client cannot read."""


class PinPadLinkError(PinPadError, SerialLinkError):
    """The serial link to the PIN pad failed (no ACK after retries, port gone)."""

    cashier_zh, cashier_en = "密码键盘通讯失败", "PIN pad not responding"


class KeyCheckValueError(PinPadError):
    """The PIN pad refused a working key: its check value did not match."""

    cashier_zh, cashier_en = "密钥校验失败", "PIN key check failed"


class NoPinKeyError(PinPadError):
    """The PIN pad has no PIN key for the mode asked: sign on first."""

    cashier_zh, cashier_en = "密码键盘未装载密钥", "PIN pad has no key"


# --- codec ------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One command to the pad."""

    cmd: str
    seq: int
    fields: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return _encode(self.cmd, f"{self.seq:02d}", self.fields)

    def __repr__(self) -> str:
        return f"Request({self.cmd}, seq={self.seq:02d}, {len(self.fields)} fields)"


@dataclass(frozen=True)
class Response:
    """One answer from the pad."""

    cmd: str
    seq: int
    rc: str
    fields: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return _encode(self.cmd, f"{self.seq:02d}{self.rc}", self.fields)

    def __repr__(self) -> str:
        return f"Response({self.cmd}, seq={self.seq:02d}, rc={self.rc}, {len(self.fields)} fields)"


def _encode(cmd: str, head: str, fields: tuple[str, ...]) -> bytes:
    if len(cmd) != 2 or not cmd.isascii() or not cmd.isalpha() or not cmd.isupper():
        raise ValueError("command must be two upper-case letters")
    for f in fields:
        if "|" in f or not f.isascii() or not f.isprintable():
            raise ValueError("a field must be printable ASCII without '|'")
    return (cmd + head + "|".join(fields)).encode("ascii")


def _split(payload: bytes, head_len: int) -> tuple[str, int, str, tuple[str, ...]]:
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise PinPadProtocolError("frame is not ASCII") from None
    if len(text) < head_len or not text[:2].isalpha() or not text[2:4].isdigit():
        raise PinPadProtocolError("frame too short or without command and sequence")
    rest = text[head_len:]
    fields = tuple(rest.split("|")) if rest else ()
    return text[:2], int(text[2:4]), text[4:head_len], fields


def decode_request(payload: bytes) -> Request:
    """Parse a request payload (:class:`PinPadProtocolError` if it is not one)."""
    cmd, seq, _, fields = _split(payload, 4)
    return Request(cmd, seq, fields)


def decode_response(payload: bytes) -> Response:
    """Parse a response payload (:class:`PinPadProtocolError` if it is not one)."""
    cmd, seq, rc, fields = _split(payload, 6)
    if len(rc) != 2 or not rc.isalnum():
        raise PinPadProtocolError("response without a result code")
    return Response(cmd, seq, rc, fields)


def encode_text(text: str) -> str:
    """A display line as GB18030 hex (Chinese and ASCII alike)."""
    data = text.encode("gb18030")
    if len(data) > MAX_LINE_BYTES:
        raise ValueError(f"display line longer than {MAX_LINE_BYTES} GB18030 bytes")
    return data.hex().upper()


def decode_text(hex_text: str) -> str:
    """The inverse of :func:`encode_text`."""
    return bytes.fromhex(hex_text).decode("gb18030")


def redact_payload(payload: bytes) -> bytes:
    """The payload as it may appear in a trace: keys, PAN, PIN blocks and KSN starred.

    ``LK`` and ``PN`` frames keep their first six characters (command, sequence
    and result code or mode) and lose every hex digit after them.
    """
    if payload[:2] in (b"LK", b"PN"):
        head, tail = payload[:6], payload[6:]
        return head + bytes(0x2A if chr(b) in "0123456789ABCDEFabcdef" else b for b in tail)
    return payload


# --- results -------------------------------------------------------------------------
@dataclass(frozen=True)
class PinBlockResult:
    """An encrypted PIN block (format 0, or 4 in mode A) and, for DUKPT, its KSN."""

    pin_block: bytes = field(repr=False)
    ksn: bytes | None = field(default=None, repr=False)
    mode: str = MODE_SESSION

    def __repr__(self) -> str:
        ksn = "" if self.ksn is None else ", ksn=<10 bytes>"
        return f"PinBlockResult(mode={self.mode}, pin_block=<{len(self.pin_block)} bytes>{ksn})"


@dataclass(frozen=True)
class PinPadStatus:
    """What an echo/status command tells about the pad."""

    model: str
    state: str
    keys: str
    echo: str


# --- client ---------------------------------------------------------------------------
class PinPad:
    """Client of a serial PIN pad speaking the command set above.

    Blocking and thread-safe for one caller at a time, except :meth:`cancel`,
    which another thread may call while :meth:`get_pin_block` waits.
    """

    def __init__(self, link: SerialLink, *, answer_timeout: float = 2.0) -> None:
        self._link = link
        self._link.set_redactor(redact_payload)
        self._answer_timeout = answer_timeout
        self._seq = 0
        self._seq_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, ack_timeout: float = 0.5, answer_timeout: float = 2.0,
             trace: SerialTraceSink | None = None) -> PinPad:
        """Open the pad at a pyserial URL (``/dev/ttyUSB0``, a pty path, ``socket://...``)."""
        try:
            link = SerialLink.open(url, ack_timeout=ack_timeout, trace=trace,
                                   redact=redact_payload)
        except SerialLinkError as exc:
            raise PinPadLinkError(exc.message) from exc
        return cls(link, answer_timeout=answer_timeout)

    @property
    def link(self) -> SerialLink:
        return self._link

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> PinPad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq = (self._seq + 1) % 100
            return self._seq

    def _send(self, req: Request) -> None:
        try:
            self._link.send(req.encode())
        except SerialLinkError as exc:
            raise PinPadLinkError(f"{req.cmd}: {exc.message}") from exc

    def _exchange(self, cmd: str, fields: tuple[str, ...], timeout: float) -> Response:
        req = Request(cmd, self._next_seq(), fields)
        self._link.drain()
        self._send(req)
        while True:
            try:
                payload = self._link.receive(timeout)
            except LinkTimeoutError:
                raise PinPadError(f"{cmd}: no answer from the PIN pad in {timeout:.1f} s",
                                  cashier_zh="密码键盘无响应",
                                  cashier_en="PIN pad not responding") from None
            except SerialLinkError as exc:
                raise PinPadLinkError(f"{cmd}: {exc.message}") from exc
            try:
                resp = decode_response(payload)
            except PinPadProtocolError:
                log.warning("%s: unreadable frame from the PIN pad ignored", cmd)
                continue
            if resp.cmd == cmd and resp.seq == req.seq:
                return resp
            log.info("stale answer %s/%02d ignored while waiting for %s/%02d",
                     resp.cmd, resp.seq, cmd, req.seq)

    @staticmethod
    def _check(resp: Response) -> None:
        rc = resp.rc
        if rc == RC_OK:
            return
        if rc == RC_CARDHOLDER_CANCEL:
            raise PinEntryCancelledError("PIN entry cancelled by the cardholder")
        if rc == RC_TERMINAL_CANCEL:
            raise PinEntryCancelledError("PIN entry cancelled by the terminal",
                                         cashier_zh="已取消输入密码",
                                         cashier_en="PIN entry cancelled")
        if rc == RC_TIMEOUT:
            raise PinPadTimeoutError("cardholder did not finish the PIN in time")
        if rc == RC_KCV_MISMATCH:
            raise KeyCheckValueError("PIN pad: working key check value mismatch")
        if rc == RC_NO_KEY:
            raise NoPinKeyError("PIN pad has no PIN key for this mode")
        raise PinPadError(f"{resp.cmd}: PIN pad answered result code {rc}")

    # -- commands ------------------------------------------------------------------------
    def status(self, text: str = "") -> PinPadStatus:
        """Echo ``text`` and read the pad's model, state and keys (a cheap round trip)."""
        resp = self._exchange("EC", (text,) if text else (), self._answer_timeout)
        self._check(resp)
        f = (*resp.fields, "", "", "", "")
        return PinPadStatus(model=f[0], state=f[1], keys=f[2], echo=f[3])

    def display(self, line1: str, line2: str = "") -> None:
        """Show two lines to the cardholder (Chinese is sent as GB18030)."""
        try:
            fields = (encode_text(line1), encode_text(line2))
        except (ValueError, UnicodeEncodeError) as exc:
            raise PinPadError(f"display text not accepted: {exc}") from None
        self._check(self._exchange("DT", fields, self._answer_timeout))

    def load_working_key(self, encrypted_pik: bytes, check_value: bytes, *,
                         aes: bool = False) -> None:
        """Load the PIN key (encrypted under the pad's master key); the pad verifies the KCV.

        ``aes``: the key is an AES PIK for format 4 PIN blocks (16/24/32 bytes).
        """
        sizes = (16, 24, 32) if aes else (8, 16, 24)
        if len(encrypted_pik) not in sizes or not 2 <= len(check_value) <= 8:
            raise PinPadError(f"working key must be {'/'.join(map(str, sizes))} bytes, "
                              "check value 2..8 bytes")
        fields = (encrypted_pik.hex().upper(), check_value.hex().upper(), "A" if aes else "T")
        self._check(self._exchange("LK", fields, self._answer_timeout))

    def get_pin_block(self, pan: str, amount: int | None, timeout: float, *,
                      min_len: int = 4, max_len: int = 12, dukpt: bool = False,
                      aes: bool = False) -> PinBlockResult:
        """Ask the cardholder for the PIN; return the encrypted PIN block.

        Format 0 under the session PIK by default, under the DUKPT PIN key with
        ``dukpt`` (the result carries the KSN), or format 4 under the AES
        session PIK with ``aes``. ``amount`` in fen is shown on the pad (None:
        not shown). Raises
        :class:`PinEntryCancelledError`, :class:`PinPadTimeoutError`, or another
        :class:`PinPadError` (including :class:`PinPadLinkError`).
        """
        if not (pan.isdigit() and 12 <= len(pan) <= 19):
            raise PinPadError("PAN must be 12..19 digits")
        if not 4 <= min_len <= max_len <= 12:
            raise PinPadError("PIN length limits must satisfy 4 <= min <= max <= 12")
        if timeout <= 0 or timeout > 999:
            raise PinPadError("PIN timeout must be 1..999 s")
        if dukpt and aes:
            raise PinPadError("choose DUKPT or AES, not both")
        mode = MODE_DUKPT if dukpt else MODE_AES if aes else MODE_SESSION
        fields = (mode, pan, str(min_len), str(max_len), str(max(1, round(timeout))),
                  str(-1 if amount is None else amount))
        log.info("PIN entry for %s (%s)", mask_pan(pan), mode)
        resp = self._exchange("PN", fields, timeout + self._answer_timeout)
        self._check(resp)
        try:
            block = bytes.fromhex(resp.fields[0])
            ksn = bytes.fromhex(resp.fields[1]) if mode == MODE_DUKPT else None
        except (IndexError, ValueError):
            raise PinPadProtocolError("PIN pad answer without a readable PIN block") from None
        if len(block) != (16 if mode == MODE_AES else 8) or (ksn is not None and len(ksn) != 10):
            raise PinPadProtocolError("PIN pad answer with a PIN block or KSN of bad length")
        return PinBlockResult(block, ksn, mode)

    def cancel(self) -> None:
        """Stop a running PIN entry (safe from another thread); waits only for the ACK."""
        self._send(Request("CN", self._next_seq()))
