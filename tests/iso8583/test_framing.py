"""Frame reassembly under any chunking, length limits, TPDU/header handling."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583.dialects import get_dialect
from iso8583.errors import DecodeError, EncodeError, FramingError
from iso8583.framing import FrameDecoder, encode_length

CUP = get_dialect("cup")


@given(payloads=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=10),
       cuts=st.lists(st.integers(0, 4000), max_size=30))
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_length(p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(max_length=1000)
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += decoder.feed(stream[start:end])
    assert out == payloads
    assert decoder.buffered == 0
    decoder.eof()


def test_oversize_length_rejected_before_buffering() -> None:
    decoder = FrameDecoder(max_length=100)
    with pytest.raises(FramingError) as err:
        decoder.feed(b"\xff\xff")  # declared 65535, body never sent
    assert decoder.buffered == 0
    assert err.value.field == "length"
    with pytest.raises(FramingError):
        decoder.feed(b"\x00\x01a")  # a broken stream stays broken


def test_zero_length_rejected_and_eof_inside_frame() -> None:
    with pytest.raises(FramingError):
        FrameDecoder().feed(b"\x00\x00")
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x05ab")
    with pytest.raises(FramingError):
        decoder.eof()


def test_encode_length_limit() -> None:
    with pytest.raises(EncodeError):
        encode_length(bytes(256), length_bytes=1)


def _sale() -> bytes:
    m = CUP.message("0200", {3: "000000", 4: 100, 11: 1, 41: "10000001"})
    return CUP.pack(m, tpdu=bytes.fromhex("6000030000"))


def test_cup_frame_layout_and_unpack() -> None:
    frame = _sale()
    assert int.from_bytes(frame[:2], "big") == len(frame) - 2
    assert frame[2:7] == bytes.fromhex("6000030000")
    assert frame[7:13] == CUP.spec.default_header
    f = CUP.unpack(frame)
    assert f.tpdu == bytes.fromhex("6000030000")
    assert f.message.amount == 100
    assert f.body == frame[13:]
    assert CUP.reply_tpdu(f.tpdu) == bytes.fromhex("6000000003")


def test_unpack_errors_are_positioned_in_the_frame() -> None:
    frame = bytearray(_sale())
    frame[2] = 0x61
    with pytest.raises(FramingError):
        CUP.unpack(bytes(frame))
    frame = bytearray(_sale())
    frame[2 + 5 + 6 + 2 + 8 + 3 + 5] = 0xAB  # inside F4
    with pytest.raises(DecodeError) as err:
        CUP.unpack(bytes(frame))
    assert err.value.field == 4
    assert err.value.pos == 2 + 5 + 6 + 2 + 8 + 3
    with pytest.raises(FramingError):
        CUP.unpack(_sale()[:-1])


def test_dialect_frame_decoder_and_payload() -> None:
    dec = CUP.frame_decoder()
    frame = _sale()
    payloads = dec.feed(frame + frame[:5])
    assert len(payloads) == 1
    assert CUP.unpack_payload(payloads[0]).message.stan == "000001"


def test_iso87_has_no_tpdu() -> None:
    iso = get_dialect("iso87")
    m = iso.message("0800", {11: 1, 70: "001"})
    frame = iso.pack(m)
    assert frame[2:6] == b"0800"
    with pytest.raises(EncodeError):
        iso.pack(m, tpdu=bytes(5))
