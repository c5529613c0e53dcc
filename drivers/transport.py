"""The small interface every card dialogue runs over.

A :class:`CardTransport` moves one command APDU to a card and brings back the
response data and status word. PC/SC readers, the in-process virtual card, the
trace recorder and the replay transport all implement it, so the EMV dialogue
never knows which one it is talking to. Implementations are blocking; async
callers run them in a thread with a timeout.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from drivers.errors import CardRemovedError, ReaderError
from iso8583.errors import CardGoneError, CardTransportError


@runtime_checkable
class CardTransport(Protocol):
    """A powered card in a reader."""

    @property
    def atr(self) -> bytes:
        """Answer-to-reset of the card currently powered."""
        ...

    @property
    def contactless(self) -> bool:
        """True when the card is read over the contactless interface."""
        ...

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one C-APDU; return (response data, SW1SW2 as an int such as 0x9000).

        Raises :class:`drivers.errors.CardRemovedError` if the card is gone and
        :class:`drivers.errors.ReaderError` for any other transport failure
        (transports outside drivers may raise the protocol layer's
        :class:`~iso8583.errors.CardGoneError` / ``CardTransportError`` instead;
        :func:`transmit` turns those into the drivers' errors).
        """
        ...

    def close(self) -> None:
        """Power the card off and release the reader."""
        ...


def transmit(transport: CardTransport, apdu: bytes) -> tuple[bytes, int]:
    """``transport.transmit(apdu)``, raising only the drivers' own errors.

    A transport outside drivers (the emulator's in-process virtual card) raises the
    protocol layer's :class:`~iso8583.errors.CardGoneError` /
    :class:`~iso8583.errors.CardTransportError`; they come out as
    :class:`~drivers.errors.CardRemovedError` / :class:`~drivers.errors.ReaderError`.
    """
    try:
        return transport.transmit(apdu)
    except CardGoneError as exc:
        raise CardRemovedError(str(exc)) from exc
    except CardTransportError as exc:
        raise ReaderError(str(exc)) from exc
