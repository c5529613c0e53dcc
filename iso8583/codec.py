"""Compiles field specifications into per-field encoder and decoder closures.

Each :class:`~iso8583.fields.FieldSpec` becomes one small encoder and one small
decoder specialised for its kind, length type and encodings, so the hot loop
of a message encode or decode is a dictionary lookup and a call per field,
with every validation rule still applied. Decoders take ``(data, pos)`` and
return ``(value, new_pos)``; they raise :class:`DecodeError` with the field
number and the offset of the offending byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from iso8583.errors import DecodeError, EncodeError
from iso8583.fields import Enc, FieldSpec, Kind, LenType

FieldValue = str | bytes
Encoder = Callable[[FieldValue], bytes]
Decoder = Callable[[bytes, int], tuple[FieldValue, int]]

_AN = re.compile(r"[0-9A-Za-z ]*")
_Z_IN = re.compile(r"[0-9D=]*")
_Z_OUT = re.compile(r"[0-9d]*")


def _truncated(spec: FieldSpec, pos: int, want: int, have: int) -> DecodeError:
    return DecodeError(f"truncated: needs {want} bytes, {have} left", field=spec.number, pos=pos)


# --- length prefixes ---------------------------------------------------------------


def _prefix_codec(spec: FieldSpec) -> tuple[int, Callable[[int], bytes],
                                              Callable[[bytes, int], int]]:
    """(prefix size in bytes, write(length), read(data, pos) -> length)."""
    digits = spec.len_type.value
    num = spec.number
    if spec.len_enc is Enc.BCD:
        size = (digits + 1) // 2

        def write(length: int) -> bytes:
            return bytes.fromhex(f"{length:0{size * 2}d}")

        def read(data: bytes, pos: int) -> int:
            raw = data[pos:pos + size]
            if len(raw) != size:
                raise DecodeError("truncated length prefix", field=num, pos=pos)
            text = raw.hex()
            if not text.isdigit():
                raise DecodeError(f"length prefix {text.upper()} is not BCD", field=num, pos=pos)
            return int(text)
    elif spec.len_enc is Enc.ASCII:
        size = digits

        def write(length: int) -> bytes:
            return f"{length:0{size}d}".encode("ascii")

        def read(data: bytes, pos: int) -> int:
            raw = data[pos:pos + size]
            if len(raw) != size:
                raise DecodeError("truncated length prefix", field=num, pos=pos)
            if not (raw.isdigit() and raw.isascii()):
                raise DecodeError(f"length prefix {raw!r} is not decimal", field=num, pos=pos)
            return int(raw)
    else:
        size = 1 if digits == 2 else 2

        def write(length: int) -> bytes:
            return length.to_bytes(size, "big")

        def read(data: bytes, pos: int) -> int:
            raw = data[pos:pos + size]
            if len(raw) != size:
                raise DecodeError("truncated length prefix", field=num, pos=pos)
            return int.from_bytes(raw, "big")
    return size, write, read


# --- value encoders ------------------------------------------------------------------


def _to_text(spec: FieldSpec, value: FieldValue) -> str:
    if isinstance(value, str):
        return value
    raise EncodeError(f"expected str for a {spec.kind.value} field, got bytes", field=spec.number)


def compile_encoder(spec: FieldSpec) -> Encoder:
    """Build the encoder for one field: value -> wire bytes (prefix included)."""
    num = spec.number
    max_len = spec.max_len
    fixed = spec.fixed
    kind = spec.kind
    prefix_write = _prefix_codec(spec)[1] if not fixed else None

    def with_prefix(count: int, payload: bytes) -> bytes:
        if prefix_write is None:
            return payload
        return prefix_write(count) + payload

    if kind is Kind.B:
        def enc_b(value: FieldValue) -> bytes:
            if not isinstance(value, bytes | bytearray):
                raise EncodeError("expected bytes for a binary field", field=num)
            size = len(value)
            if fixed and size != max_len:
                raise EncodeError(f"needs exactly {max_len} bytes, got {size}", field=num)
            if size > max_len:
                raise EncodeError(f"{size} bytes is over the maximum {max_len}", field=num)
            return with_prefix(size, bytes(value))
        return enc_b

    if kind in (Kind.AN, Kind.ANS):
        check_an = kind is Kind.AN

        def enc_text(value: FieldValue) -> bytes:
            text = _to_text(spec, value)
            size = len(text)
            if size > max_len:
                raise EncodeError(f"{size} characters is over the maximum {max_len}", field=num)
            if not (text.isascii() and text.isprintable()) or (
                    check_an and _AN.fullmatch(text) is None):
                raise EncodeError(f"characters not allowed in an {kind.value} field", field=num)
            if fixed and size < max_len:
                text = text.ljust(max_len)
            return with_prefix(size, text.encode("ascii"))
        return enc_text

    # n and z: digits (z also D), BCD or ASCII
    is_z = kind is Kind.Z
    right = spec.align == "right"
    bcd = spec.data_enc is Enc.BCD

    def enc_digits(value: FieldValue) -> bytes:
        text = _to_text(spec, value)
        if is_z:
            if _Z_IN.fullmatch(text) is None:
                raise EncodeError("track data may hold only digits and D/=", field=num)
            text = text.replace("=", "D")
        elif text and not (text.isdigit() and text.isascii()):
            raise EncodeError("numeric field holds a non-digit", field=num)
        size = len(text)
        if size > max_len:
            raise EncodeError(f"{size} digits is over the maximum {max_len}", field=num)
        if fixed and size < max_len:
            text = text.zfill(max_len)
            size = max_len
        if not bcd:
            return with_prefix(size, text.encode("ascii"))
        if size & 1:
            text = "0" + text if right else text + "0"
        return with_prefix(size, bytes.fromhex(text))
    return enc_digits


# --- value decoders ------------------------------------------------------------------


def compile_decoder(spec: FieldSpec) -> Decoder:
    """Build the decoder for one field: (data, pos) -> (value, new pos)."""
    num = spec.number
    max_len = spec.max_len
    kind = spec.kind
    fixed = spec.fixed
    if fixed:
        def read_len(data: bytes, pos: int) -> tuple[int, int]:
            return max_len, pos
    else:
        size, _, read_prefix = _prefix_codec(spec)

        def read_len(data: bytes, pos: int) -> tuple[int, int]:
            count = read_prefix(data, pos)
            if count > max_len:
                raise DecodeError(f"length {count} is over the maximum {max_len}",
                                  field=num, pos=pos)
            return count, pos + size

    if kind is Kind.B:
        def dec_b(data: bytes, pos: int) -> tuple[FieldValue, int]:
            count, start = read_len(data, pos)
            end = start + count
            value = data[start:end]
            if len(value) != count:
                raise _truncated(spec, start, count, len(data) - start)
            return value, end
        return dec_b

    if kind in (Kind.AN, Kind.ANS):
        check_an = kind is Kind.AN

        def dec_text(data: bytes, pos: int) -> tuple[FieldValue, int]:
            count, start = read_len(data, pos)
            end = start + count
            raw = data[start:end]
            if len(raw) != count:
                raise _truncated(spec, start, count, len(data) - start)
            if not raw.isascii():
                raise DecodeError("non-ASCII byte in a text field", field=num, pos=start)
            text = raw.decode("ascii")
            if not text.isprintable() or (check_an and _AN.fullmatch(text) is None):
                raise DecodeError(f"character not allowed in an {kind.value} field",
                                  field=num, pos=start)
            return text, end
        return dec_text

    is_z = kind is Kind.Z
    right = spec.align == "right"
    if spec.data_enc is Enc.ASCII:
        def dec_ascii_digits(data: bytes, pos: int) -> tuple[FieldValue, int]:
            count, start = read_len(data, pos)
            end = start + count
            raw = data[start:end]
            if len(raw) != count:
                raise _truncated(spec, start, count, len(data) - start)
            text = raw.decode("latin-1")
            if is_z:
                if _Z_IN.fullmatch(text) is None:
                    raise DecodeError("bad track character", field=num, pos=start)
                text = text.replace("=", "D")
            elif count and not (text.isdigit() and text.isascii()):
                raise DecodeError("non-digit in a numeric field", field=num, pos=start)
            return text, end
        return dec_ascii_digits

    def dec_bcd(data: bytes, pos: int) -> tuple[FieldValue, int]:
        digits, start = read_len(data, pos)
        nbytes = (digits + 1) >> 1
        end = start + nbytes
        raw = data[start:end]
        if len(raw) != nbytes:
            raise _truncated(spec, start, nbytes, len(data) - start)
        text = raw.hex()
        if digits & 1:
            if right:
                pad, text = text[0], text[1:]
            else:
                pad, text = text[-1], text[:-1]
            if pad != "0" and not (is_z and pad == "f"):
                raise DecodeError(f"pad nibble {pad.upper()} is not 0", field=num, pos=start)
        if is_z:
            if _Z_OUT.fullmatch(text) is None:
                raise DecodeError("non-decimal nibble in track data", field=num, pos=start)
            return text.upper(), end
        if digits and not text.isdigit():
            raise DecodeError("non-decimal BCD nibble", field=num, pos=start)
        return text, end
    return dec_bcd


def compile_normaliser(spec: FieldSpec) -> Callable[[object], FieldValue]:
    """What ``msg[n] = value`` stores: ints become zero-padded digit strings."""
    num = spec.number
    numeric = spec.kind is Kind.N
    width = spec.max_len if spec.fixed else 0

    def normalise(value: object) -> FieldValue:
        if isinstance(value, bool):
            raise EncodeError("a bool is not a field value", field=num)
        if isinstance(value, int):
            if not numeric:
                raise EncodeError("an int is only allowed in a numeric field", field=num)
            if value < 0:
                raise EncodeError("negative numbers cannot be encoded", field=num)
            return f"{value:0{width}d}"
        if isinstance(value, bytearray):
            return bytes(value)
        if isinstance(value, str | bytes):
            return value
        raise EncodeError(f"unsupported value type {type(value).__name__}", field=num)
    return normalise


__all__ = [
    "Decoder",
    "Encoder",
    "FieldValue",
    "LenType",
    "compile_decoder",
    "compile_encoder",
    "compile_normaliser",
]
