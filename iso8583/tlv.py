"""BER-TLV for F55 and EMV card data: strict decoding, encoding, DOLs, tag names and masking.

The subset EMV uses (EMV 4.3 Book 3 Annex B, ISO/IEC 8825-1):

* Tags are ints of their encoded bytes (``0x9F26``). A first byte whose low
  five bits are all one (``xx011111``) is followed by continuation bytes; every
  continuation byte but the last has b8 set. Tags of more than 4 bytes are
  rejected. Bit 6 of the first byte marks a constructed object, whose value is
  itself TLV and is decoded into ``children``.
* Lengths: one byte below 0x80, or ``81 xx`` / ``82 xx xx``. The indefinite
  form ``80`` and longer forms are rejected, as are lengths running past the data.
* ``00`` and ``FF`` bytes before, between and after objects are padding
  (Book 3 Annex B) and are skipped.

Every malformed input raises :class:`~iso8583.errors.TlvError` with ``pos``, the
byte offset into the data given to :func:`decode`, and ``field`` such as
``"55.9F26"`` once the tag is known (``"55"`` before that; the prefix is the
``context`` argument).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from iso8583.bounded import keep
from iso8583.errors import EncodeError, TlvError
from iso8583.masking import mask_pan

MAX_TAG_BYTES = 4
MAX_DEPTH = 16
_PADDING = (0x00, 0xFF)


@dataclass(frozen=True)
class Tlv:
    """One data object. ``children`` is non-empty only for a constructed tag with content."""

    tag: int
    value: bytes
    children: tuple[Tlv, ...] = ()

    @property
    def constructed(self) -> bool:
        """True when bit 6 of the first tag byte is set."""
        return is_constructed(self.tag)

    def encode(self) -> bytes:
        """This object's encoding (tag, length, value)."""
        return encode_tlv(self.tag, self.value)

    def __repr__(self) -> str:
        if self.tag in SENSITIVE_TAGS or self.constructed:
            # A template's raw value would show its PAN/track children in clear.
            shown = f"<{len(self.value)} bytes>"
        else:
            shown = self.value.hex().upper()
        kids = f", children={self.children!r}" if self.children else ""
        return f"Tlv({format_tag(self.tag)}, {shown}{kids})"


def _tag_len(tag: int) -> int:
    return max(1, (tag.bit_length() + 7) // 8)


def format_tag(tag: int) -> str:
    """Upper-case hex of a tag, a whole number of bytes: ``0x9F26`` -> ``"9F26"``."""
    return f"{tag:0{2 * _tag_len(tag)}X}"


def tag_bytes(tag: int) -> bytes:
    """The encoded bytes of ``tag``; :class:`EncodeError` if they are not a well-formed tag."""
    known = _TAG_BYTES.get(tag)  # the host answers every chip request with tag 91
    if known is not None:
        return known
    return keep(_TAG_BYTES, tag, _tag_bytes(tag), _TAG_BYTES_MAX)


#: tag_bytes' results by tag (well-formed ones only; bounded, cleared when full).
_TAG_BYTES: dict[int, bytes] = {}
_TAG_BYTES_MAX = 1024


def _tag_bytes(tag: int) -> bytes:
    if tag <= 0:
        raise EncodeError(f"tag {tag} is not a BER-TLV tag")
    raw = tag.to_bytes(_tag_len(tag))
    if len(raw) > MAX_TAG_BYTES:
        raise EncodeError(f"tag {format_tag(tag)} is longer than {MAX_TAG_BYTES} bytes")
    multi = raw[0] & 0x1F == 0x1F
    if not multi:
        if len(raw) != 1:
            raise EncodeError(f"tag {format_tag(tag)}: first byte does not announce more bytes")
        return raw
    if len(raw) == 1:
        raise EncodeError(f"tag {format_tag(tag)}: continuation byte missing")
    if any(not b & 0x80 for b in raw[1:-1]) or raw[-1] & 0x80:
        raise EncodeError(f"tag {format_tag(tag)}: bad continuation bytes")
    return raw


def is_constructed(tag: int) -> bool:
    """True when ``tag`` is constructed (bit 6 of its first byte)."""
    first = tag >> (8 * (_tag_len(tag) - 1))
    return bool(first & 0x20)


def length_bytes(length: int) -> bytes:
    """Minimal BER length: short form, ``81 xx`` or ``82 xx xx``."""
    if length < 0:
        raise EncodeError(f"negative TLV length {length}")
    if length < 0x80:
        return bytes((length,))
    if length <= 0xFF:
        return bytes((0x81, length))
    if length <= 0xFFFF:
        return b"\x82" + length.to_bytes(2)
    raise EncodeError(f"TLV value of {length} bytes is longer than 65535")


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Tag, length and value of one data object."""
    return tag_bytes(tag) + length_bytes(len(value)) + bytes(value)


def encode(items: Iterable[tuple[int, bytes]] | Mapping[int, bytes]) -> bytes:
    """Concatenated TLVs of ``(tag, value)`` pairs or a mapping, in order given."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return b"".join(encode_tlv(tag, value) for tag, value in pairs)


# -- decoding -----------------------------------------------------------------


def _read_tag(data: bytes, pos: int, base: int, context: str) -> tuple[int, int]:
    start = pos
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        while True:
            if pos >= len(data):
                raise TlvError("tag runs past the end of the data", field=context, pos=base + start)
            b = data[pos]
            pos += 1
            tag = (tag << 8) | b
            if pos - start > MAX_TAG_BYTES:
                raise TlvError(
                    f"tag longer than {MAX_TAG_BYTES} bytes", field=context, pos=base + start
                )
            if not b & 0x80:
                break
    return tag, pos


def _read_length(data: bytes, pos: int, base: int, context: str, tag: int) -> tuple[int, int]:
    # the error context ("55.9F26") is only formatted when there is an error to report
    if pos >= len(data):
        raise TlvError("length missing", field=f"{context}.{format_tag(tag)}", pos=base + pos)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x80:
        raise TlvError("indefinite length (80) is not allowed",
                       field=f"{context}.{format_tag(tag)}", pos=base + pos)
    count = first & 0x7F
    if count > 2:
        raise TlvError(f"length form {first:02X} is not supported",
                       field=f"{context}.{format_tag(tag)}", pos=base + pos)
    if pos + 1 + count > len(data):
        raise TlvError("length runs past the end of the data",
                       field=f"{context}.{format_tag(tag)}", pos=base + pos)
    return int.from_bytes(data[pos + 1 : pos + 1 + count]), pos + 1 + count


def _walk(data: bytes, base: int, context: str, depth: int, tree: list[Tlv]) -> None:
    """Parse ``data`` into a tree of :class:`Tlv` (:func:`_walk_flat` is the same walk
    into a flat map; tests hold the two to the same results and errors)."""
    if depth > MAX_DEPTH:
        raise TlvError(f"constructed objects nested deeper than {MAX_DEPTH}", field=context,
                       pos=base)
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        if first in _PADDING:
            pos += 1
            continue
        tag_pos = pos
        if first & 0x1F == 0x1F:
            if pos + 1 < end and not data[pos + 1] & 0x80:  # two bytes: most EMV tags
                tag, pos = first << 8 | data[pos + 1], pos + 2
            else:
                tag, pos = _read_tag(data, pos, base, context)
        else:
            tag, pos = first, pos + 1
        if pos < end and data[pos] < 0x80:
            length = data[pos]
            pos += 1
        else:
            length, pos = _read_length(data, pos, base, context, tag)
        if pos + length > end:
            raise TlvError(f"value of {length} bytes runs past the end of the data",
                           field=f"{context}.{format_tag(tag)}", pos=base + tag_pos)
        value = data[pos : pos + length]
        children: list[Tlv] = []
        if first & 0x20:  # constructed
            _walk(value, base + pos, context, depth + 1, children)
        tree.append(Tlv(tag, value, tuple(children)))
        pos += length


def _walk_flat(data: bytes, base: int, context: str, depth: int,
               flat: dict[int, bytes], trace: _Trace | None = None) -> None:
    """:func:`_walk` into ``flat`` (primitive tag -> value, the first occurrence wins):
    the host decodes every chip request's F55 so, hence a loop of its own. ``trace``:
    where the walk read its structure and cut its values (see :class:`_Layout`)."""
    if depth > MAX_DEPTH:
        raise TlvError(f"constructed objects nested deeper than {MAX_DEPTH}", field=context,
                       pos=base)
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        if not 0x00 < first < 0xFF:  # padding (two int compares: no tuple look-up)
            if trace is not None:
                trace.read.append(base + pos)
            pos += 1
            continue
        tag_pos = pos
        if first & 0x1F != 0x1F:
            tag, pos = first, pos + 1
        elif pos + 1 < end and not data[pos + 1] & 0x80:  # two bytes: most EMV tags
            tag, pos = first << 8 | data[pos + 1], pos + 2
        else:
            tag, pos = _read_tag(data, pos, base, context)
        if pos < end and data[pos] < 0x80:
            stop = pos + 1 + data[pos]
            pos += 1
        else:
            length, pos = _read_length(data, pos, base, context, tag)
            stop = pos + length
        if stop > end:
            raise TlvError(f"value of {stop - pos} bytes runs past the end of the data",
                           field=f"{context}.{format_tag(tag)}", pos=base + tag_pos)
        if trace is not None:  # the tag's and the length's bytes: all this object read
            trace.read.extend(range(base + tag_pos, base + pos))
        if first & 0x20:  # constructed
            _walk_flat(data[pos:stop], base + pos, context, depth + 1, flat, trace)
        elif tag not in flat:
            flat[tag] = data[pos:stop]
            if trace is not None:
                trace.kept.append((tag, slice(base + pos, base + stop)))
        pos = stop


class _Trace(NamedTuple):
    """What one :func:`_walk_flat` read: the offsets of every byte it decided by (padding,
    tags, lengths) and, per tag kept, where its value lies."""

    read: list[int]
    kept: list[tuple[int, slice]]


class _Layout:
    """One arrangement of F55 (tags, lengths and padding at fixed offsets) seen before.

    The walk decides only by the bytes at ``read`` (its trace) and the data's length:
    data of that length with those same bytes there decodes to the same tags, their
    values cut at the same places, without a walk. Checking is one C call (an
    ``itemgetter`` of the offsets, compared with the bytes seen) and so is cutting, where
    the walk is a Python loop a tag: a terminal sends the same arrangement every time,
    only the values change. Nothing of the values is kept, so no result can differ.
    """

    __slots__ = ("cut", "expected", "probe", "tags")

    def __init__(self, data: bytes, trace: _Trace) -> None:
        self.probe = operator.itemgetter(*trace.read)
        self.expected = self.probe(data)
        self.tags = tuple(tag for tag, _ in trace.kept)
        self.cut = operator.itemgetter(*(where for _, where in trace.kept))

    def decode(self, data: bytes) -> dict[int, bytes] | None:
        """The flat decoding of ``data`` (of the traced length), or None: laid out otherwise."""
        if self.probe(data) != self.expected:
            return None
        return dict(zip(self.tags, self.cut(data), strict=True))


#: Layouts decode_flat has seen, by the data's length (a length may have several);
#: cleared when full, so input that never repeats its layout cannot grow it.
_LAYOUTS: dict[int, tuple[_Layout, ...]] = {}
_LAYOUTS_MAX = 64


def decode(data: bytes, *, context: str = "55") -> list[Tlv]:
    """Decode a sequence of BER-TLV objects strictly; constructed ones get ``children``."""
    out: list[Tlv] = []
    _walk(bytes(data), 0, context, 0, out)
    return out


def iter_primitives(tlvs: Iterable[Tlv]) -> Iterable[Tlv]:
    """Every primitive object, depth first, in encounter order."""
    for item in tlvs:
        if item.constructed:
            yield from iter_primitives(item.children)
        else:
            yield item


def decode_flat(data: bytes, *, context: str = "55") -> dict[int, bytes]:
    """Every primitive tag at any depth mapped to its value; the first occurrence wins.

    Same strictness as :func:`decode`, without building a tree (the host reads
    F55 this way on every chip transaction). Data laid out like data decoded before
    (the same tags and lengths at the same places) is cut, not walked: see :class:`_Layout`.
    """
    data = bytes(data)
    known = _LAYOUTS.get(len(data))
    if known is not None:
        for layout in known:
            flat = layout.decode(data)
            if flat is not None:
                return flat
    flat = {}
    trace = _Trace([], [])
    _walk_flat(data, 0, context, 0, flat, trace)
    if len(trace.read) >= 2 and len(trace.kept) >= 2:  # (itemgetter of one: not a tuple)
        if sum(map(len, _LAYOUTS.values())) >= _LAYOUTS_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[len(data)] = (*(known or ()), _Layout(data, trace))
    return flat


# -- data object lists (PDOL, CDOL1, CDOL2, DDOL, TDOL) -------------------------

#: Tags of format n: left-padded with zeros / left-truncated when the DOL length differs.
NUMERIC_TAGS: frozenset[int] = frozenset({
    0x5F24, 0x5F25, 0x5F28, 0x5F2A, 0x5F34, 0x5F36, 0x9A, 0x9C, 0x9F01, 0x9F02, 0x9F03,
    0x9F11, 0x9F15, 0x9F1A, 0x9F21, 0x9F35, 0x9F39, 0x9F3C, 0x9F3D, 0x9F41, 0x9F42, 0x9F44,
})
#: Tags of format cn: right-padded with FF / right-truncated.
COMPRESSED_NUMERIC_TAGS: frozenset[int] = frozenset({0x5A, 0x9F20})


def decode_dol(data: bytes, *, context: str = "DOL") -> list[tuple[int, int]]:
    """A data object list as ``(tag, length)`` pairs; each length is one byte."""
    data = bytes(data)
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        tag_pos = pos
        if data[pos] in _PADDING:
            raise TlvError(f"byte {data[pos]:02X} is not a tag", field=context, pos=pos)
        tag, pos = _read_tag(data, pos, 0, context)
        if pos >= len(data):
            raise TlvError("DOL entry has no length", field=f"{context}.{format_tag(tag)}",
                           pos=tag_pos)
        out.append((tag, data[pos]))
        pos += 1
    return out


def build_dol_data(dol: Iterable[tuple[int, int]], values: Mapping[int, bytes]) -> bytes:
    """Concatenate values for a DOL (EMV Book 3 5.4): unknown -> zeros, sizes fixed by format."""
    parts: list[bytes] = []
    for tag, length in dol:
        value = values.get(tag)
        if value is None or is_constructed(tag):
            parts.append(bytes(length))
        elif len(value) == length:
            parts.append(value)
        elif tag in NUMERIC_TAGS:
            parts.append(value[-length:] if len(value) > length else
                         bytes(length - len(value)) + value)
        elif tag in COMPRESSED_NUMERIC_TAGS:
            parts.append(value[:length] if len(value) > length else
                         value + b"\xff" * (length - len(value)))
        else:
            parts.append(value[:length] if len(value) > length else
                         value + bytes(length - len(value)))
    return b"".join(parts)


# -- names and masking ----------------------------------------------------------

TAG_NAMES: dict[int, str] = {
    0x42: "Issuer Identification Number",
    0x4F: "Application Identifier (ADF Name)",
    0x50: "Application Label",
    0x56: "Track 1 Data",
    0x57: "Track 2 Equivalent Data",
    0x5A: "Application PAN",
    0x5F20: "Cardholder Name",
    0x5F24: "Application Expiration Date",
    0x5F25: "Application Effective Date",
    0x5F28: "Issuer Country Code",
    0x5F2A: "Transaction Currency Code",
    0x5F2D: "Language Preference",
    0x5F30: "Service Code",
    0x5F34: "PAN Sequence Number",
    0x5F36: "Transaction Currency Exponent",
    0x61: "Application Template",
    0x6F: "FCI Template",
    0x70: "READ RECORD Response Template",
    0x71: "Issuer Script Template 1",
    0x72: "Issuer Script Template 2",
    0x77: "Response Message Template Format 2",
    0x80: "Response Message Template Format 1",
    0x82: "Application Interchange Profile",
    0x84: "Dedicated File (DF) Name",
    0x87: "Application Priority Indicator",
    0x88: "Short File Identifier",
    0x89: "Authorisation Code",
    0x8A: "Authorisation Response Code",
    0x8C: "CDOL1",
    0x8D: "CDOL2",
    0x8E: "CVM List",
    0x8F: "CA Public Key Index",
    0x90: "Issuer Public Key Certificate",
    0x91: "Issuer Authentication Data",
    0x92: "Issuer Public Key Remainder",
    0x93: "Signed Static Application Data",
    0x94: "Application File Locator",
    0x95: "Terminal Verification Results",
    0x99: "Transaction PIN Data",
    0x9A: "Transaction Date",
    0x9B: "Transaction Status Information",
    0x9C: "Transaction Type",
    0x9D: "DDF Name",
    0xA5: "FCI Proprietary Template",
    0xBF0C: "FCI Issuer Discretionary Data",
    0x9F01: "Acquirer Identifier",
    0x9F02: "Amount, Authorised",
    0x9F03: "Amount, Other",
    0x9F06: "Application Identifier (Terminal)",
    0x9F07: "Application Usage Control",
    0x9F08: "Application Version Number (Card)",
    0x9F09: "Application Version Number (Terminal)",
    0x9F0B: "Cardholder Name Extended",
    0x9F0D: "IAC - Default",
    0x9F0E: "IAC - Denial",
    0x9F0F: "IAC - Online",
    0x9F10: "Issuer Application Data",
    0x9F11: "Issuer Code Table Index",
    0x9F12: "Application Preferred Name",
    0x9F13: "Last Online ATC Register",
    0x9F14: "Lower Consecutive Offline Limit",
    0x9F15: "Merchant Category Code",
    0x9F16: "Merchant Identifier",
    0x9F17: "PIN Try Counter",
    0x9F1A: "Terminal Country Code",
    0x9F1B: "Terminal Floor Limit",
    0x9F1C: "Terminal Identification",
    0x9F1D: "Terminal Risk Management Data",
    0x9F1E: "Interface Device Serial Number",
    0x9F1F: "Track 1 Discretionary Data",
    0x9F20: "Track 2 Discretionary Data",
    0x9F21: "Transaction Time",
    0x9F26: "Application Cryptogram",
    0x9F27: "Cryptogram Information Data",
    0x9F32: "Issuer Public Key Exponent",
    0x9F33: "Terminal Capabilities",
    0x9F34: "CVM Results",
    0x9F35: "Terminal Type",
    0x9F36: "Application Transaction Counter",
    0x9F37: "Unpredictable Number",
    0x9F38: "PDOL",
    0x9F39: "POS Entry Mode",
    0x9F40: "Additional Terminal Capabilities",
    0x9F41: "Transaction Sequence Counter",
    0x9F42: "Application Currency Code",
    0x9F44: "Application Currency Exponent",
    0x9F45: "Data Authentication Code",
    0x9F46: "ICC Public Key Certificate",
    0x9F47: "ICC Public Key Exponent",
    0x9F48: "ICC Public Key Remainder",
    0x9F49: "DDOL",
    0x9F4A: "SDA Tag List",
    0x9F4B: "Signed Dynamic Application Data",
    0x9F4C: "ICC Dynamic Number",
    0x9F4D: "Log Entry",
    0x9F4E: "Merchant Name and Location",
    0x9F4F: "Log Format",
    0x9F51: "Application Currency Code (VSDC)",
    0x9F5D: "Available Offline Spending Amount",
    0x9F63: "Card Product Identification",
    0x9F66: "Terminal Transaction Qualifiers",
    0x9F6B: "Track 2 Data (contactless)",
    0x9F6C: "Card Transaction Qualifiers",
    0x9F6E: "Form Factor Indicator",
    0x9F74: "Issuer Authorisation Code (offline)",
    0x9F79: "Available Offline Amount (electronic cash)",
    0xDF31: "Issuer Script Results",
}

#: Tags whose values are card or cardholder secrets: never shown in clear.
SENSITIVE_TAGS: frozenset[int] = frozenset({
    0x56, 0x57, 0x5A, 0x5F20, 0x99, 0x9F0B, 0x9F1F, 0x9F20, 0x9F6B,
})


def display_value(tag: int, value: bytes) -> str:
    """Value as a pretty printer shows it: hex, with PANs masked and other secrets hidden."""
    if tag == 0x5A:
        digits = value.hex().upper().rstrip("F")
        if digits.isdigit():
            return mask_pan(digits)
    if tag in (0x57, 0x9F6B):
        pan, sep, _rest = value.hex().upper().partition("D")
        if sep and pan.isdigit():
            return mask_pan(pan) + "D****"
    if tag in SENSITIVE_TAGS:
        return f"<{len(value)} bytes masked>"
    return value.hex().upper()


def describe(tlvs: Iterable[Tlv], indent: int = 0) -> list[str]:
    """One line per object, children indented: ``9F26 Application Cryptogram (8): ...``."""
    lines: list[str] = []
    for item in tlvs:
        name = TAG_NAMES.get(item.tag, "?")
        head = f"{'  ' * indent}{format_tag(item.tag)} {name} ({len(item.value)})"
        if item.children:
            lines.append(head)
            lines.extend(describe(item.children, indent + 1))
        else:
            lines.append(f"{head}: {display_value(item.tag, item.value)}")
    return lines


__all__ = [
    "COMPRESSED_NUMERIC_TAGS",
    "NUMERIC_TAGS",
    "SENSITIVE_TAGS",
    "TAG_NAMES",
    "Tlv",
    "build_dol_data",
    "decode",
    "decode_dol",
    "decode_flat",
    "describe",
    "display_value",
    "encode",
    "encode_tlv",
    "format_tag",
    "is_constructed",
    "iter_primitives",
    "length_bytes",
    "mask_pan",
    "tag_bytes",
]
