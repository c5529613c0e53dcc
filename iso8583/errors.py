"""Typed errors of the pure protocol layer.

Every error the codec raises for bad input is a :class:`DecodeError` that knows the
field and the byte offset where decoding failed, so a developer reading
``"... : field 4 pos 12"`` can go straight to the byte. Secrets (keys, PIN blocks,
full PANs) never appear in error text.
"""

from __future__ import annotations


class Iso8583Error(Exception):
    """Root of every error raised by :mod:`iso8583`."""

    title = "Protocol error"


class DecodeError(Iso8583Error):
    """Input bytes do not form a valid message, frame or TLV.

    ``field`` is the ISO field number (``0`` for the MTI, ``1`` for the bitmap,
    ``None`` when not inside a field, or a sub-element name such as ``"55.9F26"``),
    ``pos`` the byte offset into the input that was being decoded.
    """

    def __init__(self, reason: str, *, field: int | str | None = None, pos: int = 0) -> None:
        self.reason = reason
        self.field = field
        self.pos = pos
        where = f"field {field} pos {pos}" if field is not None else f"pos {pos}"
        super().__init__(f"{reason}: {where}")


class EncodeError(Iso8583Error):
    """A value cannot be encoded into the named field."""

    def __init__(self, reason: str, *, field: int | str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{reason}: field {field}" if field is not None else reason)


class FramingError(DecodeError):
    """A frame length prefix, TPDU or header is invalid."""


class TlvError(DecodeError):
    """BER-TLV data is malformed."""


class CryptoError(Iso8583Error):
    """A cryptographic operation failed (bad key length, bad PIN block, ...)."""

    title = "Security error"


class KeyCheckError(CryptoError):
    """A working key's check value does not match: the key was not loaded."""


class MacError(CryptoError):
    """A message MAC does not verify."""


class ResponseError(Iso8583Error):
    """An answer does not belong to its request (MTI, STAN or TID), or a sign-on was refused."""


class ResponseMacError(ResponseError):
    """An answer's MAC does not verify: treat as no answer (and reverse with A0)."""


class CardTransportError(Iso8583Error):
    """A card transport (reader, in-process virtual card) failed: the APDU exchange is over.

    The contract between a card transport and the card dialogue: any transport may
    raise it; the drivers raise their own cashier-facing subclass-equivalents
    (:func:`drivers.transport.transmit` turns these into ``ReaderError``).
    """

    title = "Card reader error"


class CardGoneError(CardTransportError):
    """The card left the reader (or was powered off) in the middle of a dialogue."""
