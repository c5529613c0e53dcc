"""ESC/POS receipt printer client over any pyserial URL or a plain file.

Commands used (Epson ESC/POS, as most Chinese receipt printers accept them):
``ESC @`` initialise; ``FS &`` / ``FS .`` Chinese character mode on/off (text
then goes as GB18030 bytes); ``ESC t n`` code page (``0`` = CP437); ``ESC E n``
bold; ``GS ! n`` character size (``0x11`` double width and height); ``ESC a n``
alignment; ``ESC d n`` feed n lines; ``GS V 66 n`` feed and cut; ``DLE EOT n``
real-time status (``1`` printer, ``4`` paper roll sensor).

Status bytes: ``DLE EOT 1`` bit 3 (0x08) = offline; ``DLE EOT 4`` bits 5-6
(0x60) = paper end, bits 2-3 (0x0C) = paper near end. On a file target no
status can be read and :meth:`ReceiptPrinter.paper_status` answers ``UNKNOWN``.

Receipt text is data, never commands: control characters in it are replaced by
spaces so a merchant name cannot smuggle an ESC sequence in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from enum import StrEnum
from typing import BinaryIO, Protocol

import serial

from drivers.errors import PaperOutError, PrinterError

log = logging.getLogger(__name__)

ESC, GS, FS, DLE, EOT = 0x1B, 0x1D, 0x1C, 0x10, 0x04
INIT = bytes([ESC, 0x40])
CHINESE_ON = bytes([FS, 0x26])
CHINESE_OFF = bytes([FS, 0x2E])
STATUS_PRINTER = 1
STATUS_OFFLINE_CAUSE = 2
STATUS_ERROR_CAUSE = 3
STATUS_PAPER = 4
OFFLINE_BIT = 0x08
PAPER_END_BITS = 0x60
PAPER_NEAR_END_BITS = 0x0C


class CodePage(StrEnum):
    """How text is sent: GB18030 in Chinese mode, or a single-byte page."""

    GB18030 = "gb18030"
    CP437 = "cp437"
    ASCII = "ascii"


class PaperStatus(StrEnum):
    OK = "ok"
    NEAR_END = "near-end"
    OUT = "out"
    UNKNOWN = "unknown"


class Align(StrEnum):
    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"


_ALIGN_CODE = {Align.LEFT: 0, Align.CENTER: 1, Align.RIGHT: 2}


class PrinterOfflineError(PrinterError):
    """The printer reports itself offline (cover open, error)."""

    cashier_zh, cashier_en = "打印机离线", "Printer offline"


class _Port(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def reset_input_buffer(self) -> None: ...


def _is_serial_target(target: str) -> bool:
    if "://" in target:
        return True
    try:
        return stat.S_ISCHR(os.stat(target).st_mode)
    except OSError:
        return False


def sanitize(text: str) -> str:
    """``text`` with control characters replaced by spaces (newlines kept)."""
    return "".join(c if c == "\n" or (c.isprintable() or c == " ") else " " for c in text)


class ReceiptPrinter:
    """An ESC/POS printer on a serial port (answers status queries) or a file (does not)."""

    def __init__(self, *, port: _Port | None = None, file: BinaryIO | None = None,
                 code_page: CodePage = CodePage.GB18030, status_timeout: float = 1.0) -> None:
        if (port is None) == (file is None):
            raise ValueError("give exactly one of port and file")
        self._port = port
        self._file = file
        self.code_page = CodePage(code_page)
        self.status_timeout = status_timeout

    @classmethod
    def open(cls, target: str, *, code_page: CodePage | str = CodePage.GB18030,
             baudrate: int = 9600, status_timeout: float = 1.0) -> ReceiptPrinter:
        """Open a serial URL / device path, or append to a regular file."""
        cp = CodePage(code_page)
        try:
            if _is_serial_target(target):
                port: _Port = serial.serial_for_url(target, baudrate=baudrate,
                                                    timeout=status_timeout)
                return cls(port=port, code_page=cp, status_timeout=status_timeout)
            return cls(file=open(target, "ab"), code_page=cp,
                       status_timeout=status_timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PrinterError(f"cannot open printer {target}: {exc}") from exc

    def close(self) -> None:
        try:
            if self._port is not None:
                self._port.close()
            if self._file is not None:
                self._file.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing printer: %s", exc)

    def __enter__(self) -> ReceiptPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw output ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send raw ESC/POS bytes."""
        try:
            if self._port is not None:
                self._port.write(data)
                self._port.flush()
            else:
                assert self._file is not None
                self._file.write(data)
                self._file.flush()
        except (serial.SerialException, OSError) as exc:
            raise PrinterError(f"printer write failed: {exc}") from exc

    def encode_text(self, text: str) -> bytes:
        """Printable bytes of ``text`` in the current code page (unmappable -> ``?``)."""
        return sanitize(text).encode(self.code_page.value, errors="replace")

    # -- commands --------------------------------------------------------------------------
    def initialize(self) -> None:
        """``ESC @`` and the code page: Chinese mode for GB18030, ``ESC t 0`` otherwise."""
        if self.code_page is CodePage.GB18030:
            self.write(INIT + CHINESE_ON)
        else:
            self.write(INIT + CHINESE_OFF + bytes([ESC, 0x74, 0]))

    def text(self, text: str, *, bold: bool = False, double: bool = False) -> None:
        """Print ``text`` (no newline added) in the given style, then back to normal."""
        out = bytearray()
        if bold:
            out += bytes([ESC, 0x45, 1])
        if double:
            out += bytes([GS, 0x21, 0x11])
        out += self.encode_text(text)
        if double:
            out += bytes([GS, 0x21, 0x00])
        if bold:
            out += bytes([ESC, 0x45, 0])
        self.write(bytes(out))

    def line(self, text: str = "", *, bold: bool = False, double: bool = False,
             align: Align | str = Align.LEFT) -> None:
        """Print one line in the given style and alignment."""
        self.write(bytes([ESC, 0x61, _ALIGN_CODE[Align(align)]]))
        self.text(text, bold=bold, double=double)
        self.write(b"\n" + bytes([ESC, 0x61, 0]))

    def feed(self, lines: int = 1) -> None:
        self.write(bytes([ESC, 0x64, max(0, min(255, lines))]))

    def cut(self, *, feed_lines: int = 3) -> None:
        """Feed ``feed_lines`` and cut (``GS V 66 n``)."""
        self.write(bytes([GS, 0x56, 66, max(0, min(255, feed_lines))]))

    # -- status ----------------------------------------------------------------------------
    def query_status(self, n: int) -> int | None:
        """Send ``DLE EOT n``; the status byte, or None on a file target."""
        if self._port is None:
            return None
        with contextlib.suppress(serial.SerialException, OSError, AttributeError):
            self._port.reset_input_buffer()
        self.write(bytes([DLE, EOT, n]))
        try:
            data = self._port.read(1)
        except (serial.SerialException, OSError) as exc:
            raise PrinterError(f"printer status read failed: {exc}") from exc
        if not data:
            raise PrinterError("printer does not answer status queries",
                               cashier_zh="打印机无响应", cashier_en="Printer not responding")
        return data[0]

    def paper_status(self) -> PaperStatus:
        """Read the paper roll sensor."""
        value = self.query_status(STATUS_PAPER)
        if value is None:
            return PaperStatus.UNKNOWN
        if value & PAPER_END_BITS:
            return PaperStatus.OUT
        if value & PAPER_NEAR_END_BITS:
            return PaperStatus.NEAR_END
        return PaperStatus.OK

    def check_ready(self) -> None:
        """Raise :class:`PaperOutError` or :class:`PrinterOfflineError` if printing would fail."""
        if self.paper_status() is PaperStatus.OUT:
            raise PaperOutError("printer reports paper end")
        value = self.query_status(STATUS_PRINTER)
        if value is not None and value & OFFLINE_BIT:
            raise PrinterOfflineError("printer reports offline")

    def print_receipt(self, lines: list[str], *, title: str | None = None) -> None:
        """Check paper, print an optional bold double-size centred title and ``lines``, cut."""
        self.check_ready()
        self.initialize()
        if title is not None:
            self.line(title, bold=True, double=True, align=Align.CENTER)
        for text in lines:
            self.line(text)
        self.cut()
