"""The host's and the simulated terminal's use of the payment crypto, in one place.

Thin wrappers over :mod:`iso8583.crypto` so the rules and the simulated
terminal speak in payments language (``pin_matches``, ``arqc_matches``) and a
change in the crypto API touches one module. The message MAC is the protocol
layer's (:mod:`iso8583.crypto.message_mac`), re-exported here for the host.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from iso8583.crypto import emv, pinblock, signon
from iso8583.crypto.message_mac import apply_mac, message_mac, received_mac_ok, uses_x919
from iso8583.errors import Iso8583Error

WorkingKeys = signon.WorkingKeys

#: F62 forms by 60.3 network code: 001 single-length PIK, 003 double-length PIK,
#: 004 double-length PIK plus a track-data key.
SIGNON_FORMS: Mapping[str, int] = {"001": 1, "003": 3, "004": 4}


def _odd_parity(key: bytes) -> bytes:
    """DES keys with odd parity per byte, as a key generator would produce them."""
    out = bytearray()
    for byte in key:
        high = byte & 0xFE
        out.append(high | (0 if bin(high).count("1") % 2 else 1))
    return bytes(out)


def new_working_keys(random_bytes: Callable[[int], bytes], form: int,
                     *, double_mak: bool = False) -> WorkingKeys:
    """Fresh PIK, MAK (and TDK for form 4) drawn from ``random_bytes``.

    The MAK is single-length (the CUP POS MAC is single DES) unless
    ``double_mak`` asks for an X9.19 key, which forms 003/004 can carry.
    """
    pik = _odd_parity(random_bytes(8 if form == 1 else 16))
    mak = _odd_parity(random_bytes(16 if double_mak and form != 1 else 8))
    tdk = _odd_parity(random_bytes(16)) if form == 4 else None
    return WorkingKeys(pik, mak, tdk)


def wrap_keys(tmk: bytes, keys: WorkingKeys, form: int) -> bytes:
    """F62 of a sign-on answer: the working keys under the TMK with check values."""
    return signon.wrap_signon_keys(tmk, keys, form)


def unwrap_keys(tmk: bytes, f62: bytes) -> WorkingKeys:
    """Working keys from an F62; raises :class:`iso8583.errors.KeyCheckError` on a bad value."""
    return signon.unwrap_signon_keys(tmk, f62)


def encrypt_pin(pik: bytes, pin: str, pan: str) -> bytes:
    """An ISO 9564 format 0 PIN block under the PIK (F52)."""
    return pinblock.encrypt_format0(pik, pin, pan)


def pin_matches(pik: bytes, block: bytes, pan: str, pin: str) -> bool:
    """True when the encrypted format 0 PIN block holds ``pin`` for ``pan``."""
    try:
        clear = pinblock.decrypt_format0(pik, block, pan)
    except Iso8583Error:
        return False
    return hmac.compare_digest(clear.encode(), pin.encode())


def compute_arqc(imk: bytes, pan: str, psn: str, tags: Mapping[int, bytes]) -> bytes:
    """The ARQC a card with issuer key ``imk`` computes over ``tags``."""
    return emv.compute_arqc(imk, pan, psn, tags)


def arqc_matches(imk: bytes, pan: str, psn: str, tags: Mapping[int, bytes]) -> bool:
    """True when tag 9F26 in ``tags`` is the right ARQC for the card."""
    arqc = tags.get(0x9F26)
    if arqc is None:
        return False
    try:
        return emv.verify_arqc(imk, pan, psn, tags, arqc)
    except Iso8583Error:
        return False


AC_INPUT_TAGS = emv.AC_INPUT_TAGS


__all__ = [
    "AC_INPUT_TAGS", "SIGNON_FORMS", "WorkingKeys", "apply_mac", "arqc_matches", "compute_arqc",
    "encrypt_pin", "message_mac", "new_working_keys", "pin_matches", "received_mac_ok",
    "unwrap_keys", "uses_x919", "wrap_keys",
]
