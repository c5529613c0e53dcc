"""The host's and the simulated terminal's use of the payment crypto, in one place.

Thin wrappers over :mod:`iso8583.crypto` so the rules and the simulated
terminal speak in payments language (``message_mac``, ``pin_matches``,
``arqc_matches``) and a change in the crypto API touches one module.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from iso8583.crypto import emv, mac, pinblock, signon
from iso8583.dialect import Dialect
from iso8583.errors import Iso8583Error
from iso8583.message import Message

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


def message_mac(dialect: Dialect, mak: bytes, message: Message) -> bytes:
    """The F64 value of ``message`` under ``mak`` in the dialect's MAC scheme."""
    return _mac_over(dialect, mak, dialect.mac_block(message))


def _mac_over(dialect: Dialect, mak: bytes, block: bytes) -> bytes:
    if uses_x919(dialect):
        # X9.19 wants a double-length key; a single-length MAK degrades to K||K
        return mac.x919_mac(mak if len(mak) == 16 else mak + mak, block)
    return mac.cup_pos_mac(mak, block)


def uses_x919(dialect: Dialect) -> bool:
    """True when the dialect MACs with ANSI X9.19 instead of the CUP POS MAC."""
    return dialect.settings.mac == "x919"


def apply_mac(dialect: Dialect, mak: bytes, message: Message) -> Message:
    """Set F64 of ``message`` (in place) and return it."""
    message[dialect.spec.mac_field] = message_mac(dialect, mak, message)
    return message


def received_mac_ok(dialect: Dialect, mak: bytes, body: bytes, message: Message) -> bool:
    """True when the MAC of a received body verifies under ``mak``."""
    field = dialect.spec.mac_field
    got = message.get(field)
    if not isinstance(got, bytes):
        return False
    try:
        if max(message.raw_items()) == field:
            block = dialect.received_mac_block(body)  # the bytes as received
        else:  # fields after the MAC field (F90 in iso87): MAC over the re-encoded message
            block = dialect.mac_block(message)
        want = _mac_over(dialect, mak, block)
    except Iso8583Error:
        return False
    return hmac.compare_digest(got, want)


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
