"""Key check values: the shared TDES vector and the AES conventions."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from iso8583.crypto.kcv import aes_kcv, kcv_matches, tdes_kcv
from iso8583.errors import CryptoError
from tests.iso8583.crypto._vectors import h, vector


def test_tdes_kcv_vector() -> None:
    v = vector("kcv_tdes")
    assert tdes_kcv(h(v["key"]), 2) == h(v["kcv2"])
    assert kcv_matches(h(v["key"]), h(v["kcv2"]))
    assert not kcv_matches(h(v["key"]), b"\x00\x00")
    assert not kcv_matches(h(v["key"]), b"")


def test_aes_ecb_kcv_known_answer() -> None:
    # AES-128 of a zero block under the zero key (FIPS-197 style known answer,
    # widely published): 66E94BD4EF8A2C3B884CFA59CA342B2E.
    assert aes_kcv(bytes(16), 16, method="ecb") == h("66E94BD4EF8A2C3B884CFA59CA342B2E")
    assert aes_kcv(bytes(16), 3, method="ecb") == h("66E94B")


def test_aes_cmac_kcv_is_cmac_of_a_zero_block() -> None:
    key = bytes(range(16))
    c = CMAC(algorithms.AES(key))
    c.update(bytes(16))
    assert aes_kcv(key) == c.finalize()[:5]
    assert aes_kcv(key) != aes_kcv(key, method="ecb")


@pytest.mark.parametrize("length", [0, 9])
def test_tdes_kcv_length_bounds(length: int) -> None:
    with pytest.raises(CryptoError):
        tdes_kcv(bytes(16), length)


def test_aes_kcv_rejects_bad_keys() -> None:
    with pytest.raises(CryptoError):
        aes_kcv(bytes(15))
    with pytest.raises(CryptoError):
        aes_kcv(bytes(16), 17)
