"""Magnetic-stripe swipes from a serial card reader, and the POS entry mode they allow.

Wire format (what common serial/USB-serial readers send, and what the virtual
reader in :mod:`emulator.pinpad.magstripe` sends): one swipe per line ending in
CR (0x0D, an LF after it is ignored)::

    %B<PAN>^<NAME>^<YYMM><SC><discretionary>?;<PAN>=<YYMM><SC><discretionary>?\\r

Either track may be missing; a track the head could not read comes as ``%E?``
or ``;E?``. Only track 2 is used for payment (F35); the track-1 name is never
kept.

Entry mode (F22, DESIGN.md section 4): ``021``/``022`` for a swipe of a
stripe-only card, ``801``/``802`` for a fallback swipe of a chip card after the
chip read failed; the last digit is ``1`` with a PIN, ``2`` without. A chip card
(service code 2xx or 6xx) swiped without a chip failure first is refused: the
cashier must ask for the card to be inserted.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

import serial

from drivers.errors import CardDataError, CardError, CardTimeoutError, ReaderError
from drivers.masking import luhn_valid, mask_pan

CR, LF = 0x0D, 0x0A
MAX_LINE = 512
_TRACK2 = re.compile(r";([0-9]{12,19})=([0-9]{4})([0-9]{3})([0-9]*)\?")
_TRACK2_ERROR = ";E?"


class SwipeReadError(CardDataError):
    """The swipe could not be read: ask for another swipe."""

    cashier_zh, cashier_en = "刷卡失败，请重刷", "Card read failed, swipe again"


class ChipCardSwipedError(CardError):
    """A chip card was swiped although its chip was not tried (or fallback is not allowed)."""

    cashier_zh, cashier_en = "请插入芯片卡", "Chip card: please insert the card"


@dataclass(frozen=True)
class Swipe:
    """Track-2 data of one swipe; ``repr`` shows only the masked PAN."""

    pan: str = field(repr=False)
    expiry: str = field(repr=False)  # YYMM
    service_code: str
    track2: str = field(repr=False)  # as read, with "=" as separator

    @property
    def chip_card(self) -> bool:
        """Service code 2xx/6xx: the card has a chip that should be used first."""
        return self.service_code[0] in "26"

    @property
    def track2_equivalent(self) -> str:
        """Track 2 with ``D`` as separator, as F35 / tag 57 carry it."""
        return self.track2.replace("=", "D")

    def __repr__(self) -> str:
        return f"Swipe(pan={mask_pan(self.pan)}, service_code={self.service_code})"

    __str__ = __repr__


def parse_swipe(line: bytes) -> Swipe:
    """Parse one swipe line; :class:`SwipeReadError` if track 2 is missing or unreadable."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SwipeReadError("swipe is not ASCII") from None
    if _TRACK2_ERROR in text:
        raise SwipeReadError("track 2 read error reported by the reader")
    m = _TRACK2.search(text)
    if m is None:
        raise SwipeReadError("no track 2 in the swipe")
    pan, expiry, service_code, disc = m.groups()
    if not luhn_valid(pan):
        raise SwipeReadError("PAN check digit wrong: swipe again")
    if not 1 <= int(expiry[2:]) <= 12:
        raise SwipeReadError("expiry month in track 2 is not a month")
    return Swipe(pan, expiry, service_code, f"{pan}={expiry}{service_code}{disc}")


def entry_mode(swipe: Swipe, *, chip_failed: bool, pin_entered: bool) -> str:
    """F22 for this swipe, or :class:`ChipCardSwipedError` when the chip must be used.

    ``chip_failed``: the chip of this card was tried in the contact reader and
    could not be read, so a fallback swipe is allowed.
    """
    pin_digit = "1" if pin_entered else "2"
    if swipe.chip_card:
        if not chip_failed:
            raise ChipCardSwipedError("chip card swiped without trying the chip")
        return "80" + pin_digit
    return "02" + pin_digit


class _Port(Protocol):
    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...

    def reset_input_buffer(self) -> None: ...


class MagstripeReader:
    """A serial magstripe reader: blocks until a swipe line arrives."""

    def __init__(self, port: _Port) -> None:
        self._port = port
        self._buf = bytearray()

    @classmethod
    def open(cls, url: str, *, baudrate: int = 9600) -> MagstripeReader:
        try:
            port: _Port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ReaderError(f"cannot open magstripe reader {url}: {exc}") from exc
        return cls(port)

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()

    def __enter__(self) -> MagstripeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def discard_pending(self) -> None:
        """Forget swipes made before the terminal asked for one."""
        self._buf.clear()
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.reset_input_buffer()

    def read_swipe(self, timeout: float) -> Swipe:
        """The next swipe; :class:`CardTimeoutError` if none within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._buf.find(bytes([CR]))
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                line = line.strip(b"\n")
                if line:
                    return parse_swipe(line)
                continue
            if len(self._buf) > MAX_LINE:
                self._buf.clear()
                raise SwipeReadError("swipe line too long")
            if time.monotonic() >= deadline:
                raise CardTimeoutError(f"no card swiped within {timeout:.0f} s")
            try:
                self._buf += self._port.read(256)
            except (serial.SerialException, OSError) as exc:
                raise ReaderError(f"magstripe reader failed: {exc}") from exc
