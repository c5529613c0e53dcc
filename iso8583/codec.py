"""Compiles field specifications into per-field encoder and decoder closures.

Each :class:`~iso8583.fields.FieldSpec` becomes one small encoder and one small
decoder specialised for its kind, length type and encodings, so the hot loop
of a message encode or decode is a dictionary lookup and a call per field,
with every validation rule still applied. Decoders take ``(data, pos)`` and
return ``(value, new_pos)``; they raise :class:`DecodeError` with the field
number and the offset of the offending byte.
"""

from __future__ import annotations

from collections.abc import Callable

from iso8583.errors import DecodeError, EncodeError
from iso8583.fields import Enc, FieldSpec, Kind, LenType

FieldValue = str | bytes
Encoder = Callable[[FieldValue], bytes]
Decoder = Callable[[bytes, int], tuple[FieldValue, int]]



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
        table = tuple(bytes.fromhex(f"{n:0{size * 2}d}")
                      for n in range(spec.max_len + 1)) if size else ()

        def write(length: int) -> bytes:
            return table[length]

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
# Each field gets the narrowest closure for its layout: a fixed BCD field is a
# length check, a digit check and bytes.fromhex, with no helper calls between.

_DIGITS = "0123456789"
_TRACK_IN = "0123456789D="
_TRACK_OUT = "0123456789d"
_AN_CHARS = bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B)) + b" "
_ANS_CHARS = bytes(range(0x20, 0x7F))


def _type_error(num: int, kind: Kind) -> EncodeError:
    want = "bytes" if kind is Kind.B else "str"
    return EncodeError(f"expected {want} for a {kind.value} field", field=num)


def compile_encoder(spec: FieldSpec) -> Encoder:
    """Build the encoder for one field: value -> wire bytes (prefix included)."""
    num = spec.number
    max_len = spec.max_len
    fixed = spec.fixed
    kind = spec.kind
    write_prefix = _prefix_codec(spec)[1] if not fixed else None

    if kind is Kind.B:
        if fixed:
            def enc_b_fixed(value: FieldValue) -> bytes:
                if type(value) is not bytes:
                    raise _type_error(num, kind)
                if len(value) != max_len:
                    raise EncodeError(f"needs exactly {max_len} bytes, got {len(value)}",
                                      field=num)
                return value
            return enc_b_fixed
        assert write_prefix is not None
        prefix_b = write_prefix

        def enc_b_var(value: FieldValue) -> bytes:
            if type(value) is not bytes:
                raise _type_error(num, kind)
            size = len(value)
            if size > max_len:
                raise EncodeError(f"{size} bytes is over the maximum {max_len}", field=num)
            return prefix_b(size) + value
        return enc_b_var

    if kind in (Kind.AN, Kind.ANS):
        allowed = _AN_CHARS if kind is Kind.AN else _ANS_CHARS

        def enc_text(value: FieldValue) -> bytes:
            if type(value) is not str:
                raise _type_error(num, kind)
            size = len(value)
            if size > max_len:
                raise EncodeError(f"{size} characters is over the maximum {max_len}", field=num)
            if not value.isascii():
                raise EncodeError(f"non-ASCII character in an {kind.value} field", field=num)
            raw = value.encode("ascii")
            if raw.translate(None, allowed):
                raise EncodeError(f"character not allowed in an {kind.value} field", field=num)
            if write_prefix is not None:
                return write_prefix(size) + raw
            if size < max_len:
                raw = raw.ljust(max_len)
            return raw
        return enc_text

    # n and z: digits (z also D), BCD or ASCII
    is_z = kind is Kind.Z
    right = spec.align == "right"
    bcd = spec.data_enc is Enc.BCD
    chars = _TRACK_IN if is_z else _DIGITS

    def check_digits(value: FieldValue) -> str:
        if type(value) is not str:
            raise _type_error(num, kind)
        if value.strip(chars):
            what = "track data may hold only digits and D/=" if is_z else \
                "numeric field holds a non-digit"
            raise EncodeError(what, field=num)
        return value.replace("=", "D") if is_z else value

    if fixed and bcd and not is_z:
        odd = max_len & 1

        def enc_n_fixed(value: FieldValue) -> bytes:
            if type(value) is not str or value.strip(_DIGITS):
                check_digits(value)
            assert isinstance(value, str)
            size = len(value)
            if size != max_len:
                if size > max_len:
                    raise EncodeError(f"{size} digits is over the maximum {max_len}", field=num)
                value = value.zfill(max_len)
            if odd:
                value = "0" + value if right else value + "0"
            return bytes.fromhex(value)
        return enc_n_fixed

    def enc_digits(value: FieldValue) -> bytes:
        text = check_digits(value)
        size = len(text)
        if size > max_len:
            raise EncodeError(f"{size} digits is over the maximum {max_len}", field=num)
        if fixed and size < max_len:
            text = text.zfill(max_len)
            size = max_len
        if bcd:
            if size & 1:
                text = "0" + text if right else text + "0"
            raw = bytes.fromhex(text)
        else:
            raw = text.encode("ascii")
        return raw if write_prefix is None else write_prefix(size) + raw
    return enc_digits


# --- value decoders ------------------------------------------------------------------


def compile_decoder(spec: FieldSpec) -> Decoder:
    """Build the decoder for one field: (data, pos) -> (value, new pos)."""
    num = spec.number
    max_len = spec.max_len
    kind = spec.kind
    fixed = spec.fixed
    prefix_size, _, read_prefix = _prefix_codec(spec)

    def read_len(data: bytes, pos: int) -> tuple[int, int]:
        if fixed:
            return max_len, pos
        count = read_prefix(data, pos)
        if count > max_len:
            raise DecodeError(f"length {count} is over the maximum {max_len}", field=num, pos=pos)
        return count, pos + prefix_size

    if kind is Kind.B:
        if fixed:
            def dec_b_fixed(data: bytes, pos: int) -> tuple[FieldValue, int]:
                end = pos + max_len
                value = data[pos:end]
                if len(value) != max_len:
                    raise _truncated(spec, pos, max_len, len(data) - pos)
                return value, end
            return dec_b_fixed

        def dec_b(data: bytes, pos: int) -> tuple[FieldValue, int]:
            count, start = read_len(data, pos)
            end = start + count
            value = data[start:end]
            if len(value) != count:
                raise _truncated(spec, start, count, len(data) - start)
            return value, end
        return dec_b

    if kind in (Kind.AN, Kind.ANS):
        allowed = _AN_CHARS if kind is Kind.AN else _ANS_CHARS

        def dec_text(data: bytes, pos: int) -> tuple[FieldValue, int]:
            count, start = read_len(data, pos)
            end = start + count
            raw = data[start:end]
            if len(raw) != count:
                raise _truncated(spec, start, count, len(data) - start)
            if raw.translate(None, allowed):
                raise DecodeError(f"character not allowed in an {kind.value} field",
                                  field=num, pos=start)
            return raw.decode("ascii"), end
        return dec_text

    is_z = kind is Kind.Z
    right = spec.align == "right"
    if spec.data_enc is Enc.ASCII:
        chars = _TRACK_IN if is_z else _DIGITS

        def dec_ascii_digits(data: bytes, pos: int) -> tuple[FieldValue, int]:
            count, start = read_len(data, pos)
            end = start + count
            raw = data[start:end]
            if len(raw) != count:
                raise _truncated(spec, start, count, len(data) - start)
            text = raw.decode("latin-1")
            if text.strip(chars):
                raise DecodeError("bad track character" if is_z else
                                  "non-digit in a numeric field", field=num, pos=start)
            return (text.replace("=", "D") if is_z else text), end
        return dec_ascii_digits

    if fixed and not is_z:
        nbytes = (max_len + 1) >> 1
        odd = max_len & 1

        def dec_n_fixed(data: bytes, pos: int) -> tuple[FieldValue, int]:
            end = pos + nbytes
            raw = data[pos:end]
            if len(raw) != nbytes:
                raise _truncated(spec, pos, nbytes, len(data) - pos)
            text = raw.hex()
            if odd:
                if right:
                    pad, text = text[0], text[1:]
                else:
                    pad, text = text[-1], text[:-1]
                if pad != "0":
                    raise DecodeError(f"pad nibble {pad.upper()} is not 0", field=num, pos=pos)
            if not text.isdigit():
                raise DecodeError("non-decimal BCD nibble", field=num, pos=pos)
            return text, end
        return dec_n_fixed

    out_chars = _TRACK_OUT if is_z else _DIGITS

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
        if text.strip(out_chars):
            raise DecodeError("non-decimal nibble in track data" if is_z else
                              "non-decimal BCD nibble", field=num, pos=start)
        return (text.upper() if is_z else text), end
    return dec_bcd


def compile_normaliser(spec: FieldSpec) -> Callable[[object], FieldValue]:
    """What ``msg[n] = value`` stores: ints become zero-padded digit strings."""
    num = spec.number
    numeric = spec.kind is Kind.N
    width = spec.max_len if spec.fixed else 0

    def normalise(value: object) -> FieldValue:
        kind = type(value)
        if kind is str or kind is bytes:  # what decoders and most callers hand in
            return value  # type: ignore[return-value]  # narrowed by the type test
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
