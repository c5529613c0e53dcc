"""ISO 9564 PIN blocks format 0 and format 4."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from iso8583.crypto import pinblock as pb
from iso8583.crypto.des import encrypt_ecb
from iso8583.errors import CryptoError
from tests.iso8583.crypto._vectors import h, vector

pins = st.text("0123456789", min_size=4, max_size=12)
pans = st.text("0123456789", min_size=12, max_size=19)
aes_keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


def test_format0_vector() -> None:
    v = vector("iso9564_format0_clear")
    block = pb.clear_format0(v["pin"], v["pan"])
    assert block == h(v["clear_pin_block"])
    assert pb.parse_clear_format0(block, v["pan"]) == v["pin"]


@given(st.binary(min_size=16, max_size=16), pins, pans)
def test_format0_round_trip(pik: bytes, pin: str, pan: str) -> None:
    block = pb.encrypt_format0(pik, pin, pan)
    assert len(block) == 8
    assert pb.decrypt_format0(pik, block, pan) == pin


@given(aes_keys, pins, pans, st.binary(min_size=8, max_size=8))
def test_format4_round_trip(key: bytes, pin: str, pan: str, fill: bytes) -> None:
    block = pb.encrypt_format4(key, pin, pan, fill)
    assert len(block) == 16
    assert pb.decrypt_format4(key, block, pan) == pin


def test_format4_fields_layout() -> None:
    assert pb.pin_field_format4("1234", bytes(8)) == h("441234AAAAAAAAAA") + bytes(8)
    # M = PAN length - 12; shorter PANs are left-padded to 12 digits with M = 0.
    assert pb.pan_field_format4("1234567890123456789") == h("71234567890123456789" + "0" * 12)
    assert pb.pan_field_format4("12345678") == h("0000012345678" + "0" * 19)


def test_format4_is_two_aes_encryptions_around_the_pan_field() -> None:
    key = bytes(range(16))
    pin_field = pb.pin_field_format4("987654", b"\x11" * 8)
    pan_field = pb.pan_field_format4("6225881234560019")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    a = enc.update(pin_field)
    b = bytes(x ^ y for x, y in zip(a, pan_field, strict=True))
    expected = enc.update(b)
    assert pb.encrypt_format4(key, "987654", "6225881234560019", b"\x11" * 8) == expected


def test_format4_random_fill_by_default() -> None:
    key = bytes(16)
    assert pb.encrypt_format4(key, "1234", "6225881234560019") != pb.encrypt_format4(
        key, "1234", "6225881234560019"
    )


@pytest.mark.parametrize(
    ("field", "why"),
    [
        ("141234FFFFFFFFFF", "control"),
        ("031234FFFFFFFFFF", "length"),
        ("0D1234FFFFFFFFFF", "length"),
        ("04123AFFFFFFFFFF", "non-decimal"),
        ("041234FFFFFFFFFE", "fill"),
    ],
)
def test_format0_parse_rejects(field: str, why: str) -> None:
    pan = "5544332211009966"
    block = bytes(a ^ b for a, b in zip(h(field), pb.pan_field_format0(pan), strict=True))
    with pytest.raises(CryptoError, match=why) as info:
        pb.parse_clear_format0(block, pan)
    assert "1234" not in str(info.value)
    pik = bytes(range(16))
    with pytest.raises(CryptoError, match=why):
        pb.decrypt_format0(pik, encrypt_ecb(pik, block), pan)


@pytest.mark.parametrize(
    ("first_half", "why"),
    [
        ("341234AAAAAAAAAA", "control"),
        ("431234AAAAAAAAAA", "length"),
        ("4F1234AAAAAAAAAA", "length"),
        ("441B34AAAAAAAAAA", "non-decimal"),
        ("441234AAAAAAAAAF", "fill"),
    ],
)
def test_format4_parse_rejects(first_half: str, why: str) -> None:
    field = h(first_half) + bytes(8)
    with pytest.raises(CryptoError, match=why):
        pb.parse_pin_field_format4(field)
    key = bytes(range(16))
    pan = "6225881234560019"
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    a = enc.update(field)
    block = enc.update(bytes(x ^ y for x, y in zip(a, pb.pan_field_format4(pan), strict=True)))
    with pytest.raises(CryptoError, match=why):
        pb.decrypt_format4(key, block, pan)


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "", "１２３４"])
def test_bad_pins_rejected(pin: str) -> None:
    with pytest.raises(CryptoError):
        pb.clear_format0(pin, "5544332211009966")
    with pytest.raises(CryptoError):
        pb.encrypt_format4(bytes(16), pin, "5544332211009966", bytes(8))


def test_bad_pan_fill_key_and_block_lengths_rejected() -> None:
    with pytest.raises(CryptoError):
        pb.clear_format0("1234", "55443322110099X6")
    with pytest.raises(CryptoError):
        pb.pan_field_format4("1" * 20)
    with pytest.raises(CryptoError):
        pb.encrypt_format4(bytes(16), "1234", "5544332211009966", bytes(7))
    with pytest.raises(CryptoError):
        pb.encrypt_format4(bytes(8), "1234", "5544332211009966", bytes(8))
    with pytest.raises(CryptoError):
        pb.decrypt_format0(bytes(16), bytes(7), "5544332211009966")
    with pytest.raises(CryptoError):
        pb.decrypt_format4(bytes(16), bytes(8), "5544332211009966")
