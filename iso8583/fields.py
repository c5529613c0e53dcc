"""Field specifications: the vocabulary dialect tables are written in.

A dialect is a mapping ``field number -> FieldSpec``. The vocabulary:

``kind``
    ``n``   numeric digits; length counts digits.
    ``z``   track data (digits and the ``D`` separator, ``=`` accepted on input);
            length counts digits.
    ``b``   binary; length counts bytes; value is ``bytes``.
    ``an``  letters, digits and space; length counts characters.
    ``ans`` any printable ASCII; length counts characters.
``max_len``
    the fixed length (``len_type`` ``FIXED``) or the maximum (``LL``/``LLL``).
``len_type``
    ``FIXED``, ``LL`` (up to 99) or ``LLL`` (up to 999).
``len_enc``
    how an ``LL``/``LLL`` prefix is written: ``bcd`` (1 or 2 bytes),
    ``ascii`` (2 or 3 characters) or ``binary`` (1 or 2 bytes, big-endian).
``data_enc``
    for ``n``/``z``: ``bcd`` (two digits a byte) or ``ascii``.
``align``
    for BCD with an odd number of digits: ``right`` puts the pad nibble first
    (``0123`` for 123), ``left`` puts it last (``1230``).
``sensitive``
    what the pretty printer must hide unless told to reveal: ``pan``,
    ``track``, ``pin`` or ``key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Kind(StrEnum):
    N = "n"
    Z = "z"
    B = "b"
    AN = "an"
    ANS = "ans"


class LenType(Enum):
    FIXED = 0
    LL = 2
    LLL = 3


class Enc(StrEnum):
    BCD = "bcd"
    ASCII = "ascii"
    BINARY = "binary"


class Sensitive(StrEnum):
    PAN = "pan"
    TRACK = "track"
    PIN = "pin"
    KEY = "key"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one ISO 8583 field is laid out on the wire."""

    number: int
    name: str
    kind: Kind
    max_len: int
    len_type: LenType = LenType.FIXED
    len_enc: Enc = Enc.BCD
    data_enc: Enc = Enc.BCD
    align: str = "left"
    sensitive: Sensitive | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.number <= 128:
            raise ValueError(f"field number {self.number} out of range 2..128")
        if self.max_len <= 0:
            raise ValueError(f"field {self.number}: max_len must be positive")
        if self.len_type is LenType.LL and self.max_len > 99:
            raise ValueError(f"field {self.number}: LL field longer than 99")
        if self.len_type is LenType.LLL and self.max_len > 999:
            raise ValueError(f"field {self.number}: LLL field longer than 999")
        if self.align not in ("left", "right"):
            raise ValueError(f"field {self.number}: align must be 'left' or 'right'")

    @property
    def fixed(self) -> bool:
        return self.len_type is LenType.FIXED

    @property
    def describe(self) -> str:
        """Short type text such as ``n..19 LLVAR`` for listings."""
        dots = {LenType.FIXED: "", LenType.LL: "..", LenType.LLL: "..."}[self.len_type]
        var = {LenType.FIXED: "", LenType.LL: " LLVAR", LenType.LLL: " LLLVAR"}[self.len_type]
        return f"{self.kind.value}{dots}{self.max_len}{var}"


def n(number: int, name: str, length: int, *, align: str = "right",
      sensitive: Sensitive | None = None) -> FieldSpec:
    """Fixed-length BCD numeric field."""
    return FieldSpec(number, name, Kind.N, length, align=align, sensitive=sensitive)


def nvar(number: int, name: str, max_len: int, len_type: LenType = LenType.LL, *,
         sensitive: Sensitive | None = None) -> FieldSpec:
    """Variable-length BCD numeric field (left-aligned, BCD length prefix)."""
    return FieldSpec(number, name, Kind.N, max_len, len_type, align="left", sensitive=sensitive)


def z(number: int, name: str, max_len: int, len_type: LenType = LenType.LL) -> FieldSpec:
    """Variable-length BCD track field."""
    return FieldSpec(number, name, Kind.Z, max_len, len_type, align="left",
                     sensitive=Sensitive.TRACK)


def an(number: int, name: str, length: int, len_type: LenType = LenType.FIXED,
       kind: Kind = Kind.AN) -> FieldSpec:
    """ASCII text field, fixed or variable with a BCD length prefix."""
    return FieldSpec(number, name, kind, length, len_type, data_enc=Enc.ASCII)


def ans(number: int, name: str, length: int, len_type: LenType = LenType.FIXED) -> FieldSpec:
    return an(number, name, length, len_type, Kind.ANS)


def b(number: int, name: str, length: int, len_type: LenType = LenType.FIXED, *,
      sensitive: Sensitive | None = None) -> FieldSpec:
    """Binary field; length in bytes."""
    return FieldSpec(number, name, Kind.B, length, len_type, sensitive=sensitive)
