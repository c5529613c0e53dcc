"""Message authentication codes for F64/F128: the CUP POS MAC and the ANSI X9.19 retail MAC.

* CUP POS MAC (DESIGN.md section 4): zero-pad the MAB to 8-byte blocks, XOR
  all blocks, write the result as 16 uppercase hex ASCII characters, encrypt
  the first 8 characters with the MAK, XOR with the last 8, encrypt again,
  write as uppercase hex and keep the first 8 ASCII characters. The MAK is 8
  bytes (single DES) from the 24/40-byte sign-on forms, or 16 bytes (TDES).
* ANSI X9.19 retail MAC = ISO/IEC 9797-1 MAC algorithm 3 with padding method 1:
  single-DES CBC under K1 over every block, then decrypt with K2 and encrypt
  with K1. EMV application cryptograms use the same algorithm with padding
  method 2 (``RetailMac(key, padding=2)``).

The precompiled objects (:class:`CupMac`, :class:`RetailMac`, :class:`X919Mac`)
keep their cipher contexts, so a MAC costs a couple of C calls, not a Python
loop per block and not a cipher set-up per call.
"""

from __future__ import annotations

import binascii
import hmac
import struct
from collections.abc import Callable
from functools import lru_cache

from iso8583.crypto.des import (
    BLOCK,
    cbc_cipher,
    ecb_contexts,
    fresh_cbc_encryptor,
    fresh_ecb_encryptor,
)
from iso8583.errors import CryptoError, MacError

_ZERO_BLOCK = bytes(BLOCK)
_U64 = struct.Struct(">Q")
_pack_u64 = _U64.pack
_unpack_u64 = _U64.unpack_from
_hexlify = binascii.hexlify


def pad_method1(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zeros up to a whole block (empty input: one block)."""
    data = bytes(data)
    rem = len(data) % BLOCK
    if rem:
        return data + bytes(BLOCK - rem)
    return data or _ZERO_BLOCK


def pad_method2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: one 0x80 byte, then zeros up to a whole block."""
    data = bytes(data) + b"\x80"
    rem = len(data) % BLOCK
    return data + bytes(BLOCK - rem) if rem else data


def xor_blocks(data: bytes) -> bytes:
    """XOR all 8-byte blocks of ``data`` after zero padding (the CUP MAB fold)."""
    # The data as one little-endian integer: block i at bit 64 i, and the zero padding
    # is high zero bits, so nothing is padded. Counting the blocks up to a power of two
    # (zero blocks XOR to nothing), each fold XORs the upper half of the blocks onto the
    # lower half, which keeps each byte at its offset in its block: log2(blocks) folds
    # of three big-integer operations, the halves' masks made once (a reduce over the
    # blocks as 64-bit words made an int object a block).
    blocks = (len(data) + 7) >> 3 or 1
    bits = 1 << ((blocks - 1).bit_length() + 5)  # half the blocks, rounded up to 2**k, in bits
    folded = int.from_bytes(data, "little")
    while bits >= 64:
        mask = _LOW_BITS.get(bits)
        if mask is None:
            mask = (1 << bits) - 1
        folded = (folded & mask) ^ (folded >> bits)
        bits >>= 1
    return folded.to_bytes(BLOCK, "little")


#: xor_blocks' masks: the low 2**k bits set, for halves of up to 256 blocks (a 4 KiB MAB).
_LOW_BITS = {1 << k: (1 << (1 << k)) - 1 for k in range(6, 15)}


class CupMac:
    """CUP POS MAC (F64) under one MAK (8 or 16 bytes)."""

    __slots__ = ("_enc",)

    def __init__(self, mak: bytes) -> None:
        if len(mak) not in (8, 16):
            raise CryptoError(f"MAK must be 8 or 16 bytes, got {len(mak)}")
        self._enc = ecb_contexts(mak)[0]

    def __repr__(self) -> str:
        return "CupMac(<MAK hidden>)"

    def compute(self, mab: bytes) -> bytes:
        """Return the 8 ASCII bytes that go into F64 for the MAC block ``mab``."""
        hex16 = _hexlify(xor_blocks(mab)).upper()  # ASCII hex as bytes: no str between
        enc = self._enc
        # struct reads the halves in place (no slices, no int.from_bytes calls)
        step1 = _unpack_u64(enc.update(hex16[:8]))[0] ^ _unpack_u64(hex16, BLOCK)[0]
        step2 = enc.update(_pack_u64(step1))
        return _hexlify(step2[:4]).upper()

    def verify(self, mab: bytes, mac: bytes) -> bool:
        """Constant-time check of a received F64 against the MAB."""
        return hmac.compare_digest(self.compute(mab), mac)

    def check(self, mab: bytes, mac: bytes) -> None:
        """Raise :class:`MacError` unless ``mac`` is the MAC of ``mab``."""
        if not self.verify(mab, mac):
            raise MacError("response MAC does not verify")


class RetailMac:
    """ISO/IEC 9797-1 MAC algorithm 3 (retail MAC) under a 16-byte key K1||K2.

    Blocks 1..n-1 run single-DES CBC under K1 in one C call; the last block's
    E_K1(D_K2(E_K1(x))) is exactly TDES-EDE under K1K2K1, one more C call.

    Setting up a CBC context costs about as much as the whole MAC, so contexts
    are kept and never finalised. Such a context remembers its chaining value
    (the last ciphertext block); XORing that value into the next message's
    first block cancels it, so each message still starts from a zero IV.
    Contexts sit in a free list with their chaining value: ``list.pop`` and
    ``append`` are atomic under the GIL, so concurrent callers never share one.
    At ~7 us per 200-byte MAC, method calls and attribute look-ups are a
    measurable share, hence the inlined body.
    """

    __slots__ = ("_ede", "_free", "_new", "_pad80")

    def __init__(self, key: bytes, padding: int = 1) -> None:
        if len(key) != 16:
            raise CryptoError(f"retail MAC key must be 16 bytes, got {len(key)}")
        if padding not in (1, 2):
            raise CryptoError(f"unsupported ISO 9797-1 padding method {padding}")
        self._pad80 = padding == 2
        self._new = cbc_cipher(key[:8]).encryptor
        self._free: list[tuple[Callable[[bytes], bytes], int]] = []
        self._ede = ecb_contexts(key)[0].update

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<key hidden>)"

    def compute(self, data: bytes) -> bytes:
        """Return the 8-byte MAC of ``data``."""
        if type(data) is not bytes:
            data = bytes(data)  # never extend a caller's bytearray in place
        if self._pad80:
            data += b"\x80"
        rem = len(data) & 7
        if rem:
            data += _ZERO_BLOCK[rem:]
        elif not data:
            data = _ZERO_BLOCK
        if len(data) == BLOCK:
            return self._ede(data)
        n = len(data)
        free = self._free
        try:
            update, chain = free.pop()
        except IndexError:
            update, chain = self._new().update, 0
        # struct reads blocks in place (no slice objects) and beats int.from_bytes here.
        out = update(_pack_u64(_unpack_u64(data)[0] ^ chain) + data[BLOCK:-BLOCK])
        chain = _unpack_u64(out, n - 2 * BLOCK)[0]
        free.append((update, chain))
        return self._ede(_pack_u64(chain ^ _unpack_u64(data, n - BLOCK)[0]))

    def verify(self, data: bytes, mac: bytes) -> bool:
        """Constant-time check of a MAC (4-8 bytes, compared on its own length)."""
        if not 4 <= len(mac) <= BLOCK:
            return False
        return hmac.compare_digest(self.compute(data)[: len(mac)], mac)

    def check(self, data: bytes, mac: bytes) -> None:
        """Raise :class:`MacError` unless ``mac`` is the MAC of ``data``."""
        if not self.verify(data, mac):
            raise MacError("MAC does not verify")


class X919Mac(RetailMac):
    """ANSI X9.19 retail MAC: ISO/IEC 9797-1 algorithm 3 with zero padding."""

    __slots__ = ()

    def __init__(self, key: bytes) -> None:
        super().__init__(key, padding=1)


# Sized for a host with many terminals: an evicted MAK costs new cipher contexts
# on that terminal's next message. One-time keys never go in (see one_shot_retail_mac).
@lru_cache(maxsize=4096)
def _cup(mak: bytes) -> CupMac:
    return CupMac(mak)


@lru_cache(maxsize=1024)
def _retail(key: bytes, padding: int) -> RetailMac:
    return RetailMac(key, padding)


def one_shot_retail_mac(key: bytes, data: bytes, padding: int = 2, *,
                        ede: Callable[[bytes], bytes] | None = None) -> bytes:
    """ISO/IEC 9797-1 algorithm 3 under a key used once (an EMV session key).

    Builds exactly two cipher contexts and caches nothing, so per-transaction
    keys do not push long-lived keys (terminal MAKs) out of the caches. ``ede``:
    the TDES-ECB encryption under ``key`` (``update`` of an encryptor), when the
    caller holds one for other uses of the key: then one context is built.
    """
    if len(key) != 16:
        raise CryptoError(f"retail MAC key must be 16 bytes, got {len(key)}")
    if padding not in (1, 2):
        raise CryptoError(f"unsupported ISO 9797-1 padding method {padding}")
    data = bytes(data) + (b"\x80" if padding == 2 else b"")
    rem = len(data) & 7
    if rem or not data:
        data += _ZERO_BLOCK[rem:]
    chain = 0
    if len(data) > BLOCK:
        head = fresh_cbc_encryptor(key[:8]).update(data[:-BLOCK])
        chain = _unpack_u64(head, len(head) - BLOCK)[0]
    last = _pack_u64(chain ^ _unpack_u64(data, len(data) - BLOCK)[0])
    # last block: E_K1(D_K2(E_K1(x))) = two-key TDES of (x_n XOR H_n-1)
    return (ede or fresh_ecb_encryptor(key).update)(last)


def cup_pos_mac(mak: bytes, mab: bytes) -> bytes:
    """CUP POS MAC: the 8 ASCII bytes for F64."""
    return _cup(bytes(mak)).compute(mab)


def retail_mac(key: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with padding method 1 or 2 (8 bytes)."""
    return _retail(bytes(key), padding).compute(data)


def x919_mac(key: bytes, data: bytes) -> bytes:
    """ANSI X9.19 retail MAC (8 bytes) under a 16-byte key."""
    return _retail(bytes(key), 1).compute(data)


__all__ = [
    "CupMac",
    "RetailMac",
    "X919Mac",
    "cup_pos_mac",
    "pad_method1",
    "pad_method2",
    "retail_mac",
    "x919_mac",
    "xor_blocks",
]
