"""Adapters from the drivers to the core's ports: EMV card reader, PIN pad, printer.

No sockets here: a card reader adapter takes a *card source* (a function that
waits for the card and returns an open :class:`drivers.transport.CardTransport`:
a PC/SC reader, or a virtual card in-process) and runs the EMV dialogue over it.
A contact chip sale keeps the source open after the read (the card stays in the
reader, :class:`terminal.core.ports.HeldCard`) so the host's answer can go back
to the card in the second GENERATE AC; every other read closes it at once.
Contactless cards are not held: EMV contactless kernels end with the first
cryptogram (the card has left the field before the host answers).
Driver failures become :class:`terminal.core.errors.DeviceError` with the
driver's own cashier text, so no traceback reaches a cashier.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime

from drivers.emv import (
    CardReadResult,
    CryptogramType,
    EmvKernel,
    TerminalConfig,
    TransactionData,
    TransactionType,
)
from drivers.errors import CardRemovedError, DriverError
from drivers.pinpad import PinPad
from drivers.printer import ReceiptPrinter
from drivers.transport import CardTransport
from iso8583.terminal import CardInput
from terminal.core.errors import CardLeftReaderError, DeviceError
from terminal.core.ports import CardDecision, CardRead, Purpose

CardSource = Callable[[float], AbstractContextManager[CardTransport]]

#: Registered application provider id (first 5 bytes of the AID) -> card organisation (F63).
_SCHEME_BY_RID: dict[bytes, str] = {
    bytes.fromhex("A000000333"): "CUP",
    bytes.fromhex("A000000003"): "VIS",
    bytes.fromhex("A000000004"): "MCC",
    bytes.fromhex("A000000065"): "JCB",
    bytes.fromhex("A000000025"): "AEX",
}
_TXN_TYPE = {Purpose.SALE: TransactionType.SALE, Purpose.REFUND: TransactionType.REFUND,
             Purpose.VOID: TransactionType.REFUND, Purpose.BALANCE: TransactionType.BALANCE}
_CVM_ONLINE_PIN = 0x02


def scheme_for_aid(aid: bytes) -> str | None:
    return _SCHEME_BY_RID.get(bytes(aid[:5]))


def wants_online_pin(cvm_list: bytes | None) -> bool:
    """True when the card's CVM list (tag 8E) has an 'online PIN' rule."""
    if not cvm_list or len(cvm_list) < 10:
        return False
    rules = cvm_list[8:]
    return any(rules[i] & 0x3F == _CVM_ONLINE_PIN for i in range(0, len(rules) - 1, 2))


def _device_error(exc: DriverError) -> DeviceError:
    if isinstance(exc, CardRemovedError):
        return CardLeftReaderError(exc.message, cashier_zh=exc.cashier_zh,
                                   cashier_en=exc.cashier_en)
    return DeviceError(exc.message, cashier_zh=exc.cashier_zh, cashier_en=exc.cashier_en)


class _HeldEmvCard:
    """:class:`~terminal.core.ports.HeldCard` over a card source kept open after the read."""

    def __init__(self, kernel: EmvKernel, transport: CardTransport, read: CardReadResult,
                 stack: contextlib.ExitStack) -> None:
        self._kernel = kernel
        self._transport = transport
        self._read = read
        self._stack: contextlib.ExitStack | None = stack
        self._lock = threading.Lock()

    def complete(self, *, issuer_auth_data: bytes | None, approved: bool,
                 response_code: str | None) -> CardDecision:
        with self._lock:
            if self._stack is None:
                raise DeviceError("the card is no longer held: it was completed or released",
                                  cashier_zh="请重新插卡", cashier_en="Insert the card again")
            try:
                crypt = self._kernel.complete(self._transport, self._read,
                                              issuer_auth_data=issuer_auth_data,
                                              approved=approved, response_code=response_code)
            except DriverError as exc:
                raise _device_error(exc) from None
            finally:
                self._close()
        return CardDecision(crypt.type.value, crypt.ac.hex().upper())

    def release(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(DriverError, OSError):
                stack.close()


class EmvCardReader:
    """The card-reader port over any card source and the EMV kernel."""

    def __init__(self, source: CardSource, *, description: str,
                 f55_tags: Iterable[int] = (), timeout: float = 60.0,
                 config: TerminalConfig | None = None,
                 cancel: Callable[[], None] | None = None) -> None:
        self._source = source
        self._cancel = cancel
        self._description = description
        self._f55_tags = tuple(f55_tags)
        self._timeout = timeout
        self._kernel = EmvKernel(config or TerminalConfig(refund_ends_with="aac"))
        self._held: _HeldEmvCard | None = None

    def describe(self) -> str:
        return self._description

    def release(self) -> None:
        """Let a card still held from the last read go."""
        held, self._held = self._held, None
        if held is not None:
            held.release()

    close = release

    def cancel(self) -> None:
        """Wake a read waiting for the card (the cashier pressed Esc)."""
        if self._cancel is not None:
            self._cancel()

    def read_card(self, purpose: Purpose, amount: int, now: datetime, stan: str) -> CardRead:
        txn = TransactionData(_TXN_TYPE[purpose], amount, now.date(),
                              now.time().replace(microsecond=0),
                              sequence_counter=int(stan) if stan.isdigit() else 1)
        self.release()
        held: _HeldEmvCard | None = None
        try:
            with contextlib.ExitStack() as stack:  # closes the card unless it is held
                transport = stack.enter_context(self._source(self._timeout))
                result = self._kernel.read_card(transport, txn)
                if self._holds(purpose, result):
                    held = self._held = _HeldEmvCard(self._kernel, transport, result,
                                                     stack.pop_all())
        except DriverError as exc:
            raise _device_error(exc) from None
        card = CardInput(
            pan=result.pan, expiry=result.expiry,
            entry="contactless" if result.contactless else "chip",
            card_seq=result.card_sequence_number, track2=result.track2,
            icc_data=result.f55(self._f55_tags) if self._f55_tags else None,
            scheme=scheme_for_aid(result.aid))
        crypt = result.cryptogram
        return CardRead(card=card, masked_pan=result.masked_pan, label=result.label,
                        aid=result.aid.hex().upper(), contactless=result.contactless,
                        wants_online_pin=wants_online_pin(result.tags.get(0x8E)),
                        cryptogram_type=crypt.type.value if crypt else None,
                        cryptogram=crypt.ac.hex().upper() if crypt else None, held=held)

    def _holds(self, purpose: Purpose, result: CardReadResult) -> bool:
        """Keep the card for the second GENERATE AC: a contact chip sale that gave an ARQC
        the request carries in F55 (no ARQC sent, no ARPC to check)."""
        crypt = result.cryptogram
        return (purpose is Purpose.SALE and not result.contactless and bool(self._f55_tags)
                and crypt is not None and crypt.type is CryptogramType.ARQC
                and 0x9F26 in self._f55_tags)


class SerialPinPad:
    """The PIN-entry port over a serial PIN pad (:class:`drivers.pinpad.PinPad`)."""

    def __init__(self, pad: PinPad, *, description: str, timeout: float = 60.0) -> None:
        self._pad = pad
        self._description = description
        self._timeout = timeout

    def describe(self) -> str:
        return self._description

    def load_working_key(self, encrypted_pik: bytes, check_value: bytes) -> None:
        try:
            self._pad.load_working_key(encrypted_pik, check_value)
        except DriverError as exc:
            raise _device_error(exc) from None

    def get_pin_block(self, pan: str, amount: int | None) -> bytes:
        try:
            return self._pad.get_pin_block(pan, amount, self._timeout).pin_block
        except DriverError as exc:
            raise _device_error(exc) from None

    def close(self) -> None:
        with contextlib.suppress(DriverError, OSError):
            self._pad.close()


class EscPosPrinter:
    """The printer port over an ESC/POS receipt printer."""

    def __init__(self, printer: ReceiptPrinter) -> None:
        self._printer = printer

    def print_text(self, text: str) -> None:
        try:
            self._printer.print_receipt(text.splitlines())
        except DriverError as exc:
            raise _device_error(exc) from None
