"""A dialect: field table, MTI/bitmap layout and framing, compiled once.

Everything that differs between the China UnionPay POS profile and ISO
8583:1987 is data in a :class:`DialectSpec`; :class:`Dialect` turns that data
into encoders and decoders. A third dialect is another ``DialectSpec``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from iso8583.bounded import keep
from iso8583.codec import (
    Decoder,
    Encoder,
    FieldValue,
    compile_decoder,
    compile_encoder,
    compile_normaliser,
)
from iso8583.errors import DecodeError, EncodeError, FramingError
from iso8583.fields import Enc, FieldSpec, Kind
from iso8583.framing import FrameDecoder, encode_length
from iso8583.message import Message
from iso8583.plan import DecodePlan, EncodePlan, SlowPath, build_decode_plan, build_encode_plan
from iso8583.quickinit import quick_init

_PLAN_CACHE_MAX = 512

# for each byte value, the 1-based positions of its set bits, most significant first
_BITS: tuple[tuple[int, ...], ...] = tuple(
    tuple(i + 1 for i in range(8) if value & (0x80 >> i)) for value in range(256)
)


@dataclass(frozen=True)
class TransactionProfile:
    """How one transaction type is coded in a dialect (DESIGN.md section 4)."""

    name: str
    mti: str
    processing_code: str | None = None  # F3
    condition_code: str | None = None  # F25
    f60_type: str | None = None  # 60.1
    net_code: str | None = None  # 60.3 (or F70 in iso87)
    on_timeout: str = "none"  # "reverse", "resend", "retry", "none"
    moves_money: bool = False


#: First two digits of F22 by how the card was read (the third is 1 = PIN, 2 = no PIN).
ENTRY_MODE_PREFIX: Mapping[str, str] = MappingProxyType({
    "chip": "05", "contactless": "07", "stripe": "02", "manual": "01", "fallback": "80"})

#: The ICC tags a terminal puts into F55 (DESIGN.md section 4 minus the clear card data:
#: 5A and 57 travel in F2/F35, never twice). Every tag the host's ARQC check reads
#: (9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36) is there.
DEFAULT_F55_TAGS: tuple[int, ...] = (
    0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A,
    0x82, 0x9F1A, 0x9F03, 0x9F33, 0x9F34, 0x9F35, 0x84, 0x9F1E, 0x9F09, 0x9F41,
)


@dataclass(frozen=True)
class BatchUploadProfile:
    """How a dialect batch-uploads (批上送) after a settlement that did not balance.

    China UnionPay POS, as public terminal code shows it: non-chip items go
    several per 0320 (60.3 = 201) as a list in F48 (:class:`iso8583.composite.F48UploadList`);
    chip items one per 0320 (60.3 = 203) with their F55; items told as advices
    (a CUP refund is a 0220 notification) one per 0320 with their own fields;
    then the end of the upload (60.3 = 202) with the number of items in F48 n4.
    The rows named here are rows of the dialect's transaction table.
    """

    list_kind: str = "batch_upload"  # several non-chip items per message, F48 list
    chip_kind: str = "batch_upload_icc"  # one chip item per message, F55
    end_kind: str = "batch_upload_end"  # end of upload, F48 = item count n4
    advice_kinds: frozenset[str] = frozenset({"refund"})  # one per message, own fields
    domestic_schemes: frozenset[str] = frozenset({"CUP"})  # 48 organisation 00, others 01


@dataclass(frozen=True)
class DialectSettings:
    """What a dialect decides beyond its field table; flows read these, never the name."""

    refund_mti: str = "0220"  # 0220 advice (CUP) or 0200 online refund
    refund_reversible: bool = False  # False: a timed-out refund is resent, never reversed
    refund_carries_f55: bool = False
    reversal_original_data: Literal["f61", "f90"] = "f61"  # copy the fields, or F90 names it
    card_organisation_field: int | None = 63  # CUP / VIS / MCC for a refund, or None
    pin_block_format: int = 0  # ISO 9564 format of F52
    security_control: str | None = "2600000000000000"  # F53 with a PIN block, or None
    currency: str = "156"  # F49
    mac: Literal["cup", "x919"] = "cup"  # CUP POS MAC or ANSI X9.19 retail MAC
    f55_tags: tuple[int, ...] = DEFAULT_F55_TAGS
    # EntryKind -> the first two digits of F22
    entry_mode_prefix: Mapping[str, str] = field(default_factory=lambda: ENTRY_MODE_PREFIX)
    # 批上送 after an unbalanced settlement; None: the dialect has no batch upload
    batch_upload: BatchUploadProfile | None = None


@dataclass(frozen=True)
class DialectSpec:
    """All that distinguishes one dialect, as data."""

    name: str
    title: str
    fields: Mapping[int, FieldSpec]
    mti_enc: Enc = Enc.BCD  # BCD (2 bytes) or ASCII (4 characters)
    bitmap_enc: Enc = Enc.BINARY  # BINARY (8/16 bytes) or ASCII (16/32 hex characters)
    length_bytes: int = 2  # frame length prefix, binary big-endian, excludes itself
    tpdu: bool = False  # frame carries a 5-byte TPDU after the length
    header_len: int = 0  # bytes of dialect header after the TPDU
    default_header: bytes = b""
    max_frame: int = 4096
    mac_field: int = 64
    transactions: Mapping[str, TransactionProfile] = field(default_factory=dict)
    # dialect settings the flows read instead of branching on the name
    settings: DialectSettings = field(default_factory=DialectSettings)


@quick_init  # one per message decoded: see iso8583.quickinit
@dataclass(frozen=True)
class Frame:
    """A decoded frame: routing data plus the message and its raw body."""

    tpdu: bytes | None
    header: bytes | None
    message: Message
    body: bytes  # MTI onwards, as received (MAC is checked over these bytes)


class Dialect:
    """A compiled dialect: encode, decode, frame and unframe messages."""

    def __init__(self, spec: DialectSpec, *, plans: bool = True) -> None:
        self.spec = spec
        self._use_plans = plans
        self.name = spec.name
        self.fields: Mapping[int, FieldSpec] = MappingProxyType(dict(spec.fields))
        self._enc: dict[int, Encoder] = {n: compile_encoder(s) for n, s in spec.fields.items()}
        self._dec: dict[int, Decoder] = {n: compile_decoder(s) for n, s in spec.fields.items()}
        self.normalisers: Mapping[int, Callable[[object], FieldValue]] = MappingProxyType(
            {n: compile_normaliser(s) for n, s in spec.fields.items()})
        self._bit128 = {n: 1 << (128 - n) for n in range(1, 129)}
        self._has_secondary = any(n > 64 for n in spec.fields)
        self._mti_ascii = spec.mti_enc is Enc.ASCII
        self._bitmap_ascii = spec.bitmap_enc is Enc.ASCII
        self.transactions = spec.transactions
        self.settings: DialectSettings = spec.settings
        # per field set: (bitmap bytes, plan); per received bitmap: (numbers, plan)
        self._enc_plans: dict[tuple[tuple[int, ...], bool], tuple[bytes, EncodePlan]] = {}
        self._dec_plans: dict[bytes, tuple[list[int], DecodePlan | None]] = {}
        self._mti_cache: dict[str, bytes] = {}
        # mac_block_received: where the bitmap starts, the MAC field's fixed size (0: the
        # block cannot be cut from a body), the track fields (number, ASCII-coded)
        self._bitmap_at = 4 if self._mti_ascii else 2
        mac_spec = spec.fields.get(spec.mac_field)
        self._mac_size = mac_spec.max_len if (
            mac_spec is not None and mac_spec.fixed and mac_spec.kind is Kind.B
            and not self._bitmap_ascii) else 0
        self._track_fields = tuple((n, s.data_enc is Enc.ASCII)
                                   for n, s in sorted(spec.fields.items()) if s.kind is Kind.Z)

    def __repr__(self) -> str:
        return f"Dialect({self.name!r})"

    def message(self, mti: str, fields: Mapping[int, object] | None = None) -> Message:
        """A new message that normalises values by this dialect's table."""
        return Message(mti, fields, dialect=self)

    # --- body ---------------------------------------------------------------------
    def _encode_mti(self, mti: str) -> bytes:
        if len(mti) != 4 or not (mti.isdigit() and mti.isascii()):
            raise EncodeError(f"MTI {mti!r} is not 4 digits", field=0)
        return mti.encode("ascii") if self._mti_ascii else bytes.fromhex(mti)

    def _bitmap(self, numbers: list[int]) -> bytes:
        bit = self._bit128
        bits = 0
        for number in numbers:
            bits |= bit[number]
        if numbers and numbers[-1] > 64:
            raw = (bits | bit[1]).to_bytes(16, "big")
        else:
            raw = (bits >> 64).to_bytes(8, "big")
        return raw.hex().upper().encode("ascii") if self._bitmap_ascii else raw

    def encode(self, message: Message, *, mac_placeholder: bool = False) -> bytes:
        """Encode MTI, bitmap and fields. Raises :class:`EncodeError` naming the field."""
        items = message.raw_items()
        numbers = tuple(sorted(items))
        key = (numbers, mac_placeholder and self.spec.mac_field not in items)
        cached = self._enc_plans.get(key)
        if cached is None:
            cached = self._encode_plan(numbers, key[1])
        bitmap, plan = cached
        try:
            if not self._use_plans:
                raise SlowPath
            chunks = plan(items)
        except SlowPath:
            chunks = self._encode_fields(numbers, items)
        mti = self._mti_cache.get(message.mti)
        if mti is None:
            mti = self._encode_mti(message.mti)
            if len(self._mti_cache) < _PLAN_CACHE_MAX:
                self._mti_cache[message.mti] = mti
        return b"".join([mti, bitmap, *chunks])

    def _encode_plan(self, numbers: tuple[int, ...], placeholder: bool
                     ) -> tuple[bytes, EncodePlan]:
        for number in numbers:
            if number not in self._enc:
                raise EncodeError("field is not defined in this dialect", field=number)
        with_mac = sorted({*numbers, self.spec.mac_field}) if placeholder else list(numbers)
        entry = (self._bitmap(with_mac), build_encode_plan(numbers, self.fields, self._enc))
        return keep(self._enc_plans, (numbers, placeholder), entry, _PLAN_CACHE_MAX)

    def _encode_fields(self, numbers: tuple[int, ...], items: dict[int, FieldValue]
                       ) -> list[bytes]:
        """The reference per-field encoder: exact errors for any bad value."""
        enc = self._enc
        return [enc[number](items[number]) for number in numbers]

    def mac_block(self, message: Message) -> bytes:
        """The MAC input: the encoded message up to the MAC field, bitmap showing it.

        For CUP this is MTI .. F63 with bit 64 set; F64 itself is left out.
        """
        mac_field = self.spec.mac_field
        if mac_field in message:
            clone = message.copy()
            del clone[mac_field]
            return self.encode(clone, mac_placeholder=True)
        return self.encode(message, mac_placeholder=True)

    def encode_maced(self, message: Message, mac_of: Callable[[bytes], bytes]) -> bytes:
        """Set the MAC field to ``mac_of(mac block)`` (in place) and return the encoded body.

        Where the MAC field is the message's last field (CUP F64) the body is the MAC
        block followed by the MAC's own encoding: the message is encoded once, not
        once for its MAC and again to send it. Otherwise the message is encoded again.
        """
        mac_field = self.spec.mac_field
        block = self.mac_block(message)
        message[mac_field] = mac_of(block)
        items = message.raw_items()
        if max(items) == mac_field:
            return block + self._enc[mac_field](items[mac_field])
        return self.encode(message)

    def mac_block_received(self, message: Message, body: bytes) -> bytes:
        """:meth:`mac_block` of ``message`` decoded from ``body``: cut from the bytes as
        received when they are exactly this dialect's encoding of it, else encoded.

        Decoding accepts a few variations that encoding never writes: a track field's
        ``F`` pad nibble (BCD) or ``=`` separator (ASCII), a secondary bitmap without
        fields 65-128. Where one of them may be in ``body`` (an odd-length BCD track, an
        ASCII track, bit 1 set), or fields follow the MAC field, the block is encoded;
        so equal messages always give equal blocks.
        """
        size = self._mac_size
        items = message.raw_items()
        if not size or max(items) != self.spec.mac_field or len(body) <= size \
                or body[self._bitmap_at] & 0x80:
            return self.mac_block(message)
        for number, ascii_coded in self._track_fields:
            value = items.get(number)
            if value is None:
                continue
            if (ascii_coded and "D" in str(value)) or (not ascii_coded and len(value) & 1):
                return self.mac_block(message)
        return body[:-size]

    def received_mac_block(self, body: bytes) -> bytes:
        """The MAC input of a received body: every byte before the 8-byte MAC field.

        Uses the bytes as received (not a re-encoding), so a sender's harmless
        variations (pad nibbles) cannot break MAC verification.
        """
        if len(body) < 8:
            raise DecodeError("too short to carry a MAC", field=self.spec.mac_field, pos=0)
        return body[:-8]

    def decode(self, body: bytes) -> Message:
        """Decode a body (MTI onwards). Any problem raises :class:`DecodeError`."""
        data = bytes(body)
        message = Message.__new__(Message)
        message._normalisers = self.normalisers
        fields: dict[int, FieldValue] = {}
        message._fields = fields
        number = 0
        pos = 0
        try:
            if self._mti_ascii:
                raw_mti = data[0:4]
                if len(raw_mti) != 4 or not (raw_mti.isdigit() and raw_mti.isascii()):
                    raise DecodeError("MTI is not 4 ASCII digits", field=0, pos=0)
                message.mti = raw_mti.decode("ascii")
                pos = 4
            else:
                mti = data[0:2].hex()
                if len(mti) != 4 or not mti.isdigit():
                    raise DecodeError("MTI is not 2 bytes of BCD", field=0, pos=0)
                message.mti = mti
                pos = 2
            bitmap, pos = self._read_bitmap(data, pos)
            cached = self._dec_plans.get(bitmap)
            if cached is None:
                cached = self._decode_plan(bitmap, pos)
            numbers, plan = cached
            start = pos
            try:
                if plan is None or not self._use_plans:
                    raise SlowPath
                pos = plan(data, pos, fields)
            except SlowPath:
                fields.clear()
                pos = start
                dec = self._dec
                for number in numbers:
                    decoder = dec.get(number)
                    if decoder is None:
                        raise DecodeError("bit set for a field this dialect does not define",
                                          field=number, pos=pos) from None
                    fields[number], pos = decoder(data, pos)
        except DecodeError:
            raise
        except (ValueError, IndexError, UnicodeDecodeError, OverflowError) as exc:
            raise DecodeError(f"malformed ({type(exc).__name__})", field=number, pos=pos) from exc
        if pos != len(data):
            raise DecodeError(f"{len(data) - pos} trailing bytes after the last field",
                              field=max(fields) if fields else None, pos=pos)
        return message

    def _decode_plan(self, bitmap: bytes, pos: int) -> tuple[list[int], DecodePlan | None]:
        bits = _BITS
        numbers = [index * 8 + bit
                   for index, value in enumerate(bitmap) if value
                   for bit in bits[value]]
        if numbers and numbers[0] == 1:
            numbers = numbers[1:]
        if not numbers:
            raise DecodeError("bitmap has no data fields", field=1, pos=pos - len(bitmap))
        plan = None
        if all(number in self._dec for number in numbers):
            plan = build_decode_plan(numbers, self.fields, self._dec)
        return keep(self._dec_plans, bitmap, (numbers, plan), _PLAN_CACHE_MAX)

    def _read_bitmap(self, data: bytes, pos: int) -> tuple[bytes, int]:
        if self._bitmap_ascii:
            text = data[pos:pos + 16]
            try:
                primary = bytes.fromhex(text.decode("ascii")) if len(text) == 16 else b""
            except ValueError:
                primary = b""
            if len(primary) != 8:
                raise DecodeError("bitmap is not 16 hex characters", field=1, pos=pos)
            width = 16
        else:
            primary = data[pos:pos + 8]
            if len(primary) != 8:
                raise DecodeError("truncated bitmap", field=1, pos=pos)
            width = 8
        bitmap = primary
        next_pos = pos + width
        if primary[0] & 0x80:
            if not self._has_secondary:
                raise DecodeError("secondary bitmap in a dialect without fields 65-128",
                                  field=1, pos=pos)
            if self._bitmap_ascii:
                text = data[next_pos:next_pos + 16]
                try:
                    secondary = bytes.fromhex(text.decode("ascii")) if len(text) == 16 else b""
                except ValueError:
                    secondary = b""
            else:
                secondary = data[next_pos:next_pos + 8]
            if len(secondary) != 8:
                raise DecodeError("truncated secondary bitmap", field=1, pos=next_pos)
            bitmap = primary + secondary
            next_pos += width
        return bitmap, next_pos

    # --- framing ------------------------------------------------------------------
    def pack(self, message: Message, *, tpdu: bytes | None = None,
             header: bytes | None = None) -> bytes:
        """A whole frame: length prefix, TPDU and header when the dialect has them, body."""
        return encode_length(self.payload(message, tpdu=tpdu, header=header),
                             self.spec.length_bytes)

    def payload(self, message: Message, *, tpdu: bytes | None = None,
                header: bytes | None = None, body: bytes | None = None) -> bytes:
        """The frame payload (no length prefix).

        ``body``: ``message`` as :meth:`encode` (or :meth:`encode_maced`) gave it already,
        so it is not encoded a second time.
        """
        spec = self.spec
        parts: list[bytes] = []
        if spec.tpdu:
            tpdu = tpdu if tpdu is not None else b"\x60\x00\x00\x00\x00"
            if len(tpdu) != 5 or tpdu[0] != 0x60:
                raise EncodeError("TPDU must be 5 bytes starting with 60", field="tpdu")
            parts.append(tpdu)
        elif tpdu is not None:
            raise EncodeError(f"dialect {self.name} has no TPDU", field="tpdu")
        if spec.header_len:
            header = header if header is not None else spec.default_header
            if len(header) != spec.header_len:
                raise EncodeError(f"header must be {spec.header_len} bytes", field="header")
            parts.append(header)
        elif header:
            raise EncodeError(f"dialect {self.name} has no header", field="header")
        parts.append(body if body is not None else self.encode(message))
        return b"".join(parts)

    def unpack(self, frame: bytes) -> Frame:
        """Decode a whole frame, length prefix included."""
        size = self.spec.length_bytes
        if len(frame) < size:
            raise FramingError("truncated length prefix", field="length", pos=0)
        declared = int.from_bytes(frame[:size], "big")
        if declared != len(frame) - size:
            raise FramingError(
                f"length prefix says {declared} bytes, frame has {len(frame) - size}",
                field="length", pos=0)
        try:
            return self.unpack_payload(frame[size:])
        except DecodeError as exc:
            raise type(exc)(exc.reason, field=exc.field, pos=exc.pos + size) from None

    def unpack_payload(self, payload: bytes) -> Frame:
        """Decode a payload as :class:`FrameDecoder` yields it (no length prefix)."""
        spec = self.spec
        pos = 0
        tpdu: bytes | None = None
        header: bytes | None = None
        if spec.tpdu:
            tpdu = bytes(payload[0:5])
            if len(tpdu) != 5:
                raise FramingError("truncated TPDU", field="tpdu", pos=0)
            if tpdu[0] != 0x60:
                raise FramingError(f"TPDU id {tpdu[0]:02X} is not 60", field="tpdu", pos=0)
            pos = 5
        if spec.header_len:
            header = bytes(payload[pos:pos + spec.header_len])
            if len(header) != spec.header_len:
                raise FramingError("truncated header", field="header", pos=pos)
            pos += spec.header_len
        body = bytes(payload[pos:])
        try:
            message = self.decode(body)
        except DecodeError as exc:
            raise type(exc)(exc.reason, field=exc.field, pos=exc.pos + pos) from None
        return Frame(tpdu, header, message, body)

    def frame_decoder(self, max_length: int | None = None) -> FrameDecoder:
        """An incremental reassembler configured for this dialect's framing."""
        return FrameDecoder(length_bytes=self.spec.length_bytes,
                            max_length=max_length or self.spec.max_frame)

    @staticmethod
    def reply_tpdu(tpdu: bytes) -> bytes:
        """The TPDU of a reply: destination and source swapped."""
        if len(tpdu) != 5:
            raise EncodeError("TPDU must be 5 bytes", field="tpdu")
        return tpdu[:1] + tpdu[3:5] + tpdu[1:3]
