"""EMV application cryptograms (ARQC/AAC/TC) and ARPC, shared by the virtual card and the host.

Both sides must agree bit for bit, so this module fixes one profile:

* ICC master key: EMV 4.3 Book 2 Annex A1.4.1 option A. Y = the rightmost 16
  digits of PAN || PSN (left-padded with zeros), as 8 BCD bytes;
  MK = E_IMK(Y) || E_IMK(Y XOR FF..FF), with odd parity.
* Session key: EMV common session key derivation (Book 2 A1.3.1) with
  R = ATC || F0 || 00 x 5 for the left half and ATC || 0F || 00 x 5 for the right.
* Cryptogram: ISO/IEC 9797-1 MAC algorithm 3 with padding method 2 over the
  values of :data:`AC_INPUT_TAGS` in that order.
* ARPC method 1: E_key(ARQC XOR (ARC || 00 x 6)).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from iso8583.crypto.des import encrypt_ecb, set_odd_parity, xor_bytes
from iso8583.crypto.mac import one_shot_retail_mac
from iso8583.errors import CryptoError

AC_INPUT_TAGS: tuple[int, ...] = (
    0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82, 0x9F36,
)
_AMOUNT_OTHER_DEFAULT = bytes(6)


def _check_key16(key: bytes, name: str) -> None:
    if len(key) != 16:
        raise CryptoError(f"{name} must be 16 bytes, got {len(key)}")


def derive_icc_master_key(imk: bytes, pan: str, psn: str) -> bytes:
    """ICC master key from the issuer master key (EMV Book 2 A1.4.1 option A)."""
    _check_key16(imk, "issuer master key")
    if not (pan.isascii() and pan.isdigit() and 1 <= len(pan) <= 19):
        raise CryptoError("PAN must be 1-19 decimal digits")
    if not (psn.isascii() and psn.isdigit() and len(psn) <= 2):
        raise CryptoError("PAN sequence number must be 0-2 decimal digits")
    y = bytes.fromhex((pan + psn)[-16:].rjust(16, "0"))
    y_inverted = xor_bytes(y, b"\xff" * 8)
    return set_odd_parity(encrypt_ecb(imk, y) + encrypt_ecb(imk, y_inverted))


def derive_session_key(icc_mk: bytes, atc: bytes) -> bytes:
    """Application cryptogram session key for one ATC (EMV Book 2 A1.3.1)."""
    _check_key16(icc_mk, "ICC master key")
    if len(atc) != 2:
        raise CryptoError(f"ATC must be 2 bytes, got {len(atc)}")
    left = encrypt_ecb(icc_mk, atc + b"\xf0" + bytes(5))
    right = encrypt_ecb(icc_mk, atc + b"\x0f" + bytes(5))
    return left + right


def ac_input(tags: Mapping[int, bytes]) -> bytes:
    """The cryptogram input: values of :data:`AC_INPUT_TAGS` in order (9F03 defaults to zeros)."""
    parts: list[bytes] = []
    for tag in AC_INPUT_TAGS:
        value = tags.get(tag)
        if value is None:
            if tag != 0x9F03:
                raise CryptoError(f"cryptogram input tag {tag:02X} is missing")
            value = _AMOUNT_OTHER_DEFAULT
        parts.append(value)
    return b"".join(parts)


def generate_ac(session_key: bytes, data: bytes) -> bytes:
    """8-byte application cryptogram: ISO/IEC 9797-1 MAC algorithm 3, padding method 2."""
    _check_key16(session_key, "session key")
    return one_shot_retail_mac(session_key, data, padding=2)


def _atc(tags: Mapping[int, bytes]) -> bytes:
    atc = tags.get(0x9F36)
    if atc is None:
        raise CryptoError("cryptogram input tag 9F36 is missing")
    return atc


def compute_arqc(imk: bytes, pan: str, psn: str, tags: Mapping[int, bytes]) -> bytes:
    """The cryptogram a card with this PAN/PSN computes for ``tags`` (ATC from 9F36)."""
    session_key = derive_session_key(derive_icc_master_key(imk, pan, psn), _atc(tags))
    return generate_ac(session_key, ac_input(tags))


def verify_arqc(imk: bytes, pan: str, psn: str, tags: Mapping[int, bytes], arqc: bytes) -> bool:
    """Constant-time check of a received ARQC (or AAC/TC) against ``tags``."""
    return hmac.compare_digest(compute_arqc(imk, pan, psn, tags), arqc)


def compute_arpc_method1(icc_mk_or_session_key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1: E_key(ARQC XOR (ARC || 00 x 6)); ``arc`` is the 2-byte response code."""
    _check_key16(icc_mk_or_session_key, "ARPC key")
    if len(arqc) != 8:
        raise CryptoError(f"ARQC must be 8 bytes, got {len(arqc)}")
    if len(arc) != 2:
        raise CryptoError(f"ARC must be 2 bytes, got {len(arc)}")
    return encrypt_ecb(icc_mk_or_session_key, xor_bytes(arqc, arc + bytes(6)))


__all__ = [
    "AC_INPUT_TAGS",
    "ac_input",
    "compute_arpc_method1",
    "compute_arqc",
    "derive_icc_master_key",
    "derive_session_key",
    "generate_ac",
    "verify_arqc",
]
