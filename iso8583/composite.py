"""Subfield helpers for the CUP private fields F48 (batch upload), F60, F61 and F63.

These fields are digit or text strings with positional subfields; the helpers
give them names so flows read ``F60(msg_type="25", batch=...)`` instead of
slicing strings. F62 (sign-on keys) is handled by :mod:`iso8583.crypto.signon`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iso8583.bounded import keep
from iso8583.errors import DecodeError, EncodeError
from iso8583.masking import mask_pan
from iso8583.quickinit import quick_init


def _digits(name: str, value: str, width: int, field: int) -> str:
    if len(value) != width or not (value.isdigit() and value.isascii()):
        raise EncodeError(f"{name} must be {width} digits, got {value!r}", field=field)
    return value


@quick_init  # decoded per request: see iso8583.quickinit
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
        # The host decodes every request's F60 (classified, its batch read), and a
        # terminal's F60s repeat (one batch, a few types): an F60 is frozen, so the one
        # decoded from a text serves every decode of that text.
        known = _F60_DECODED.get(value) if cls is F60 and type(value) is str else None
        if known is not None:
            return known
        if not isinstance(value, str) or len(value) < 8 or not value.isdigit():
            raise DecodeError("F60 needs at least 60.1 and 60.2 as digits", field=60, pos=0)
        decoded = cls(value[0:2], value[2:8], value[8:11] if len(value) >= 11 else "000",
                      value[11:12], value[12:13], value[13:])
        if cls is F60:
            keep(_F60_DECODED, value, decoded, _DECODED_MAX)
        return decoded


#: F60.decode's results by text (bounded: cleared when full).
_F60_DECODED: dict[str, F60] = {}
_DECODED_MAX = 1024


@quick_init  # decoded per request: see iso8583.quickinit
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


#: 48.2 of a CUP batch upload: one item is 40 digits (organisation n2, STAN n6, PAN n20
#: right-aligned with leading zeros, amount n12); 48.1 counts them (n2). F48 holds
#: n...322 = 2 + 8 x 40, so at most 8 items go in one 0320.
UPLOAD_ITEM_DIGITS = 40
UPLOAD_ITEMS_MAX = 8
UPLOAD_DOMESTIC = "00"  # 48.2.1: CUP (domestic) card
UPLOAD_FOREIGN = "01"  # 48.2.1: card of a foreign organisation


@dataclass(frozen=True)
class UploadEntry:
    """One non-chip item in the F48 list of a CUP batch upload (60.3 = 201)."""

    organisation: str  # 00 domestic (CUP), 01 foreign
    stan: str  # the item's own STAN (voucher number), n6
    pan: str = field(repr=False)
    amount: int  # fen, n12

    def __repr__(self) -> str:
        return (f"UploadEntry(organisation={self.organisation!r}, stan={self.stan!r}, "
                f"pan={mask_pan(self.pan)!r}, amount={self.amount})")

    def encode(self) -> str:
        if self.organisation not in (UPLOAD_DOMESTIC, UPLOAD_FOREIGN):
            raise EncodeError(f"48.2.1 organisation must be 00 or 01, not {self.organisation!r}",
                              field=48)
        if not (self.pan.isdigit() and self.pan.isascii()) or not 1 <= len(self.pan) <= 20:
            raise EncodeError("48.2.3 PAN must be 1 to 20 digits", field=48)
        if not 0 <= self.amount < 10**12:
            raise EncodeError(f"48.2.4 amount {self.amount} does not fit n12", field=48)
        return (self.organisation + _digits("48.2.2", self.stan, 6, 48)
                + self.pan.rjust(20, "0") + f"{self.amount:012d}")


@dataclass(frozen=True)
class F48UploadList:
    """F48 of a CUP upload of non-chip items: 48.1 count n2, then the items (40 digits each)."""

    entries: tuple[UploadEntry, ...]

    def encode(self) -> str:
        if not 1 <= len(self.entries) <= UPLOAD_ITEMS_MAX:
            raise EncodeError(f"a batch upload carries 1 to {UPLOAD_ITEMS_MAX} items in F48, "
                              f"not {len(self.entries)}", field=48)
        return f"{len(self.entries):02d}" + "".join(e.encode() for e in self.entries)

    @classmethod
    def decode(cls, value: str | bytes) -> F48UploadList:
        if not isinstance(value, str) or len(value) < 2 or not value.isdigit():
            raise DecodeError("F48 upload list must be digits: count n2 + items", field=48, pos=0)
        count = int(value[:2])
        if not 1 <= count <= UPLOAD_ITEMS_MAX or len(value) != 2 + count * UPLOAD_ITEM_DIGITS:
            raise DecodeError(f"F48 says {count} items but holds {len(value) - 2} digits",
                              field=48, pos=0)
        entries = []
        for i in range(count):
            pos = 2 + i * UPLOAD_ITEM_DIGITS
            item = value[pos:pos + UPLOAD_ITEM_DIGITS]
            if item[:2] not in (UPLOAD_DOMESTIC, UPLOAD_FOREIGN):
                raise DecodeError(f"48.2.1 organisation {item[:2]!r} of item {i + 1}",
                                  field=48, pos=pos)
            pan = item[8:28].lstrip("0")
            if not pan:
                raise DecodeError(f"48.2.3 PAN of item {i + 1} is empty", field=48, pos=pos + 8)
            entries.append(UploadEntry(item[:2], item[2:8], pan, int(item[28:40])))
        return cls(tuple(entries))


@dataclass(frozen=True)
class UploadCounts:
    """F48 of the host's answer to the end of a batch upload (60.3 = 202).

    The item count n4 the host received; this project's host adds how many of
    them matched its ledger (n4 more). ``matched`` is None when only the count came.
    """

    received: int
    matched: int | None = None

    def encode(self) -> str:
        text = f"{self.received % 10_000:04d}"
        if self.matched is not None:
            text += f"{self.matched % 10_000:04d}"
        return text

    @classmethod
    def decode(cls, value: str | bytes) -> UploadCounts:
        if not isinstance(value, str) or len(value) not in (4, 8) or not value.isdigit():
            raise DecodeError("F48 of an upload end must be n4 (received) [+ n4 (matched)]",
                              field=48, pos=0)
        return cls(int(value[:4]), int(value[4:]) if len(value) == 8 else None)
