"""TDES DUKPT (ANSI X9.24-1:2009): per-transaction keys from a BDK and a key serial number.

The 10-byte KSN ends in a 21-bit transaction counter. The host derives the
initial key (IPEK) from the BDK and the KSN with the counter cleared, then the
transaction key by running the non-reversible key generation process once for
every one-bit of the counter, from the highest bit down. A device never uses
a counter with more than 10 one-bits (:func:`next_ksn` skips them) and stops
when the counter would pass 21 bits.

Working-key variants XOR the transaction key with a per-purpose mask (PIN,
MAC request/response, data request/response); the data encryption keys are
the data variant encrypted with itself (X9.24-1:2009 data key derivation).
"""

from __future__ import annotations

from iso8583.crypto.des import encrypt_ecb
from iso8583.crypto.pinblock import encrypt_format0
from iso8583.errors import CryptoError

KSN_LEN = 10
COUNTER_BITS = 21
COUNTER_MASK = (1 << COUNTER_BITS) - 1
MAX_ONE_BITS = 10

_KEY_MASK = 0xC0C0C0C000000000C0C0C0C000000000
_PIN_VARIANT = 0x00000000000000FF00000000000000FF
_MAC_REQUEST_VARIANT = 0x000000000000FF00000000000000FF00
_MAC_RESPONSE_VARIANT = 0x00000000FF00000000000000FF000000
_DATA_REQUEST_VARIANT = 0x0000000000FF00000000000000FF0000
_DATA_RESPONSE_VARIANT = 0x000000FF00000000000000FF00000000


class DukptCounterExhausted(CryptoError):  # noqa: N818 - name fixed by the agreed API
    """The KSN counter is past its 21 bits, or has more than 10 one-bits (never used)."""


def _check_ksn(ksn: bytes) -> int:
    if len(ksn) != KSN_LEN:
        raise CryptoError(f"KSN must be {KSN_LEN} bytes, got {len(ksn)}")
    return int.from_bytes(ksn)


def _check_key16(key: bytes, name: str) -> None:
    if len(key) != 16:
        raise CryptoError(f"{name} must be 16 bytes, got {len(key)}")


def ksn_counter(ksn: bytes) -> int:
    """The 21-bit transaction counter of a KSN."""
    return _check_ksn(ksn) & COUNTER_MASK


def with_counter(ksn: bytes, counter: int) -> bytes:
    """The KSN with its transaction counter replaced by ``counter``."""
    value = _check_ksn(ksn)
    if not 0 <= counter <= COUNTER_MASK:
        raise DukptCounterExhausted(f"DUKPT counter {counter:#x} does not fit in 21 bits")
    return ((value & ~COUNTER_MASK) | counter).to_bytes(KSN_LEN)


def next_ksn(ksn: bytes) -> bytes:
    """The KSN of the device's next transaction, skipping counters with more than 10 one-bits."""
    counter = ksn_counter(ksn) + 1
    while counter.bit_count() > MAX_ONE_BITS:
        # Every number between c and c + lowest set bit only adds one-bits,
        # so this jumps straight to the next usable counter.
        counter += counter & -counter
    if counter > COUNTER_MASK:
        raise DukptCounterExhausted("DUKPT transaction counter exhausted: inject a new key")
    return with_counter(ksn, counter)


def derive_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """Initial PIN encryption key (IPEK) for the device whose KSN is ``ksn``."""
    _check_key16(bdk, "BDK")
    base = ((_check_ksn(ksn) & ~COUNTER_MASK) >> 16).to_bytes(8)
    left = encrypt_ecb(bdk, base)
    right = encrypt_ecb((int.from_bytes(bdk) ^ _KEY_MASK).to_bytes(16), base)
    return left + right


def _nrkgp(key: int, data: int) -> int:
    # Non-reversible key generation process: each half is DES(key_left,
    # data XOR key_right) XOR key_right, the left half under the masked key.
    def half(k: int) -> int:
        kl, kr = (k >> 64).to_bytes(8), k & 0xFFFFFFFFFFFFFFFF
        return int.from_bytes(encrypt_ecb(kl, (data ^ kr).to_bytes(8))) ^ kr

    return (half(key ^ _KEY_MASK) << 64) | half(key)


def derive_transaction_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction (future) key for the KSN's counter, derived from the IPEK."""
    _check_key16(ipek, "IPEK")
    value = _check_ksn(ksn)
    counter = value & COUNTER_MASK
    if counter == 0:
        raise CryptoError("DUKPT counter 0 has no transaction key")
    if counter.bit_count() > MAX_ONE_BITS:
        raise DukptCounterExhausted("DUKPT counter has more than 10 one-bits")
    register = value & 0xFFFFFFFFFFFFFFFF & ~COUNTER_MASK
    key = int.from_bytes(ipek)
    bit = 1 << (COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            register |= bit
            key = _nrkgp(key, register)
        bit >>= 1
    return key.to_bytes(16)


def _variant(key: bytes, mask: int) -> bytes:
    _check_key16(key, "transaction key")
    return (int.from_bytes(key) ^ mask).to_bytes(16)


def pin_key(transaction_key: bytes) -> bytes:
    """PIN encryption key: the transaction key XOR the PIN variant."""
    return _variant(transaction_key, _PIN_VARIANT)


def mac_key(transaction_key: bytes, *, response: bool = False) -> bytes:
    """MAC key for requests (or responses): the transaction key XOR the MAC variant."""
    return _variant(transaction_key, _MAC_RESPONSE_VARIANT if response else _MAC_REQUEST_VARIANT)


def data_key(transaction_key: bytes, *, response: bool = False) -> bytes:
    """Data encryption key: the data variant, each half TDES-encrypted under the variant itself."""
    variant = _variant(
        transaction_key, _DATA_RESPONSE_VARIANT if response else _DATA_REQUEST_VARIANT
    )
    return encrypt_ecb(variant, variant[:8]) + encrypt_ecb(variant, variant[8:])


def host_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """Host side: the PIN key for a KSN, straight from the BDK."""
    return pin_key(derive_transaction_key(derive_ipek(bdk, ksn), ksn))


def encrypt_pin_block(ipek: bytes, ksn: bytes, pin: str, pan: str) -> bytes:
    """Device side: ISO 9564 format 0 PIN block under the KSN's DUKPT PIN key."""
    return encrypt_format0(pin_key(derive_transaction_key(ipek, ksn)), pin, pan)


__all__ = [
    "COUNTER_MASK",
    "KSN_LEN",
    "MAX_ONE_BITS",
    "DukptCounterExhausted",
    "data_key",
    "derive_ipek",
    "derive_transaction_key",
    "encrypt_pin_block",
    "host_pin_key",
    "ksn_counter",
    "mac_key",
    "next_ksn",
    "pin_key",
    "with_counter",
]
