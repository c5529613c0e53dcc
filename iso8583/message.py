"""The ISO 8583 message model: an MTI and a set of numbered fields.

``Message`` is a small mutable mapping. Numeric fields hold digit strings
(an ``int`` assigned to a fixed numeric field is zero-padded to its width),
binary fields hold ``bytes`` and text fields ``str``. Named accessors cover the
fields every flow touches. ``repr`` masks card data, PIN blocks and keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from iso8583.codec import FieldValue
from iso8583.errors import EncodeError

if TYPE_CHECKING:
    from iso8583.dialect import Dialect


class Message:
    """One ISO 8583 message."""

    __slots__ = ("_fields", "_normalisers", "mti")

    def __init__(self, mti: str = "0000", fields: Mapping[int, object] | None = None, *,
                 dialect: Dialect | None = None) -> None:
        if dialect is None:
            from iso8583.dialects import get_dialect
            dialect = get_dialect()
        self.mti = mti
        self._normalisers: Mapping[int, Callable[[object], FieldValue]] = dialect.normalisers
        self._fields: dict[int, FieldValue] = {}
        if fields:
            for number, value in fields.items():
                self[number] = value

    # --- mapping protocol ------------------------------------------------------
    def __getitem__(self, number: int) -> FieldValue:
        return self._fields[number]

    def __setitem__(self, number: int, value: object) -> None:
        normalise = self._normalisers.get(number)
        if normalise is None:
            raise EncodeError("field is not defined in this dialect", field=number)
        self._fields[number] = normalise(value)

    def __delitem__(self, number: int) -> None:
        del self._fields[number]

    def __contains__(self, number: object) -> bool:
        return number in self._fields

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.mti == other.mti and self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]  # mutable

    def get(self, number: int, default: FieldValue | None = None) -> FieldValue | None:
        return self._fields.get(number, default)

    def pop(self, number: int, default: FieldValue | None = None) -> FieldValue | None:
        return self._fields.pop(number, default)

    @property
    def fields(self) -> dict[int, FieldValue]:
        """A copy of the fields in field-number order."""
        return {k: self._fields[k] for k in sorted(self._fields)}

    def copy(self) -> Message:
        clone = Message.__new__(Message)
        clone.mti = self.mti
        clone._normalisers = self._normalisers
        clone._fields = dict(self._fields)
        return clone

    def raw_items(self) -> dict[int, FieldValue]:
        """The live field dict (no copy): for codecs on the hot path."""
        return self._fields

    # --- named accessors -------------------------------------------------------
    def _text(self, number: int) -> str | None:
        value = self._fields.get(number)
        if value is None:
            return None
        return value if isinstance(value, str) else value.hex().upper()

    @property
    def pan(self) -> str | None:
        """F2 primary account number (keep out of logs: use masking)."""
        return self._text(2)

    @property
    def processing_code(self) -> str | None:  # F3
        return self._text(3)

    @property
    def amount(self) -> int | None:
        """F4 transaction amount in minor units (fen)."""
        text = self._text(4)
        return int(text) if text else None

    @property
    def stan(self) -> str | None:  # F11 system trace audit number
        return self._text(11)

    @property
    def rrn(self) -> str | None:  # F37 retrieval reference number
        return self._text(37)

    @property
    def auth_code(self) -> str | None:  # F38
        return self._text(38)

    @property
    def response_code(self) -> str | None:  # F39
        return self._text(39)

    @property
    def tid(self) -> str | None:  # F41 card acceptor terminal id
        text = self._text(41)
        return text.rstrip() if text is not None else None

    @property
    def mid(self) -> str | None:  # F42 card acceptor id (merchant)
        text = self._text(42)
        return text.rstrip() if text is not None else None

    @property
    def response_mti(self) -> str:
        """The MTI of the answer to this request (0200 -> 0210)."""
        if len(self.mti) != 4 or not self.mti.isdigit():
            raise EncodeError(f"MTI {self.mti!r} is not 4 digits", field=0)
        third = int(self.mti[2])
        return self.mti[:2] + str(third + 1 if third % 2 == 0 else third) + self.mti[3]

    @property
    def is_request(self) -> bool:
        return len(self.mti) == 4 and self.mti[2] in "02468"

    def __repr__(self) -> str:
        from iso8583.pretty import summarize
        return f"Message({self.mti!r}, {summarize(self)})"
