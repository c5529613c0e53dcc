"""Codec round trips and strict decoding for both dialects."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iso8583.dialect import Dialect
from iso8583.dialects import get_dialect, names
from iso8583.errors import DecodeError, EncodeError
from iso8583.message import Message

from .strategies import messages

CUP = get_dialect("cup")
ISO = get_dialect("iso87")


def cup_sale() -> Message:
    m = CUP.message("0200")
    m[2] = "6225880000000019"
    m[3] = "000000"
    m[4] = 1234
    m[11] = 1
    m[22] = "051"
    m[23] = "001"
    m[25] = "00"
    m[35] = "6225880000000019D30122200000000000"
    m[41] = "10000001"
    m[42] = "123456789012345"
    m[49] = "156"
    m[60] = "22000001000"
    m[64] = bytes(8)
    return m


@pytest.mark.parametrize("name", ["cup", "iso87"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_round_trip_random_messages(name: str, data: st.DataObject) -> None:
    dialect = get_dialect(name)
    message = data.draw(messages(dialect))
    body = dialect.encode(message)
    decoded = dialect.decode(body)
    assert decoded == message
    assert dialect.encode(decoded) == body


def test_both_dialects_registered() -> None:
    assert {"cup", "iso87"} <= set(names())


def test_known_cup_sale_bytes() -> None:
    body = CUP.encode(cup_sale())
    # MTI 0200 BCD, then a primary bitmap with fields 2,3,4,11,22,23,25,35,41,42,49,60,64
    assert body[:2] == b"\x02\x00"
    numbers = [n for n in range(2, 65) if body[2 + (n - 1) // 8] & (0x80 >> ((n - 1) % 8))]
    assert numbers == [2, 3, 4, 11, 22, 23, 25, 35, 41, 42, 49, 60, 64]
    # F2: LLVAR BCD length 16, then 8 bytes of BCD
    assert body[10:19] == bytes.fromhex("16") + bytes.fromhex("6225880000000019")


def test_int_values_are_zero_padded() -> None:
    m = cup_sale()
    assert m[4] == "000000001234"
    assert m[11] == "000001"
    assert m.amount == 1234


def test_odd_length_alignment() -> None:
    m = CUP.message("0200", {22: "051", 23: "1"})
    body = CUP.encode(m)
    assert body.endswith(bytes.fromhex("0510") + bytes.fromhex("0001"))  # F22 left, F23 right


def test_track2_equals_sign_becomes_d() -> None:
    m = CUP.message("0200", {35: "6225880000000019=3012220"})
    assert CUP.decode(CUP.encode(m))[35] == "6225880000000019D3012220"


def test_iso87_secondary_bitmap_and_ascii() -> None:
    m = ISO.message("0800", {7: "1123101500", 11: 7, 70: "301"})
    body = ISO.encode(m)
    assert body[:4] == b"0800"
    assert body[4] & 0x80  # secondary bitmap present
    assert ISO.decode(body) == m


def test_mac_block_sets_bit_64_without_the_field() -> None:
    m = cup_sale()
    mab = CUP.mac_block(m)
    assert mab == CUP.encode(m)[:-8]
    del m[64]
    assert CUP.mac_block(m) == mab


@pytest.mark.parametrize("name", ["cup", "iso87"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_encode_maced_is_the_encoding_of_the_maced_message(name: str,
                                                            data: st.DataObject) -> None:
    """One encoding for MAC and send (MAC field last) gives exactly encode()'s bytes;
    with fields after the MAC field (iso87 F90, F128) too."""
    dialect = get_dialect(name)
    message = data.draw(messages(dialect))
    mac = data.draw(st.binary(min_size=8, max_size=8))
    blocks: list[bytes] = []

    def mac_of(block: bytes) -> bytes:
        blocks.append(block)
        return mac

    reference = message.copy()
    try:
        want_block = dialect.mac_block(reference)
    except EncodeError:  # refused before any MAC: encode_maced refuses it the same way
        with pytest.raises(EncodeError):
            dialect.encode_maced(message, mac_of)
        return
    reference[dialect.spec.mac_field] = mac
    body = dialect.encode_maced(message, mac_of)
    assert blocks == [want_block]
    assert message == reference
    assert body == dialect.encode(reference)


def _variants(dialect: Dialect, body: bytes, data: st.DataObject) -> list[bytes]:
    """``body`` and copies with a few bytes changed (those that still decode are kept)."""
    out = [body]
    for _ in range(8):
        raw = bytearray(body)
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.sampled_from((raw[at] | 0x0F, raw[at] | 0xF0, 0x3D, 0x44,
                                                 raw[at] | 0x80, raw[at] ^ 0x01)))
        with contextlib.suppress(DecodeError):
            dialect.decode(bytes(raw))
            out.append(bytes(raw))
    return out


@pytest.mark.parametrize("name", ["cup", "iso87"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mac_block_received_is_mac_block_for_any_received_body(name: str,
                                                               data: st.DataObject) -> None:
    """Cut from the bytes as received only where they are the dialect's own encoding:
    equal messages give equal blocks whatever variation the sender's bytes carried."""
    dialect = get_dialect(name)
    message = data.draw(messages(dialect))
    message[dialect.spec.mac_field] = data.draw(st.binary(min_size=8, max_size=8))
    try:
        body = dialect.encode(message)
    except EncodeError:
        return
    for variant in _variants(dialect, body, data):
        decoded = dialect.decode(variant)
        assert dialect.mac_block_received(decoded, variant) == dialect.mac_block(decoded)


@pytest.mark.parametrize(("name", "field", "value"), [
    ("cup", 35, "6225880000000019D3012220000000000"),  # odd: the pad nibble may be F
    ("iso87", 35, "6225880000000019D30122200000000000"),  # ASCII: D may have been =
])
def test_mac_block_received_encodes_where_the_sender_may_have_varied(
        name: str, field: int, value: str) -> None:
    dialect = get_dialect(name)
    m = dialect.message("0200", {3: "000000", 11: "000001", field: value, 64: bytes(8)})
    body = dialect.encode(m)
    if name == "cup":  # the same track with an F pad nibble: the same message
        track = bytes.fromhex(f"{len(value)}{value}0")  # LL, digits, the 0 pad nibble
        at = body.index(track) + len(track) - 1
        variant = body[:at] + bytes([body[at] | 0x0F]) + body[at + 1:]
    else:
        variant = body.replace(b"D3012", b"=3012")
    assert variant != body
    assert dialect.decode(variant) == dialect.decode(body)
    assert dialect.mac_block_received(dialect.decode(variant), variant) == dialect.mac_block(m)


def test_received_mac_block_is_bytes_as_received() -> None:
    body = CUP.encode(cup_sale())
    assert CUP.received_mac_block(body) == body[:-8]


@pytest.mark.parametrize(("field", "value"), [
    (4, "12345678901234"),  # too long
    (4, "12ab"),  # non-digit
    (2, "1" * 20),  # LLVAR over max
    (41, "1234567890"),  # fixed ans too long
    (37, "abc$"),  # an with a symbol
    (52, b"\x00" * 7),  # binary wrong fixed length
    (52, "text"),  # str in binary
    (35, "6225X"),  # bad track char
])
def test_encode_rejects_bad_values(field: int, value: str | bytes) -> None:
    m = CUP.message("0200", {3: "000000"})
    m[field] = value
    with pytest.raises(EncodeError) as err:
        CUP.encode(m)
    assert err.value.field == field


def test_encode_rejects_undefined_field_and_bad_mti() -> None:
    with pytest.raises(EncodeError):
        CUP.message("0200")[70] = "301"
    with pytest.raises(EncodeError):
        CUP.encode(CUP.message("02A0", {3: "000000"}))
    with pytest.raises(EncodeError):
        CUP.message("0200")[4] = -5


def _body_with(field_bytes: bytes, field: int) -> bytes:
    bitmap = bytearray(8)
    bitmap[(field - 1) // 8] |= 0x80 >> ((field - 1) % 8)
    return b"\x02\x00" + bytes(bitmap) + field_bytes


@pytest.mark.parametrize(("body", "field", "pos"), [
    (_body_with(bytes.fromhex("00000000123A"), 4), 4, 10),  # non-decimal nibble
    (_body_with(bytes.fromhex("000000001234") + b"\x00", 4), 4, 16),  # trailing byte
    (_body_with(bytes.fromhex("0000"), 4), 4, 10),  # truncated
    (_body_with(bytes.fromhex("20") + bytes(10), 2), 2, 10),  # LLVAR 20 > 19
    (_body_with(bytes.fromhex("1A") + bytes(10), 2), 2, 10),  # non-BCD length
    (_body_with(bytes.fromhex("0004") + b"abc", 55), 55, 12),  # truncated LLL binary
    (_body_with(bytes.fromhex("0300") + b"abc", 55), 55, 10),  # LLL length over 255
    (_body_with(b"00", 5), 5, 10),  # bit set for an undefined field
    (_body_with(b"\xff\xfe", 39), 39, 10),  # non-ASCII text
    (_body_with(bytes.fromhex("0511"), 22), 22, 10),  # left-aligned pad nibble not 0
    (b"\x02", 0, 0),  # truncated MTI
    (b"\x0a\x00" + bytes(8), 0, 0),  # non-BCD MTI
    (b"\x02\x00\x00\x00", 1, 2),  # truncated bitmap
    (b"\x02\x00" + bytes(8), 1, 2),  # empty bitmap
    (b"\x02\x00\x80" + bytes(7), 1, 2),  # secondary bitmap in cup
])
def test_decode_errors_carry_field_and_offset(body: bytes, field: int, pos: int) -> None:
    with pytest.raises(DecodeError) as err:
        CUP.decode(body)
    assert err.value.field == field
    assert err.value.pos == pos
    assert f"pos {pos}" in str(err.value)


def test_decode_does_not_mutate_or_keep_input() -> None:
    data = bytearray(CUP.encode(cup_sale()))
    before = bytes(data)
    CUP.decode(bytes(data))
    assert bytes(data) == before


@given(st.binary(max_size=300))
@example(b"")
@example(b"\x02\x00\xff\xff\xff\xff\xff\xff\xff\xff")
@example(b"\x02\x10\x7f\xff\xff\xff\xff\xff\xff\xff" + b"\x99" * 50)
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    for dialect in (CUP, ISO):
        with contextlib.suppress(DecodeError):
            dialect.decode(data)


def test_response_mti() -> None:
    assert Message("0200").response_mti == "0210"
    assert Message("0220").response_mti == "0230"
    assert Message("0820").response_mti == "0830"
    assert Message("0400").is_request
    assert not Message("0410").is_request


@pytest.mark.parametrize("name", ["cup", "iso87"])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fast_plans_match_the_reference_codec(name: str, data: st.DataObject) -> None:
    """Generated per-bitmap plans must give the same bytes, values and errors."""
    from iso8583.dialect import Dialect
    fast = get_dialect(name)
    slow = Dialect(fast.spec, plans=False)
    message = data.draw(messages(fast))
    body = slow.encode(message)
    assert fast.encode(message) == body
    mutated = bytearray(body)
    if data.draw(st.booleans()) and len(mutated) > 10:
        index = data.draw(st.integers(10, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            del mutated[data.draw(st.integers(10, len(mutated))):]
    outcomes: list[object] = []
    for dialect in (fast, slow):
        try:
            outcomes.append(dialect.decode(bytes(mutated)).fields)
        except DecodeError as exc:
            outcomes.append((exc.field, exc.pos, exc.reason))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("name", ["cup", "iso87"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_plans_encode_variable_fields_as_the_reference(name: str,
                                                           data: st.DataObject) -> None:
    """The plans' own LLVAR/LLLVAR code (numeric and binary) gives the reference codec's
    bytes, and its errors for values it must refuse (too long, a non-digit, the wrong type)."""
    from iso8583.dialect import Dialect
    from iso8583.fields import Kind
    fast = get_dialect(name)
    slow = Dialect(fast.spec, plans=False)
    message = data.draw(messages(fast))
    variable = [n for n, spec in fast.fields.items()
                if not spec.fixed and spec.kind in (Kind.N, Kind.B)]
    number = data.draw(st.sampled_from(variable))
    size = fast.fields[number].max_len
    message.raw_items()[number] = data.draw(st.one_of(
        st.text("0123456789", max_size=size + 2), st.text("0123456789 aD=", max_size=size),
        st.binary(max_size=size + 2)))
    outcomes: list[object] = []
    for dialect in (fast, slow):
        try:
            outcomes.append(dialect.encode(message))
        except EncodeError as exc:
            outcomes.append((exc.field, str(exc)))
    assert outcomes[0] == outcomes[1]


def test_fast_plan_falls_back_for_odd_values() -> None:
    m = cup_sale()
    m[4] = "1234"  # short: zero-padded by the reference path
    assert CUP.decode(CUP.encode(m))[4] == "000000001234"
    m[41] = "T1"  # short ans: space-padded
    assert CUP.decode(CUP.encode(m))[41] == "T1      "


@pytest.mark.parametrize("prefix", ["0A10", "01A0", "1000", "0256"])
def test_lll_prefix_with_bad_nibbles_is_rejected_by_both_roads(prefix: str) -> None:
    from iso8583.dialect import Dialect
    body = _body_with(bytes.fromhex(prefix) + bytes(300), 55)
    for dialect in (CUP, Dialect(CUP.spec, plans=False)):
        with pytest.raises(DecodeError) as err:
            dialect.decode(body)
        assert (err.value.field, err.value.pos) == (55, 10)
