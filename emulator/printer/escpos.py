"""ESC/POS decoder of the virtual printer: bytes in, the receipt text as it would print out.

Handles the commands receipt printers commonly get (see :mod:`drivers.printer`
for the list the terminal sends) plus the variable-length ones that must be
skipped whole (barcodes, raster images, ``GS (`` functions). Unknown ``ESC``/
``GS``/``FS`` commands are skipped as two bytes. In Chinese mode (``FS &``)
bytes 0x81..0xFE start GB18030 characters; otherwise bytes go through the
code page chosen by ``ESC t`` (CP437 by default). Input may arrive in any
chunks; an incomplete command waits for the next chunk. No input raises.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
LF, CR, HT, FF = 0x0A, 0x0D, 0x09, 0x0C
MAX_SKIP = 1 << 20  # a variable-length command longer than this is treated as garbage

# Fixed argument counts after ESC x / GS x / FS x.
_ESC_ARGS = {0x40: 0, 0x45: 1, 0x21: 1, 0x61: 1, 0x64: 1, 0x74: 1, 0x2D: 1, 0x4A: 1, 0x4D: 1,
             0x47: 1, 0x52: 1, 0x70: 3, 0x32: 0, 0x33: 1, 0x56: 1, 0x7B: 1, 0x20: 1, 0x24: 2,
             0x5C: 2, 0x63: 2, 0x69: 0, 0x6D: 0, 0x3D: 1}
_GS_ARGS = {0x21: 1, 0x42: 1, 0x4C: 2, 0x57: 2, 0x68: 1, 0x77: 1, 0x48: 1, 0x66: 1, 0x61: 1,
            0x72: 1, 0x49: 1, 0x62: 1, 0x24: 2, 0x5C: 2}
_FS_ARGS = {0x26: 0, 0x2E: 0, 0x21: 1, 0x43: 1, 0x57: 1, 0x2D: 1, 0x53: 2, 0x55: 0}
_CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 16: "cp1252",
               17: "cp866", 19: "cp858"}


def display_width(text: str) -> int:
    """Columns ``text`` takes on a receipt: CJK full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


@dataclass
class EscPosDecoder:
    """Stateful decoder; read :attr:`receipts` (cut receipts) and :meth:`current`."""

    width: int = 32  # columns of Font A on 58 mm paper, for alignment
    receipts: list[str] = field(default_factory=list)
    status_queries: list[int] = field(default_factory=list)
    chinese: bool = False
    code_page: str = "cp437"
    bold: bool = False
    double: bool = False
    align: int = 0
    _lines: list[str] = field(default_factory=list)
    _line: list[str] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[int]:
        """Consume bytes; return the ``DLE EOT n`` status queries found (n values), in order."""
        self._buf += data
        queries: list[int] = []
        pos = 0
        buf = self._buf
        while pos < len(buf):
            used = self._step(buf, pos, queries)
            if used == 0:
                break  # incomplete command or character: wait for more bytes
            pos += used
        del buf[:pos]
        self.status_queries += queries
        return queries

    def _step(self, buf: bytearray, pos: int, queries: list[int]) -> int:
        b = buf[pos]
        avail = len(buf) - pos
        if b == ESC:
            return self._command(buf, pos, _ESC_ARGS, self._esc)
        if b == GS:
            return self._gs(buf, pos)
        if b == FS:
            return self._command(buf, pos, _FS_ARGS, self._fs)
        if b == DLE:
            if avail < 2:
                return 0
            if buf[pos + 1] in (0x04, 0x05):  # DLE EOT n / DLE ENQ n
                if avail < 3:
                    return 0
                if buf[pos + 1] == 0x04:
                    queries.append(buf[pos + 2])
                return 3
            if buf[pos + 1] == 0x14:  # DLE DC4 fn m t: real-time pulse / power-off
                return 5 if avail >= 5 else 0
            return 2
        if b in (LF, FF):
            self._newline()
            return 1
        if b == HT:
            self._line.append(" " * (8 - len("".join(self._line)) % 8))
            return 1
        if b < 0x20 or b == 0x7F:
            return 1  # CR and other control bytes print nothing
        if self.chinese and 0x81 <= b <= 0xFE:
            if avail < 2:
                return 0
            n = 4 if 0x30 <= buf[pos + 1] <= 0x39 else 2
            if avail < n:
                return 0
            self._line.append(bytes(buf[pos:pos + n]).decode("gb18030", errors="replace"))
            return n
        if b < 0x80:
            self._line.append(chr(b))
        else:
            self._line.append(bytes([b]).decode(self.code_page, errors="replace"))
        return 1

    def _command(self, buf: bytearray, pos: int, table: dict[int, int],
                 apply: Callable[[int, bytes], None]) -> int:
        if len(buf) - pos < 2:
            return 0
        cmd = buf[pos + 1]
        nargs = table.get(cmd)
        if nargs is None:
            return 2
        if len(buf) - pos < 2 + nargs:
            return 0
        args = bytes(buf[pos + 2:pos + 2 + nargs])
        apply(cmd, args)
        return 2 + nargs

    def _esc(self, cmd: int, args: bytes) -> None:
        if cmd == 0x40:  # ESC @: back to power-on modes
            self.chinese = False
            self.code_page = "cp437"
            self.bold = self.double = False
            self.align = 0
        elif cmd == 0x45:
            self.bold = bool(args[0] & 1)
        elif cmd == 0x21:
            self.bold = bool(args[0] & 0x08)
            self.double = bool(args[0] & 0x30)
        elif cmd == 0x61:
            self.align = args[0] % 48 if args[0] >= 48 else args[0]
        elif cmd == 0x64:
            for _ in range(args[0]):
                self._newline()
        elif cmd == 0x74:
            self.code_page = _CODE_PAGES.get(args[0], "cp437")

    def _fs(self, cmd: int, _args: bytes) -> None:
        if cmd == 0x26:
            self.chinese = True
        elif cmd == 0x2E:
            self.chinese = False

    def _gs(self, buf: bytearray, pos: int) -> int:
        avail = len(buf) - pos
        if avail < 2:
            return 0
        cmd = buf[pos + 1]
        if cmd == 0x56:  # GS V m [n]: cut
            if avail < 3:
                return 0
            m = buf[pos + 2]
            size = 4 if m in (65, 66, 97, 98, 103, 104) else 3
            if avail < size:
                return 0
            self._cut()
            return size
        if cmd == 0x6B:  # GS k: barcode
            return self._barcode(buf, pos)
        if cmd == 0x76:  # GS v 0 m xL xH yL yH d...: raster image
            if avail < 8:
                return 0
            size = 8 + (buf[pos + 4] + 256 * buf[pos + 5]) * (buf[pos + 6] + 256 * buf[pos + 7])
            return self._skip(avail, size)
        if cmd in (0x28, 0x38):  # GS ( fn pL pH ... / GS 8 L p1..p4 ...
            if cmd == 0x38:
                if avail < 7:
                    return 0
                p = buf[pos + 3:pos + 7]
                size = 7 + p[0] + (p[1] << 8) + (p[2] << 16) + (p[3] << 24)
                return self._skip(avail, size)
            if avail < 5:
                return 0
            return self._skip(avail, 5 + buf[pos + 3] + 256 * buf[pos + 4])
        nargs = _GS_ARGS.get(cmd)
        if nargs is None:
            return 2
        if avail < 2 + nargs:
            return 0
        if cmd == 0x21:
            self.double = buf[pos + 2] != 0
        return 2 + nargs

    def _barcode(self, buf: bytearray, pos: int) -> int:
        avail = len(buf) - pos
        if avail < 3:
            return 0
        m = buf[pos + 2]
        if m <= 6:
            end = buf.find(0, pos + 3)
            if end < 0:
                return 0 if avail < MAX_SKIP else 3
            self._line.append("[barcode]")
            return end - pos + 1
        if avail < 4:
            return 0
        size = 4 + buf[pos + 3]
        if avail < size:
            return 0
        self._line.append("[barcode]")
        return size

    @staticmethod
    def _skip(avail: int, size: int) -> int:
        if size > MAX_SKIP:
            return 2  # absurd length: take only the command bytes as garbage
        return size if avail >= size else 0

    # -- rendering ------------------------------------------------------------------------
    def _newline(self) -> None:
        text = "".join(self._line)
        self._line.clear()
        pad = self.width - display_width(text)
        if pad > 0 and self.align == 1:
            text = " " * (pad // 2) + text
        elif pad > 0 and self.align == 2:
            text = " " * pad + text
        self._lines.append(text.rstrip())

    def _cut(self) -> None:
        if self._line:
            self._newline()
        self.receipts.append("\n".join(self._lines))
        self._lines.clear()

    def current(self) -> str:
        """Text printed since the last cut (the unfinished line included)."""
        lines = [*self._lines, "".join(self._line)] if self._line else list(self._lines)
        return "\n".join(lines)


def render(data: bytes, *, width: int = 32) -> str:
    """The whole print job as text: receipts separated by a cut line, then any uncut rest."""
    dec = EscPosDecoder(width=width)
    dec.feed(data)
    parts = [*dec.receipts]
    rest = dec.current()
    if rest:
        parts.append(rest)
    return "\n-------- cut --------\n".join(parts)
