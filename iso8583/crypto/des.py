"""DES and triple-DES primitives for payment keys: ECB, zero-IV CBC and CBC-MAC chaining.

All keys are bytes of 8 (single DES), 16 (two-key TDES) or 24 (three-key TDES).
`cryptography` keeps TripleDES in ``hazmat.decrepit`` and warns on 16-byte keys,
so every key is expanded to 24 bytes here (K -> KKK, K1K2 -> K1K2K1): the
warning never fires and single DES runs as EDE with three equal keys.

Building a ``Cipher`` context costs about 8 us, which dominates an 8-byte
encryption, so ECB contexts are cached per key and reused (ECB has no state
between ``update`` calls); the retail MAC keeps long-lived CBC contexts
(:class:`iso8583.crypto.mac.RetailMac`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import lru_cache

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, modes

from iso8583.errors import CryptoError

BLOCK = 8
_ZERO_IV = bytes(BLOCK)
# Mode objects hold no state (CBC: its IV, immutable bytes), so one of each serves every
# context: a new ``modes.CBC`` validates its IV again each time.
_ECB = modes.ECB()
_CBC_ZERO_IV = modes.CBC(_ZERO_IV)


def expand_key(key: bytes) -> bytes:
    """Return the 24-byte EDE form of an 8-, 16- or 24-byte DES key."""
    key = bytes(key)  # bytearray/memoryview in, hashable cache key out
    n = len(key)
    if n == 16:
        return key + key[:8]
    if n == 8:
        return key * 3
    if n == 24:
        return key
    raise CryptoError(f"DES key must be 8, 16 or 24 bytes, got {n}")


def _check_blocks(data: bytes, what: str) -> None:
    if len(data) % BLOCK:
        raise CryptoError(f"{what} must be a multiple of 8 bytes, got {len(data)}")


def ecb_contexts(key: bytes) -> tuple[CipherContext, CipherContext]:
    """Shared (encryptor, decryptor) ECB contexts for ``key``: call ``update`` only."""
    return _ecb_contexts(expand_key(key))


@lru_cache(maxsize=4096)
def _ecb_contexts(key24: bytes) -> tuple[CipherContext, CipherContext]:
    # ECB contexts are never finalised: each update() is independent, so one
    # pair per key serves every call.
    cipher = Cipher(TripleDES(key24), _ECB)
    return cipher.encryptor(), cipher.decryptor()


def cbc_cipher(key: bytes) -> Cipher[modes.CBC]:
    """The zero-IV CBC cipher for ``key`` (8, 16 or 24 bytes), cached and warning-free."""
    return _cbc_cipher(expand_key(key))


@lru_cache(maxsize=1024)
def _cbc_cipher(key24: bytes) -> Cipher[modes.CBC]:
    return Cipher(TripleDES(key24), _CBC_ZERO_IV)


def _cipher_encryptor(algorithm: TripleDES, mode: modes.ECB | modes.CBC) -> CipherContext:
    return Cipher(algorithm, mode).encryptor()


def _context_maker() -> Callable[[TripleDES, modes.ECB | modes.CBC], CipherContext]:
    """What makes the encryptors of keys used once: cryptography's own constructor of the
    context ``Cipher(algorithm, mode).encryptor()`` returns, when it is there and gives
    the same ciphertexts (checked here, once), else that public road.

    ``Cipher`` and ``encryptor`` only check their arguments (ABC isinstance tests), about
    a third of a context's ~40k instructions; our arguments are always TDES in ECB or
    zero-IV CBC. A chip request's ARQC builds two such contexts.
    """
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl
        create = rust_openssl.ciphers.create_encryption_ctx
        key, data = bytes(range(1, 25)), bytes(range(16))
        for mode in (_ECB, _CBC_ZERO_IV):
            if create(TripleDES(key), mode).update(data) != \
                    _cipher_encryptor(TripleDES(key), mode).update(data):
                return _cipher_encryptor
    except (ImportError, AttributeError, TypeError, ValueError):  # another cryptography
        return _cipher_encryptor
    return create


_new_encryptor = _context_maker()


def _bare_triple_des(key24: bytes) -> TripleDES:
    """``TripleDES(key24)`` without the constructor's checks (a Python call of its own and
    three look-ups: ~5k instructions, a sixth of a context): ``key24`` is always the
    24-byte bytes expand_key gives, which they pass unchanged."""
    algorithm = TripleDES.__new__(TripleDES)
    algorithm.key = key24
    return algorithm


def _algorithm_maker() -> Callable[[bytes], TripleDES]:
    """What makes the TripleDES of a key used once: :func:`_bare_triple_des` when this
    cryptography keeps the key as the constructor does and encrypts the same with it
    (checked here, once), else the constructor."""
    try:
        key, data = bytes(range(1, 25)), bytes(range(16))
        made, bare = TripleDES(key), _bare_triple_des(key)
        if vars(made) == vars(bare):
            for mode in (_ECB, _CBC_ZERO_IV):
                if _new_encryptor(bare, mode).update(data) != \
                        _cipher_encryptor(made, mode).update(data):
                    return TripleDES
            return _bare_triple_des
    except (AttributeError, TypeError, ValueError):  # another cryptography
        pass
    return TripleDES


_new_algorithm = _algorithm_maker()


def fresh_ecb_encryptor(key: bytes) -> CipherContext:
    """A new, uncached ECB encryptor: for keys used once (EMV session keys)."""
    return _new_encryptor(_new_algorithm(expand_key(key)), _ECB)


def fresh_cbc_encryptor(key: bytes) -> CipherContext:
    """A new, uncached zero-IV CBC encryptor: for keys used once."""
    return _new_encryptor(_new_algorithm(expand_key(key)), _CBC_ZERO_IV)


def encrypt_ecb(key: bytes, data: bytes) -> bytes:
    """TDES/DES-ECB encrypt whole 8-byte blocks."""
    _check_blocks(data, "ECB input")
    return _ecb_contexts(expand_key(key))[0].update(data)


def decrypt_ecb(key: bytes, data: bytes) -> bytes:
    """TDES/DES-ECB decrypt whole 8-byte blocks."""
    _check_blocks(data, "ECB input")
    return _ecb_contexts(expand_key(key))[1].update(data)


def encrypt_cbc(key: bytes, data: bytes) -> bytes:
    """TDES/DES-CBC encrypt with a zero IV (whole blocks, no padding)."""
    _check_blocks(data, "CBC input")
    ctx = _cbc_cipher(expand_key(key)).encryptor()
    return ctx.update(data) + ctx.finalize()


def decrypt_cbc(key: bytes, data: bytes) -> bytes:
    """TDES/DES-CBC decrypt with a zero IV (whole blocks, no padding)."""
    _check_blocks(data, "CBC input")
    ctx = _cbc_cipher(expand_key(key)).decryptor()
    return ctx.update(data) + ctx.finalize()


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """XOR two byte strings of equal length."""
    if len(a) != len(b):
        raise CryptoError("XOR operands differ in length")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def set_odd_parity(key: bytes) -> bytes:
    """Adjust the low bit of every byte so each byte has odd parity (DES key convention)."""
    return bytes((b & 0xFE) | (1 - (b & 0xFE).bit_count() % 2) for b in key)


def has_odd_parity(key: bytes) -> bool:
    """True when every byte of ``key`` has an odd number of one bits."""
    return all(b.bit_count() & 1 for b in key)


class DesKey:
    """A DES/TDES key that encrypts with cached contexts and never shows its bytes.

    ``repr``/``str`` show the length and the key check value only.
    """

    __slots__ = ("_dec", "_enc", "_key")

    def __init__(self, key: bytes) -> None:
        key24 = expand_key(key)
        self._key = bytes(key)
        self._enc, self._dec = _ecb_contexts(key24)

    @property
    def length(self) -> int:
        """Key length in bytes (8, 16 or 24)."""
        return len(self._key)

    @property
    def kcv(self) -> bytes:
        """Three-byte key check value: E_K(00 x 8)[:3]."""
        return self._enc.update(bytes(BLOCK))[:3]

    def reveal(self) -> bytes:
        """The raw key bytes, for wrapping under another key only."""
        return self._key

    def encrypt_ecb(self, data: bytes) -> bytes:
        """ECB-encrypt whole blocks."""
        _check_blocks(data, "ECB input")
        return self._enc.update(data)

    def decrypt_ecb(self, data: bytes) -> bytes:
        """ECB-decrypt whole blocks."""
        _check_blocks(data, "ECB input")
        return self._dec.update(data)

    def encrypt_cbc(self, data: bytes) -> bytes:
        """CBC-encrypt whole blocks with a zero IV."""
        return encrypt_cbc(self._key, data)

    def decrypt_cbc(self, data: bytes) -> bytes:
        """CBC-decrypt whole blocks with a zero IV."""
        return decrypt_cbc(self._key, data)

    def __repr__(self) -> str:
        return f"DesKey(len={self.length}, kcv={self.kcv.hex().upper()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DesKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self._key)


__all__ = [
    "BLOCK",
    "DesKey",
    "cbc_cipher",
    "decrypt_cbc",
    "decrypt_ecb",
    "ecb_contexts",
    "encrypt_cbc",
    "encrypt_ecb",
    "expand_key",
    "has_odd_parity",
    "set_odd_parity",
    "xor_bytes",
]
