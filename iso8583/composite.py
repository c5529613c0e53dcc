"""Subfield helpers for the CUP private fields F60, F61 and F63.

These fields are digit or text strings with positional subfields; the helpers
give them names so flows read ``F60(msg_type="25", batch=...)`` instead of
slicing strings. F62 (sign-on keys) is handled by :mod:`iso8583.crypto.signon`.
"""

from __future__ import annotations

from dataclasses import dataclass

from iso8583.errors import DecodeError, EncodeError


def _digits(name: str, value: str, width: int, field: int) -> str:
    if len(value) != width or not (value.isdigit() and value.isascii()):
        raise EncodeError(f"{name} must be {width} digits, got {value!r}", field=field)
    return value


@dataclass(frozen=True)
class F60:
    """F60 reserved private: 60.1 message type, 60.2 batch, 60.3 network code, ...

    60.1 n2 (22 sale, 23 void, 25 refund, 01 balance, 00 management),
    60.2 n6 batch number, 60.3 n3 network management code (000 for financial),
    60.4 n1 terminal read capability, 60.5 n1 IC condition code; newer spec
    versions add more single digits, kept in ``extra``.
    """

    msg_type: str
    batch: str = "000000"
    net_code: str = "000"
    read_capability: str = ""
    ic_condition: str = ""
    extra: str = ""

    def encode(self) -> str:
        parts = [_digits("60.1", self.msg_type, 2, 60), _digits("60.2", self.batch, 6, 60),
                 _digits("60.3", self.net_code, 3, 60)]
        if self.read_capability or self.ic_condition or self.extra:
            parts.append(_digits("60.4", self.read_capability or "0", 1, 60))
            parts.append(_digits("60.5", self.ic_condition or "0", 1, 60))
        if self.extra:
            if not (self.extra.isdigit() and self.extra.isascii()):
                raise EncodeError("60.6+ must be digits", field=60)
            parts.append(self.extra)
        return "".join(parts)

    @classmethod
    def decode(cls, value: str | bytes) -> F60:
        if not isinstance(value, str) or len(value) < 8 or not value.isdigit():
            raise DecodeError("F60 needs at least 60.1 and 60.2 as digits", field=60, pos=0)
        return cls(value[0:2], value[2:8], value[8:11] if len(value) >= 11 else "000",
                   value[11:12], value[12:13], value[13:])


@dataclass(frozen=True)
class F61:
    """F61 original message data: 61.1 batch n6, 61.2 STAN n6, 61.3 date MMDD n4.

    A void sends batch + STAN; a refund adds the original date (MMDD).
    """

    batch: str
    stan: str
    date: str | None = None

    def encode(self) -> str:
        text = _digits("61.1", self.batch, 6, 61) + _digits("61.2", self.stan, 6, 61)
        if self.date is not None:
            text += _digits("61.3", self.date, 4, 61)
        return text

    @classmethod
    def decode(cls, value: str | bytes) -> F61:
        if not isinstance(value, str) or len(value) not in (12, 16) or not value.isdigit():
            raise DecodeError("F61 must be batch(6) + STAN(6) [+ MMDD(4)]", field=61, pos=0)
        return cls(value[0:6], value[6:12], value[12:16] or None)


@dataclass(frozen=True)
class F63:
    """F63 reserved private: 63.1 card organisation an3 (CUP, VIS, MCC, ...) + free text."""

    card_organisation: str
    text: str = ""

    def encode(self) -> str:
        if len(self.card_organisation) != 3 or not self.card_organisation.isascii():
            raise EncodeError("63.1 card organisation must be 3 characters", field=63)
        return self.card_organisation + self.text

    @classmethod
    def decode(cls, value: str | bytes) -> F63:
        if not isinstance(value, str) or len(value) < 3:
            raise DecodeError("F63 must start with a 3-character card organisation",
                              field=63, pos=0)
        return cls(value[:3], value[3:])


@dataclass(frozen=True)
class F90:
    """ISO 8583:1987 F90 original data elements (n42)."""

    mti: str
    stan: str
    transmission: str  # MMDDhhmmss
    acquirer: str = "0" * 11
    forwarder: str = "0" * 11

    def encode(self) -> str:
        return (_digits("90.1", self.mti, 4, 90) + _digits("90.2", self.stan, 6, 90)
                + _digits("90.3", self.transmission, 10, 90)
                + _digits("90.4", self.acquirer.zfill(11), 11, 90)
                + _digits("90.5", self.forwarder.zfill(11), 11, 90))

    @classmethod
    def decode(cls, value: str | bytes) -> F90:
        if not isinstance(value, str) or len(value) != 42 or not value.isdigit():
            raise DecodeError("F90 must be 42 digits", field=90, pos=0)
        return cls(value[0:4], value[4:10], value[10:20], value[20:31], value[31:42])
