"""PC/SC card reader driver on pyscard: find a reader, wait for a card, talk APDUs.

:class:`PcscReader` wraps one reader (chosen by name or a piece of its name)
and gives the terminal what it needs at the counter: :meth:`PcscReader.wait_for_card`
and :meth:`PcscReader.wait_for_removal` with timeouts (pcscd's own event wait,
``SCardGetStatusChange``; pcscd polls readers about every 400 ms, so nothing
here sleeps a fixed time), and :meth:`PcscReader.connect`, which returns a
:class:`PcscCardTransport` implementing :class:`drivers.transport.CardTransport`
over T=0 or T=1, whichever the card and reader agreed on.

The transport resolves the T=0 transmission details itself: a ``61xx`` answer is
followed by GET RESPONSE until the data is complete, and a ``6Cxx`` answer makes
it resend the command with Le = xx, once. Callers see the final data and SW.

Recovery: a pyscard context dies with pcscd. Any call that fails with "no
service", "service stopped" or "invalid handle" throws the context away,
establishes a new one and retries once; a card session cannot survive a pcscd
restart, so an open transport raises :class:`~drivers.errors.ReaderError` and the
dialogue starts again. A reader that disappears raises
:class:`~drivers.errors.NoReaderError`; a card pulled out raises
:class:`~drivers.errors.CardRemovedError`. Every error carries a cashier message.

Logs never carry APDU payloads (they hold PANs and track data): only the
instruction byte, lengths and status words.

The low-level ``smartcard.scard`` module is imported lazily and can be replaced
(``scard_api=``) so the logic is unit-tested without pcscd.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from types import ModuleType
from typing import Any, cast

from drivers.errors import (
    CardRemovedError,
    CardTimeoutError,
    DriverError,
    NoReaderError,
    ReaderError,
)
from drivers.masking import install_masking_filter

__all__ = [
    "PcscCardTransport",
    "PcscReader",
    "is_contactless",
    "is_contactless_atr",
    "list_readers",
    "transmit_with_chaining",
]

log = install_masking_filter(logging.getLogger(__name__))

_MAX_GET_RESPONSE = 32  # rounds of 61xx before the card is called broken
_REMOVAL_CONFIRM_S = 1.0  # pcscd polls about every 400 ms: two polls and a margin
_ESTABLISH_RETRY_S = 0.1  # pcscd has no "service is back" event to wait on
# SCardStatus card states of pcsc-lite (a bit mask; pyscard does not export them):
# present, swallowed, powered, negotiable, specific all mean "a card is in".
_PCSCLITE_CARD_IN = 0x0004 | 0x0008 | 0x0010 | 0x0020 | 0x0040

# Reader-name fragments that mark the contactless interface of common readers
# (ACS "PICC", Identiv/OMNIKEY "CL", "Contactless" in many product names).
_CONTACTLESS_NAME_HINTS = ("picc", "contactless", " cl ", "-cl ", "nfc")


def _scard() -> ModuleType:
    try:
        from smartcard import scard  # loaded on use: unit tests pass a fake
    except ImportError as exc:  # pragma: no cover - pyscard is a project dependency
        raise ReaderError(f"pyscard is not installed: {exc}",
                          cashier_zh="读卡器驱动未安装",
                          cashier_en="Card reader driver not installed") from exc
    return cast(ModuleType, scard)


def _u32(code: int) -> int:
    return code & 0xFFFFFFFF


def is_contactless_atr(atr: bytes) -> bool:
    """True for the ATR a PC/SC reader builds for a contactless card (PC/SC part 3:
    ``3B 8x 80 01 ...``, historical bytes from the ISO 14443 answer)."""
    return len(atr) >= 4 and atr[0] == 0x3B and atr[1] & 0xF0 == 0x80 \
        and atr[2] == 0x80 and atr[3] == 0x01


def is_contactless(reader_name: str, atr: bytes) -> bool:
    """Best guess whether a card in ``reader_name`` with ``atr`` is read contactless."""
    name = f" {reader_name.lower()} "
    return is_contactless_atr(atr) or any(h in name for h in _CONTACTLESS_NAME_HINTS)


def _with_le(apdu: bytes, le: int) -> bytes:
    """The same command with its Le replaced (or added) for a 6Cxx resend."""
    if len(apdu) == 5 or (len(apdu) > 5 and len(apdu) == 6 + apdu[4]):
        return apdu[:-1] + bytes([le])
    return apdu + bytes([le])


def transmit_with_chaining(raw: Any, apdu: bytes) -> tuple[bytes, int]:
    """Send ``apdu`` through ``raw(apdu) -> (data, sw)`` resolving 6Cxx and 61xx.

    A 6Cxx answer is resent once with Le = xx (a second 6Cxx is returned as is);
    61xx answers are followed by GET RESPONSE, the pieces concatenated. Whatever
    SW ends the exchange is returned, so a broken chain shows as the card's SW.
    """
    data, sw = raw(apdu)
    if sw >> 8 == 0x6C:
        data, sw = raw(_with_le(apdu, sw & 0xFF))
    rounds = 0
    while sw >> 8 == 0x61 and rounds < _MAX_GET_RESPONSE:
        more, sw = raw(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
        data += more
        rounds += 1
    return data, sw


def _service_lost(api: ModuleType, code: int) -> bool:
    return _u32(code) in {_u32(api.SCARD_E_NO_SERVICE), _u32(api.SCARD_E_SERVICE_STOPPED),
                          _u32(api.SCARD_E_INVALID_HANDLE)}


def _reader_gone(api: ModuleType, code: int) -> bool:
    return _u32(code) in {_u32(api.SCARD_E_READER_UNAVAILABLE), _u32(api.SCARD_E_UNKNOWN_READER),
                          _u32(api.SCARD_E_NO_READERS_AVAILABLE)}


def _card_gone(api: ModuleType, code: int) -> bool:
    return _u32(code) in {_u32(api.SCARD_W_REMOVED_CARD), _u32(api.SCARD_E_NO_SMARTCARD),
                          _u32(api.SCARD_W_RESET_CARD), _u32(api.SCARD_W_UNPOWERED_CARD)}


def _message(api: ModuleType, code: int) -> str:
    try:
        return f"{api.SCardGetErrorMessage(code)} (0x{_u32(code):08X})"
    except Exception:  # only for a log text
        return f"0x{_u32(code):08X}"


def _service_error(api: ModuleType, code: int) -> ReaderError:
    return ReaderError(f"PC/SC service unavailable: {_message(api, code)}",
                       cashier_zh="读卡器服务未运行", cashier_en="Card reader service not running")


class _Context:
    """A pyscard context that re-establishes itself after pcscd restarts."""

    def __init__(self, api: ModuleType) -> None:
        self.api = api
        self._handle: Any = None
        self._lock = threading.Lock()

    def handle(self) -> Any:
        with self._lock:
            if self._handle is None:
                code, handle = self.api.SCardEstablishContext(self.api.SCARD_SCOPE_USER)
                if code != self.api.SCARD_S_SUCCESS:
                    raise _service_error(self.api, code)
                self._handle = handle
            return self._handle

    def drop(self) -> None:
        """Forget the context (pcscd went away); the next call makes a new one."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            try:
                self.api.SCardReleaseContext(handle)
            except Exception:  # the daemon that owned it is gone anyway
                log.debug("releasing a dead PC/SC context failed")

    def call(self, name: str, *args: Any) -> tuple[Any, ...]:
        """Call ``SCard<name>(context, *args)``; on a lost service re-establish and retry once."""
        for attempt in (1, 2):
            result = getattr(self.api, "SCard" + name)(self.handle(), *args)
            code = result[0]
            if _service_lost(self.api, code) and attempt == 1:
                log.info("PC/SC context lost (%s); re-establishing", _message(self.api, code))
                self.drop()
                continue
            return tuple(result)
        raise AssertionError("unreachable")  # pragma: no cover


def list_readers(*, scard_api: ModuleType | None = None) -> list[str]:
    """Names of the PC/SC readers present now (empty when there are none)."""
    ctx = _Context(scard_api or _scard())
    try:
        return _list(ctx)
    finally:
        ctx.drop()


def _list(ctx: _Context) -> list[str]:
    code, names = ctx.call("ListReaders", [])
    api = ctx.api
    if _u32(code) == _u32(api.SCARD_E_NO_READERS_AVAILABLE):
        return []
    if code != api.SCARD_S_SUCCESS:
        if _service_lost(api, code):
            raise _service_error(api, code)
        raise ReaderError(f"listing readers failed: {_message(api, code)}")
    return [str(n) for n in names]


class PcscReader:
    """One PC/SC reader, chosen by exact name or by a piece of it (``"PICC"``, ``"00 00"``).

    ``name`` None takes the first reader. ``contactless`` None detects the
    interface from the ATR and the reader name; True/False forces it.
    """

    def __init__(self, name: str | None = None, *, contactless: bool | None = None,
                 scard_api: ModuleType | None = None) -> None:
        self.wanted = name
        self.force_contactless = contactless
        self._ctx = _Context(scard_api or _scard())
        self.api = self._ctx.api
        self._name: str | None = None

    # --- readers ---------------------------------------------------------------------
    def readers(self) -> list[str]:
        return _list(self._ctx)

    @property
    def name(self) -> str:
        """The full reader name (resolved on first use)."""
        if self._name is None:
            self._name = self._resolve()
        return self._name

    def _resolve(self) -> str:
        names = self.readers()
        if self.wanted is None:
            if names:
                return names[0]
        else:
            if self.wanted in names:
                return self.wanted
            matches = [n for n in names if self.wanted.lower() in n.lower()]
            if matches:
                return matches[0]
        wanted = "any reader" if self.wanted is None else f"reader {self.wanted!r}"
        raise NoReaderError(f"no PC/SC {wanted}; present: {names or 'none'}")

    # --- card events -----------------------------------------------------------------
    def _state(self, current: int, timeout_ms: int) -> tuple[int, int, bytes]:
        """One SCardGetStatusChange on our reader: (result code, event state, ATR)."""
        code, states = self._ctx.call("GetStatusChange", timeout_ms, [(self.name, current)])
        if code != self.api.SCARD_S_SUCCESS:
            return code, current, b""
        _reader, event, atr = states[0]
        return code, int(event), bytes(atr)

    def _wait(self, want_present: bool, timeout: float) -> bytes:
        api = self.api
        deadline = time.monotonic() + max(0.0, timeout)
        current = api.SCARD_STATE_UNAWARE
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                code, event, atr = self._state(current, remaining_ms)
            except ReaderError:
                # pcscd is down (restarting?): keep trying until the deadline.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_ESTABLISH_RETRY_S)
                current = api.SCARD_STATE_UNAWARE
                continue
            if _u32(code) == _u32(api.SCARD_E_TIMEOUT):
                what = "card" if want_present else "card removal"
                raise CardTimeoutError(f"no {what} within {timeout:.1f} s in {self.name}")
            if _u32(code) == _u32(api.SCARD_E_CANCELLED):
                raise CardTimeoutError("waiting for the card was cancelled",
                                       cashier_zh="已取消", cashier_en="Cancelled")
            if _service_lost(api, code):
                self._ctx.drop()
                current = api.SCARD_STATE_UNAWARE
                continue
            if _reader_gone(api, code) or event & (api.SCARD_STATE_UNKNOWN
                                                   | api.SCARD_STATE_UNAVAILABLE):
                self._name = None
                raise NoReaderError(f"reader {self.wanted or ''!r} is gone (unplugged?)",
                                    cashier_zh="读卡器已断开",
                                    cashier_en="Card reader disconnected")
            if code != api.SCARD_S_SUCCESS:
                raise ReaderError(f"waiting for the card failed: {_message(api, code)}")
            present = bool(event & api.SCARD_STATE_PRESENT) and not event & api.SCARD_STATE_MUTE
            if present == want_present:
                return atr
            if time.monotonic() >= deadline:
                what = "card" if want_present else "card removal"
                raise CardTimeoutError(f"no {what} within {timeout:.1f} s in {self.name}")
            current = event & ~api.SCARD_STATE_CHANGED

    def card_present(self) -> bool:
        """True when a (responsive) card is in the reader now."""
        try:
            self._wait(True, 0)
        except CardTimeoutError:
            return False
        return True

    def wait_for_card(self, timeout: float) -> bytes:
        """Block until a card is in the reader; return its ATR.

        Raises :class:`CardTimeoutError` after ``timeout`` seconds,
        :class:`NoReaderError` if the reader is not there.
        """
        return self._wait(True, timeout)

    def wait_for_removal(self, timeout: float) -> None:
        """Block until the reader is empty; :class:`CardTimeoutError` after ``timeout`` s."""
        self._wait(False, timeout)

    def cancel(self) -> None:
        """Wake a :meth:`wait_for_card` blocked in another thread (it raises CardTimeoutError)."""
        with contextlib.suppress(ReaderError):  # no service: nothing is waiting on it
            self.api.SCardCancel(self._ctx.handle())

    # --- connect --------------------------------------------------------------------------
    def connect(self) -> PcscCardTransport:
        """Connect to the card in the reader (T=0 or T=1, shared) and return its transport."""
        api = self.api
        protocols = api.SCARD_PROTOCOL_T0 | api.SCARD_PROTOCOL_T1
        code, hcard, protocol = self._ctx.call("Connect", self.name, api.SCARD_SHARE_SHARED,
                                               protocols)
        if code != api.SCARD_S_SUCCESS:
            if _u32(code) == _u32(api.SCARD_W_UNRESPONSIVE_CARD):
                raise CardRemovedError(f"the card in {self.name} does not answer (no ATR)",
                                       cashier_zh="卡片无响应，请重新插卡",
                                       cashier_en="Card not responding, insert it again")
            if _card_gone(api, code):
                raise CardRemovedError(f"no card in {self.name}: {_message(api, code)}",
                                       cashier_zh="请插卡", cashier_en="Please insert the card")
            if _reader_gone(api, code):
                self._name = None
                raise NoReaderError(f"reader gone: {_message(api, code)}",
                                    cashier_zh="读卡器已断开",
                                    cashier_en="Card reader disconnected")
            if _service_lost(api, code):
                raise _service_error(api, code)
            raise ReaderError(f"connecting to the card failed: {_message(api, code)}")
        code, _reader, _state, _proto, atr = api.SCardStatus(hcard)
        atr_bytes = bytes(atr) if code == api.SCARD_S_SUCCESS else b""
        contactless = (self.force_contactless if self.force_contactless is not None
                       else is_contactless(self.name, atr_bytes))
        log.info("card connected in %s: protocol %s, %s", self.name,
                 "T=1" if protocol == api.SCARD_PROTOCOL_T1 else "T=0",
                 "contactless" if contactless else "contact")
        return PcscCardTransport(self, hcard, int(protocol), atr_bytes, contactless)

    def close(self) -> None:
        """Release the PC/SC context."""
        self._ctx.drop()

    def __enter__(self) -> PcscReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcscCardTransport:
    """A connected card: :class:`drivers.transport.CardTransport` over PC/SC."""

    def __init__(self, reader: PcscReader, hcard: Any, protocol: int, atr: bytes,
                 contactless: bool) -> None:
        self.reader = reader
        self.api = reader.api
        self._hcard = hcard
        self._protocol = protocol
        self._atr = atr
        self._contactless = contactless
        self._closed = False

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def contactless(self) -> bool:
        return self._contactless

    @property
    def protocol(self) -> str:
        """``"T=0"`` or ``"T=1"``."""
        return "T=1" if self._protocol == self.api.SCARD_PROTOCOL_T1 else "T=0"

    def _raw(self, apdu: bytes) -> tuple[bytes, int]:
        api = self.api
        if self._closed:
            raise ReaderError("the card connection is closed")
        pci = api.SCARD_PCI_T1 if self._protocol == api.SCARD_PROTOCOL_T1 else api.SCARD_PCI_T0
        code, response = api.SCardTransmit(self._hcard, pci, list(apdu))
        if code != api.SCARD_S_SUCCESS:
            raise self._transmit_error(code)
        if len(response) < 2:
            # vpcd (and some readers) answer "success, no bytes" when the card is
            # pulled mid-command; pcscd only notices at its next poll.
            if self._removal_confirmed():
                raise CardRemovedError("card removed during the dialogue (empty response)")
            raise ReaderError(f"reader returned {len(response)} bytes (no status word)")
        out = bytes(response)
        sw = int.from_bytes(out[-2:], "big")
        # Lengths and SW only: the payload may carry a PAN or track 2.
        log.debug("APDU ins=%02X lc=%d -> %d data bytes, SW=%04X",
                  apdu[1] if len(apdu) > 1 else 0, max(0, len(apdu) - 4), len(out) - 2, sw)
        return out[:-2], sw

    def _transmit_error(self, code: int) -> ReaderError:
        api = self.api
        if _card_gone(api, code):
            return CardRemovedError(f"card removed during the dialogue: {_message(api, code)}")
        if _service_lost(api, code):
            self.reader._ctx.drop()  # the transport belongs to its reader
            self._closed = True
            return ReaderError(f"PC/SC service restarted during the dialogue: "
                               f"{_message(api, code)}",
                               cashier_zh="读卡器服务已重启，请重新读卡",
                               cashier_en="Card reader restarted, please present the card again")
        if _reader_gone(api, code):
            self._closed = True
            return NoReaderError(f"reader gone during the dialogue: {_message(api, code)}",
                                 cashier_zh="读卡器已断开", cashier_en="Card reader disconnected")
        # A card pulled out mid-exchange often shows as "not transacted" first;
        # ask pcscd whether it is still there to give the cashier the real reason.
        if self._removal_confirmed():
            return CardRemovedError(f"card removed during the dialogue: {_message(api, code)}")
        return ReaderError(f"card exchange failed: {_message(api, code)}")

    def _removal_confirmed(self) -> bool:
        """After a failed exchange: is the card gone (now, or by pcscd's next poll)?"""
        if not self._card_still_there():
            return True
        try:
            self.reader.wait_for_removal(_REMOVAL_CONFIRM_S)
        except DriverError:
            return False
        return True

    def _card_still_there(self) -> bool:
        api = self.api
        try:
            code, _reader, state, _proto, _atr = api.SCardStatus(self._hcard)
        except Exception:  # a failing status call means "gone" here
            return False
        return bool(code == api.SCARD_S_SUCCESS and state & _PCSCLITE_CARD_IN)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one C-APDU; 61xx and 6Cxx are resolved here. See :class:`CardTransport`."""
        if len(apdu) < 4:
            raise ValueError("a C-APDU has at least 4 bytes")
        return transmit_with_chaining(self._raw, apdu)

    def close(self) -> None:
        """Power the card down and disconnect (safe to call twice or after errors)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.api.SCardDisconnect(self._hcard, self.api.SCARD_UNPOWER_CARD)
        except Exception:  # closing must not raise over a dead handle
            log.debug("disconnect failed; the handle was already gone")

    def __enter__(self) -> PcscCardTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
