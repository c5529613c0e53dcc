"""Key check values: prove two parties hold the same key without showing it.

* DES/TDES keys: the first N bytes of E_K(00 x 8) (the CUP sign-on check value
  is N = 4, display KCVs usually N = 3).
* AES keys: by default the first N bytes of AES-CMAC_K(00 x 16), the method of
  ANSI X9.24-1:2017 for AES keys (usually N = 5); ``method="ecb"`` gives the
  older convention, the first N bytes of AES-ECB E_K(00 x 16).
"""

from __future__ import annotations

import hmac
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from iso8583.crypto.des import BLOCK, encrypt_ecb
from iso8583.errors import CryptoError

AES_KEY_LENGTHS = (16, 24, 32)


def tdes_kcv(key: bytes, length: int = 3) -> bytes:
    """First ``length`` bytes (1-8) of E_K(00 x 8) for an 8/16/24-byte DES key."""
    if not 1 <= length <= BLOCK:
        raise CryptoError(f"TDES check value length must be 1-8, got {length}")
    return encrypt_ecb(key, bytes(BLOCK))[:length]


def aes_kcv(key: bytes, length: int = 5, *, method: Literal["cmac", "ecb"] = "cmac") -> bytes:
    """First ``length`` bytes (1-16) of AES-CMAC_K(00 x 16), or of E_K(00 x 16) with ``ecb``."""
    if len(key) not in AES_KEY_LENGTHS:
        raise CryptoError(f"AES key must be 16, 24 or 32 bytes, got {len(key)}")
    if not 1 <= length <= 16:
        raise CryptoError(f"AES check value length must be 1-16, got {length}")
    if method == "cmac":
        c = CMAC(algorithms.AES(key))
        c.update(bytes(16))
        return c.finalize()[:length]
    if method == "ecb":
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return (enc.update(bytes(16)) + enc.finalize())[:length]
    raise CryptoError(f"unknown AES check value method {method!r}")


def kcv_matches(key: bytes, expected: bytes) -> bool:
    """Constant-time check of a TDES key against a 1-8 byte check value."""
    if not 1 <= len(expected) <= BLOCK:
        return False
    return hmac.compare_digest(tdes_kcv(key, len(expected)), expected)


__all__ = ["AES_KEY_LENGTHS", "aes_kcv", "kcv_matches", "tdes_kcv"]
