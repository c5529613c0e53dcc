"""TDES helpers: key expansion, cached contexts, zero-IV CBC, the CBC-MAC engine, parity."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583.crypto import des
from iso8583.errors import CryptoError

KEY16 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_expand_key_forms() -> None:
    assert des.expand_key(KEY16) == KEY16 + KEY16[:8]
    assert des.expand_key(KEY16[:8]) == KEY16[:8] * 3
    assert des.expand_key(KEY16 + KEY16[:8]) == KEY16 + KEY16[:8]
    for n in (0, 7, 9, 15, 17, 23, 25, 32):
        with pytest.raises(CryptoError):
            des.expand_key(bytes(n))


def test_two_key_and_single_des_emit_no_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        des.encrypt_ecb(KEY16, bytes(8))
        des.encrypt_ecb(KEY16[:8], bytes(8))
        des.encrypt_cbc(KEY16, bytes(16))
        des.DesKey(bytes(range(16))).encrypt_ecb(bytes(8))
        des.cbc_cipher(bytes(range(8))).encryptor().update(bytes(16))
    assert caught == []


def test_single_des_equals_tdes_with_equal_halves() -> None:
    k = KEY16[:8]
    assert des.encrypt_ecb(k, b"12345678") == des.encrypt_ecb(k + k, b"12345678")


def test_block_alignment_enforced() -> None:
    for fn in (des.encrypt_ecb, des.decrypt_ecb, des.encrypt_cbc, des.decrypt_cbc):
        with pytest.raises(CryptoError):
            fn(KEY16, b"1234567")


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=64).map(lambda b: b[: len(b) // 8 * 8]),
)
def test_ecb_and_cbc_invert(key: bytes, data: bytes) -> None:
    assert des.decrypt_ecb(key, des.encrypt_ecb(key, data)) == data
    assert des.decrypt_cbc(key, des.encrypt_cbc(key, data)) == data


@given(st.binary(min_size=1, max_size=24))
def test_odd_parity(key: bytes) -> None:
    fixed = des.set_odd_parity(key)
    assert des.has_odd_parity(fixed)
    assert bytes(a & 0xFE for a in fixed) == bytes(a & 0xFE for a in key)


def test_deskey_repr_shows_kcv_not_key() -> None:
    key = des.DesKey(KEY16)
    assert repr(key) == "DesKey(len=16, kcv=08D7B4)"
    assert KEY16.hex().upper() not in repr(key)
    assert KEY16.hex() not in str(key).lower()
    assert key == des.DesKey(KEY16)
    assert key != des.DesKey(KEY16[::-1])
    assert key.decrypt_ecb(key.encrypt_ecb(b"ABCDEFGH")) == b"ABCDEFGH"
    assert key.decrypt_cbc(key.encrypt_cbc(b"ABCDEFGH" * 2)) == b"ABCDEFGH" * 2


def test_xor_bytes() -> None:
    assert des.xor_bytes(b"\x0f\xf0", b"\xff\xff") == b"\xf0\x0f"
    with pytest.raises(CryptoError):
        des.xor_bytes(b"\x00", b"\x00\x00")


@given(st.sampled_from([8, 16, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.integers(1, 6).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)))
def test_fresh_encryptors_encrypt_as_cipher_encryptor_does(key: bytes, data: bytes) -> None:
    """The encryptors of keys used once come from cryptography's context constructor
    (when it checks out): the same ciphertexts as Cipher(...).encryptor()."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    key24 = des.expand_key(key)
    assert des.fresh_ecb_encryptor(key).update(data) == \
        Cipher(TripleDES(key24), modes.ECB()).encryptor().update(data)
    assert des.fresh_cbc_encryptor(key).update(data) == \
        Cipher(TripleDES(key24), modes.CBC(bytes(8))).encryptor().update(data)


def test_fresh_encryptors_take_the_public_road_without_the_constructor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    monkeypatch.delattr(rust_openssl.ciphers, "create_encryption_ctx")
    assert des._context_maker() is des._cipher_encryptor
    monkeypatch.undo()
    assert des._context_maker() is rust_openssl.ciphers.create_encryption_ctx


@given(st.sampled_from([8, 16, 24]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.integers(min_value=1, max_value=6).map(lambda n: bytes(range(8 * n))))
def test_fresh_encryptors_match_the_public_constructor(key: bytes, data: bytes) -> None:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    full = des.expand_key(key)
    ecb = Cipher(TripleDES(full), modes.ECB()).encryptor()
    cbc = Cipher(TripleDES(full), modes.CBC(bytes(8))).encryptor()
    assert des.fresh_ecb_encryptor(key).update(data) == ecb.update(data)
    assert des.fresh_cbc_encryptor(key).update(data) == cbc.update(data)
