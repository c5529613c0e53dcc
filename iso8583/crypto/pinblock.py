"""ISO 9564-1 PIN blocks: format 0 (TDES, F52 for CUP) and format 4 (AES).

Format 0: PIN field ``0 N P..P F..F`` (16 nibbles) XOR PAN field
``0000`` + the 12 rightmost PAN digits excluding the check digit; the result is
TDES-ECB encrypted under the PIK.

Format 4 (ISO 9564-1:2017): 16-byte PIN field ``4 N P..P A..A`` (first 8
bytes, fill nibble A) + 8 random bytes; 16-byte PAN field ``M`` + PAN digits
(``M`` = PAN length - 12, PANs under 12 digits left-padded with zeros) + zero
nibbles. Block = E_K(E_K(PIN field) XOR PAN field) under an AES key.

Errors never carry the PIN, the PAN or a block.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from iso8583.crypto.des import decrypt_ecb, encrypt_ecb, xor_bytes
from iso8583.errors import CryptoError

PIN_MIN, PIN_MAX = 4, 12
AES_BLOCK = 16


def _check_pin(pin: str) -> None:
    if not (PIN_MIN <= len(pin) <= PIN_MAX and pin.isascii() and pin.isdigit()):
        raise CryptoError(f"PIN must be {PIN_MIN}-{PIN_MAX} decimal digits")


def _check_pan(pan: str, min_len: int = 1) -> None:
    if not (min_len <= len(pan) <= 19 and pan.isascii() and pan.isdigit()):
        raise CryptoError("PAN must be 1-19 decimal digits")


def pan_field_format0(pan: str) -> bytes:
    """``0000`` + 12 rightmost PAN digits excluding the check digit (left zero-padded)."""
    _check_pan(pan, 2)
    digits = pan[:-1][-12:].rjust(12, "0")
    return bytes.fromhex("0000" + digits)


def clear_format0(pin: str, pan: str) -> bytes:
    """The clear (unencrypted) format 0 PIN block: PIN field XOR PAN field."""
    _check_pin(pin)
    pin_field = int(f"0{len(pin):X}{pin}".ljust(16, "F"), 16)
    return (pin_field ^ int.from_bytes(pan_field_format0(pan))).to_bytes(8)


def _parse_pin_field(nibbles: str, control: str, fill: str, fmt: int) -> str:
    if nibbles[0] != control:
        raise CryptoError(f"PIN block format {fmt}: control field is not {control}")
    n = int(nibbles[1], 16)
    if not PIN_MIN <= n <= PIN_MAX:
        raise CryptoError(f"PIN block format {fmt}: PIN length {n} is outside {PIN_MIN}-{PIN_MAX}")
    pin = nibbles[2 : 2 + n]
    if not pin.isdigit():
        raise CryptoError(f"PIN block format {fmt}: PIN field holds a non-decimal digit")
    if nibbles[2 + n :] != fill * (14 - n):
        raise CryptoError(f"PIN block format {fmt}: fill is not all {fill}")
    return pin


def parse_clear_format0(block: bytes, pan: str) -> str:
    """Recover the PIN from a clear format 0 block; :class:`CryptoError` if malformed."""
    if len(block) != 8:
        raise CryptoError(f"format 0 PIN block must be 8 bytes, got {len(block)}")
    pin_field = int.from_bytes(block) ^ int.from_bytes(pan_field_format0(pan))
    return _parse_pin_field(pin_field.to_bytes(8).hex().upper(), "0", "F", 0)


def encrypt_format0(pik: bytes, pin: str, pan: str) -> bytes:
    """Format 0 PIN block encrypted (TDES/DES-ECB) under the PIK (8, 16 or 24 bytes)."""
    return encrypt_ecb(pik, clear_format0(pin, pan))


def decrypt_format0(pik: bytes, block: bytes, pan: str) -> str:
    """Decrypt a format 0 PIN block under the PIK and return the PIN."""
    if len(block) != 8:
        raise CryptoError(f"format 0 PIN block must be 8 bytes, got {len(block)}")
    return parse_clear_format0(decrypt_ecb(pik, block), pan)


def pin_field_format4(pin: str, fill: bytes | None = None) -> bytes:
    """Format 4 plain-text PIN field; ``fill`` is the 8 random bytes of the second half."""
    _check_pin(pin)
    if fill is None:
        fill = secrets.token_bytes(8)
    if len(fill) != 8:
        raise CryptoError(f"format 4 random fill must be 8 bytes, got {len(fill)}")
    return bytes.fromhex(f"4{len(pin):X}{pin}".ljust(16, "A")) + fill


def pan_field_format4(pan: str) -> bytes:
    """Format 4 plain-text PAN field: M (PAN length - 12), PAN, zero nibbles."""
    _check_pan(pan)
    digits = pan.rjust(12, "0")
    return bytes.fromhex(f"{len(digits) - 12}{digits}".ljust(32, "0"))


def parse_pin_field_format4(field: bytes) -> str:
    """Recover the PIN from a format 4 plain-text PIN field."""
    if len(field) != AES_BLOCK:
        raise CryptoError(f"format 4 PIN field must be 16 bytes, got {len(field)}")
    return _parse_pin_field(field[:8].hex().upper(), "4", "A", 4)


def _aes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) not in (16, 24, 32):
        raise CryptoError(f"AES key must be 16, 24 or 32 bytes, got {len(key)}")
    return Cipher(algorithms.AES(key), modes.ECB())


def encrypt_format4(key: bytes, pin: str, pan: str, fill: bytes | None = None) -> bytes:
    """Format 4 PIN block (16 bytes) under an AES key; ``fill`` defaults to 8 random bytes."""
    pin_field = pin_field_format4(pin, fill)
    pan_field = pan_field_format4(pan)
    enc = _aes(key).encryptor()
    intermediate = enc.update(pin_field)
    return enc.update(xor_bytes(intermediate, pan_field)) + enc.finalize()


def decrypt_format4(key: bytes, block: bytes, pan: str) -> str:
    """Decrypt a format 4 PIN block under an AES key and return the PIN."""
    if len(block) != AES_BLOCK:
        raise CryptoError(f"format 4 PIN block must be 16 bytes, got {len(block)}")
    pan_field = pan_field_format4(pan)
    dec = _aes(key).decryptor()
    intermediate = xor_bytes(dec.update(block), pan_field)
    pin_field = dec.update(intermediate) + dec.finalize()
    return parse_pin_field_format4(pin_field)


__all__ = [
    "clear_format0",
    "decrypt_format0",
    "decrypt_format4",
    "encrypt_format0",
    "encrypt_format4",
    "pan_field_format0",
    "pan_field_format4",
    "parse_clear_format0",
    "parse_pin_field_format4",
    "pin_field_format4",
]
