"""Human-readable listings of messages, with card data, PIN blocks and keys masked.

``format_message`` prints one line per field: number, name, value. PANs and
track data are masked, PIN blocks and key material hidden, unless the caller
passes ``reveal=True`` (a developer decoding test traffic on purpose). F55 is
expanded into its EMV tags, with the PAN-bearing tags masked the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from iso8583.codec import FieldValue
from iso8583.dialect import Dialect
from iso8583.errors import Iso8583Error
from iso8583.fields import FieldSpec, Kind, Sensitive
from iso8583.masking import mask_pan, mask_text, mask_track
from iso8583.message import Message

# EMV tags that carry the PAN or track data
_TLV_PAN_TAGS = {0x5A}
_TLV_TRACK_TAGS = {0x57, 0x56, 0x9F6B}


def _hidden(value: FieldValue) -> str:
    size = len(value)
    unit = "bytes" if isinstance(value, bytes) else "chars"
    return f"<hidden, {size} {unit}>"


def field_text(spec: FieldSpec | None, value: FieldValue, *, reveal: bool = False) -> str:
    """One field's value as shown to a person."""
    sensitive = spec.sensitive if spec is not None else None
    if not reveal and sensitive is not None:
        if sensitive is Sensitive.PAN and isinstance(value, str):
            return mask_pan(value)
        if sensitive is Sensitive.TRACK and isinstance(value, str):
            return mask_track(value)
        return _hidden(value)
    if isinstance(value, bytes):
        text = value.hex().upper()
        if reveal or spec is None or spec.fixed:
            return text
        # variable binary fields (F55 ICC data) can carry the PAN (tag 5A) as BCD
        return mask_text(text)
    return value


def _tlv_lines(data: bytes, reveal: bool) -> list[str]:
    try:
        tlv: Any = importlib.import_module("iso8583.tlv")
        items: Mapping[int, bytes] = tlv.decode_flat(data)
        names: Mapping[int, str] = getattr(tlv, "TAG_NAMES", {})
    except (ImportError, Iso8583Error):
        return []
    lines = []
    for tag, value in items.items():
        text = value.hex().upper()
        if not reveal and tag in _TLV_PAN_TAGS:
            text = mask_pan(text.rstrip("F"))
        elif not reveal and tag in _TLV_TRACK_TAGS:
            text = mask_track(text.rstrip("F"))
        lines.append(f"       {tag:X} {names.get(tag, '')}: {text}".rstrip())
    return lines


def format_message(message: Message, dialect: Dialect, *, reveal: bool = False) -> str:
    """A multi-line listing: MTI, then ``  nn name: value`` per field."""
    lines = [f"MTI {message.mti}  ({dialect.spec.title})"]
    for number, value in message.fields.items():
        spec = dialect.fields.get(number)
        name = spec.name if spec is not None else "?"
        lines.append(f"  {number:>3} {name}: {field_text(spec, value, reveal=reveal)}")
        if spec is not None and number == 55 and spec.kind is Kind.B and isinstance(value, bytes):
            lines.extend(_tlv_lines(value, reveal))
    return "\n".join(lines)


def message_dict(message: Message, dialect: Dialect, *, reveal: bool = False) -> dict[str, Any]:
    """A JSON-ready view with the same masking as :func:`format_message`."""
    fields: dict[str, str] = {}
    for number, value in message.fields.items():
        fields[str(number)] = field_text(dialect.fields.get(number), value, reveal=reveal)
    return {"mti": message.mti, "dialect": dialect.name, "fields": fields}


def summarize(message: Message) -> str:
    """Compact masked one-liner used by ``repr(Message)``."""
    from iso8583.dialects import get_dialect
    known = get_dialect().fields
    parts = []
    for number, value in message.fields.items():
        spec = known.get(number)
        text = _hidden(value) if spec is None and isinstance(value, bytes) else field_text(
            spec, value)
        parts.append(f"{number}={text}")
    return "{" + ", ".join(parts) + "}"
