"""In-process card transport: a virtual card plugged straight into the EMV dialogue.

Unit tests and the demo (when pcscd is not installed) read a
:class:`emulator.card.app.VirtualCard` through :class:`InProcessCardTransport`,
which implements :class:`drivers.transport.CardTransport` with no reader, no
socket and no thread in between. It raises the protocol layer's transport errors
(:class:`~iso8583.errors.CardGoneError` when the card is gone,
:class:`~iso8583.errors.CardTransportError` otherwise); the drivers' dialogue
turns them into its own ``CardRemovedError`` / ``ReaderError``.
"""

from __future__ import annotations

from emulator.card.app import CardPoweredOff, VirtualCard
from iso8583.errors import CardGoneError, CardTransportError

__all__ = ["InProcessCardTransport"]

_MAX_CHAIN = 32  # GET RESPONSE rounds before we call the card broken


def _with_le(apdu: bytes, le: int) -> bytes:
    """The same command with its Le replaced (or added) for a 6Cxx resend."""
    if len(apdu) == 5 or (len(apdu) > 5 and len(apdu) == 6 + apdu[4]):
        return apdu[:-1] + bytes([le])
    return apdu + bytes([le])


class InProcessCardTransport:
    """A :class:`~drivers.transport.CardTransport` over a :class:`VirtualCard` object.

    Powers the card on at construction (contact or contactless interface).
    With ``auto_get_response`` (the default) 61xx and 6Cxx answers of a T=0
    card are handled here, as a PC/SC reader driver does; pass False to see
    them raw (tests of the dialogue's own handling).
    """

    def __init__(self, card: VirtualCard, contactless: bool = False, *,
                 auto_get_response: bool = True) -> None:
        self.card = card
        self.auto_get_response = auto_get_response
        self._atr = card.power_on(contactless=contactless)
        self._contactless = contactless
        self._closed = False

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def contactless(self) -> bool:
        return self._contactless

    def _raw(self, apdu: bytes) -> tuple[bytes, int]:
        if self._closed:
            raise CardTransportError("the card transport is closed")
        try:
            response = self.card.process(apdu)
        except CardPoweredOff:
            raise CardGoneError("the card was removed from the reader") from None
        return response[:-2], int.from_bytes(response[-2:], "big")

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one C-APDU; 61xx / 6Cxx are resolved unless ``auto_get_response`` is off."""
        data, sw = self._raw(apdu)
        if not self.auto_get_response:
            return data, sw
        if sw >> 8 == 0x6C:
            data, sw = self._raw(_with_le(apdu, sw & 0xFF))
        rounds = 0
        while sw >> 8 == 0x61 and rounds < _MAX_CHAIN:
            more, sw = self._raw(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
            data += more
            rounds += 1
        return data, sw

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.card.power_off()
