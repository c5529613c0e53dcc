"""CUP POS MAC and ISO 9797-1 algorithm 3 (X9.19) MACs."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583.crypto.des import decrypt_ecb, encrypt_ecb
from iso8583.crypto.mac import (
    CupMac,
    RetailMac,
    X919Mac,
    cup_pos_mac,
    pad_method1,
    pad_method2,
    retail_mac,
    x919_mac,
    xor_blocks,
)
from iso8583.errors import CryptoError, MacError
from tests.iso8583.crypto._vectors import h

ISO9797_KEY = h("0123456789ABCDEFFEDCBA9876543210")

keys16 = st.binary(min_size=16, max_size=16)
maks = st.one_of(st.binary(min_size=8, max_size=8), keys16)


def reference_cup_mac(mak: bytes, mab: bytes) -> bytes:
    """DESIGN.md section 4 step by step, one block at a time (the slow, obvious way)."""
    if len(mab) % 8:
        mab += bytes(8 - len(mab) % 8)
    acc = bytes(8)
    for i in range(0, len(mab), 8):
        acc = bytes(a ^ b for a, b in zip(acc, mab[i : i + 8], strict=True))
    text = acc.hex().upper().encode()
    first = encrypt_ecb(mak, text[:8])
    mixed = bytes(a ^ b for a, b in zip(first, text[8:], strict=True))
    return encrypt_ecb(mak, mixed).hex().upper()[:8].encode()


def reference_retail_mac(key: bytes, data: bytes, padded: bytes) -> bytes:
    """ISO 9797-1 alg 3 one block at a time with single-DES K1 and K2."""
    k1, k2 = key[:8], key[8:]
    chain = bytes(8)
    for i in range(0, len(padded), 8):
        block = bytes(a ^ b for a, b in zip(chain, padded[i : i + 8], strict=True))
        chain = encrypt_ecb(k1, block)
    return encrypt_ecb(k1, decrypt_ecb(k2, chain))


# ISO/IEC 9797-1:2011 Annex B.4 examples (MAC algorithm 3, K = 0123456789ABCDEF,
# K' = FEDCBA9876543210); the first is also the classic ANSI X9.19 example.
@pytest.mark.parametrize(
    ("data", "padding", "expected"),
    [
        (b"Now is the time for all ", 1, "A1C72E74EA3FA9B6"),
        (b"Now is the time for all ", 2, "E9086230CA3BE796"),
        (b"Now is the time for it", 1, "2E2B1428CC78254F"),
    ],
)
def test_iso9797_1_annex_b_examples(data: bytes, padding: int, expected: str) -> None:
    assert retail_mac(ISO9797_KEY, data, padding) == h(expected)
    if padding == 1:
        assert x919_mac(ISO9797_KEY, data) == h(expected)
        assert X919Mac(ISO9797_KEY).compute(data) == h(expected)


@given(keys16, st.binary(max_size=300))
def test_retail_mac_matches_block_by_block_reference(key: bytes, data: bytes) -> None:
    assert x919_mac(key, data) == reference_retail_mac(key, data, pad_method1(data))
    assert retail_mac(key, data, 2) == reference_retail_mac(key, data, pad_method2(data))


@given(maks, st.binary(max_size=300))
def test_cup_mac_matches_design_reference(mak: bytes, mab: bytes) -> None:
    mac = cup_pos_mac(mak, mab)
    assert mac == reference_cup_mac(mak, mab)
    assert len(mac) == 8
    assert all(c in b"0123456789ABCDEF" for c in mac)


@given(maks, st.binary(min_size=1, max_size=200), st.data())
def test_cup_mac_changes_when_any_byte_changes(mak: bytes, mab: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(mab) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = mab[:i] + bytes((mab[i] ^ flip,)) + mab[i + 1 :]
    assert cup_pos_mac(mak, changed) != cup_pos_mac(mak, mab)


@given(keys16, st.binary(min_size=1, max_size=200), st.data())
def test_x919_changes_when_any_byte_changes(key: bytes, msg: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(msg) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = msg[:i] + bytes((msg[i] ^ flip,)) + msg[i + 1 :]
    mac = X919Mac(key)
    assert mac.compute(changed) != mac.compute(msg)
    assert not mac.verify(changed, mac.compute(msg))


def test_cup_mac_verify_and_check() -> None:
    mac = CupMac(h("5BB5C72CD00B7338"))
    mab = bytes.fromhex("0200702406C020C09A11") * 7
    good = mac.compute(mab)
    assert mac.verify(mab, good)
    assert not mac.verify(mab, b"00000000")
    mac.check(mab, good)
    with pytest.raises(MacError):
        mac.check(mab + b"\x01", good)


def test_retail_mac_verify_truncated_and_check() -> None:
    mac = RetailMac(ISO9797_KEY)
    full = mac.compute(b"abc")
    assert mac.verify(b"abc", full[:4])
    assert not mac.verify(b"abc", full[:3])
    with pytest.raises(MacError):
        mac.check(b"abd", full)


@given(st.binary(max_size=400))
def test_xor_blocks_is_the_byte_wise_xor_of_the_zero_padded_blocks(data: bytes) -> None:
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    want = bytearray(8)
    for i, byte in enumerate(padded):
        want[i % 8] ^= byte
    assert xor_blocks(data) == bytes(want)


@pytest.mark.parametrize("size", [4095, 4096, 4097, 8193, 20_000])
def test_xor_blocks_of_a_long_block_is_the_byte_wise_xor(size: int) -> None:
    data = bytes((i * 7 + i // 8) & 0xFF for i in range(size))  # past the masks made once
    padded = data + bytes(-len(data) % 8)
    want = bytearray(8)
    for i, byte in enumerate(padded):
        want[i % 8] ^= byte
    assert xor_blocks(data) == bytes(want)


def test_empty_message_is_one_zero_block() -> None:
    assert xor_blocks(b"") == bytes(8)
    assert x919_mac(ISO9797_KEY, b"") == x919_mac(ISO9797_KEY, bytes(8))


@given(keys16, st.lists(st.binary(max_size=64), min_size=1, max_size=6), st.sampled_from([1, 2]))
def test_one_object_restarts_from_a_zero_iv_every_call(
    key: bytes, messages: list[bytes], padding: int
) -> None:
    # The object reuses a CBC context whose chain it cancels; each answer must
    # still equal a MAC computed from scratch.
    mac = RetailMac(key, padding)
    pad = pad_method1 if padding == 1 else pad_method2
    for msg in messages:
        assert mac.compute(msg) == reference_retail_mac(key, msg, pad(msg))


def test_repeated_calls_agree_interleaved() -> None:
    # The X9.19 object reuses a CBC context; interleaving messages must not leak state.
    a, b = X919Mac(ISO9797_KEY), X919Mac(ISO9797_KEY[::-1])
    msgs = [bytes(range(n)) for n in (9, 200, 17, 64, 1)]
    first = [(a.compute(m), b.compute(m)) for m in msgs]
    again = [(a.compute(m), b.compute(m)) for m in reversed(msgs)]
    assert first == list(reversed(again))


def test_bad_keys_and_padding_rejected() -> None:
    with pytest.raises(CryptoError):
        CupMac(bytes(24))
    with pytest.raises(CryptoError):
        X919Mac(bytes(8))
    with pytest.raises(CryptoError):
        RetailMac(bytes(16), padding=3)


def test_buffers_are_accepted_and_never_modified() -> None:
    # Typed as bytes, but callers holding bytearrays must not see them grow.
    for padding in (1, 2):
        buf = bytearray(b"abc" * 5)
        mac = RetailMac(ISO9797_KEY, padding)
        assert mac.compute(cast("bytes", buf)) == mac.compute(bytes(buf))
        assert buf == bytearray(b"abc" * 5)
        assert mac.compute(cast("bytes", memoryview(bytes(buf)))) == mac.compute(bytes(buf))
    buf = bytearray(b"mab" * 5)
    assert cup_pos_mac(cast("bytes", bytearray(8)), cast("bytes", buf)) == cup_pos_mac(
        bytes(8), bytes(buf)
    )
    assert buf == bytearray(b"mab" * 5)


@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=120),
       padding=st.sampled_from([1, 2]))
def test_one_shot_retail_mac_equals_the_cached_one(key: bytes, data: bytes,
                                                   padding: int) -> None:
    from iso8583.crypto.mac import one_shot_retail_mac, retail_mac
    assert one_shot_retail_mac(key, data, padding) == retail_mac(key, data, padding)
