"""The host's and the simulated terminal's use of the payment crypto, in one place.

Thin wrappers over :mod:`iso8583.crypto` so the rules and the simulated
terminal speak in payments language (``pin_matches``, ``arqc_matches``) and a
change in the crypto API touches one module. The message MAC is the protocol
layer's (:mod:`iso8583.crypto.message_mac`), re-exported here for the host.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from emulator.catalogue import TestCard
from iso8583 import tlv
from iso8583.crypto import emv, pinblock, signon
from iso8583.crypto.message_mac import (
    apply_mac,
    apply_mac_encoded,
    mac_function,
    message_mac,
    received_mac_ok,
    uses_x919,
)
from iso8583.errors import Iso8583Error
from iso8583.quickinit import quick_init

WorkingKeys = signon.WorkingKeys

#: F62 forms by 60.3 network code: 001 single-length PIK, 003 double-length PIK,
#: 004 double-length PIK plus a track-data key.
SIGNON_FORMS: Mapping[str, int] = {"001": 1, "003": 3, "004": 4}


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class KeyedHash:
    """HMAC-SHA256 (RFC 2104) under one key, its two padded-key states hashed once.

    A message then costs two hash-state copies and two short hashes: ``hmac.new`` and
    ``hmac.digest`` set the HMAC up again for every message (with OpenSSL 3, a
    digest fetch each time), about twice the work. ``hexdigest(m)`` is
    ``hmac.new(key, m, hashlib.sha256).hexdigest()``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # the SHA-256 block size
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __repr__(self) -> str:
        return "KeyedHash(<key hidden>)"

    def hexdigest(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


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
    """True when tag 9F26 in ``tags`` is the cryptogram of the CVN its 9F10 names.

    Any known CVN whose byte sits where its scheme puts it (the layouts do not
    overlap); :func:`card_arqc_matches` also holds the CVN to the card's scheme.
    """
    arqc = tags.get(0x9F26)
    iad = tags.get(0x9F10)
    if arqc is None or iad is None:
        return False
    return any(emv.verify_cryptogram(p, imk, pan, psn, tags, arqc)
               for p in emv.CVNS.values()
               if len(iad) > p.cvn_offset and iad[p.cvn_offset] == p.cvn)


AC_INPUT_TAGS = emv.AC_INPUT_TAGS


def card_profile(card: TestCard, tags: Mapping[int, bytes]) -> emv.CvnProfile | None:
    """The CVN the card's 9F10 names, among its scheme's; None when there is none.

    The issuer keys cards of a range under one IMK and accepts each CVN of the
    scheme the IAD names (a range reissued from Visa CVN 10 to 18 has both).
    """
    iad = tags.get(0x9F10)
    if iad is None:
        return None
    return emv.profile_for_iad(card.scheme, iad)


def card_arqc_matches(card: TestCard, tags: Mapping[int, bytes]) -> bool:
    """True when tag 9F26 is the cryptogram of the CVN the card's 9F10 names."""
    return _card_arqc_profile(card, tags) is not None


def _card_arqc_profile(card: TestCard, tags: Mapping[int, bytes]) -> emv.CvnProfile | None:
    arqc = tags.get(0x9F26)
    profile = card_profile(card, tags)
    if arqc is None or profile is None or not emv.verify_cryptogram(
            profile, card.imk_ac, card.pan, card.psn, tags, arqc):
        return None
    return profile


@quick_init  # one per chip request: see iso8583.quickinit
@dataclass(frozen=True)
class ArqcCheck:
    """What :func:`check_arqc` found out about the ARQC of a request's F55."""

    tags: Mapping[int, bytes]  # F55 as decoded
    valid: bool  # 9F26 is the cryptogram of a known CVN its 9F10 names (arqc_matches)
    profile: emv.CvnProfile | None  # that CVN when it is of the card's scheme: tag 91 answers by it
    key: emv.CryptogramKey | None = None  # the key it verified under (profile's): tag 91's key


def check_arqc(card: TestCard, tags: Mapping[int, bytes]) -> ArqcCheck:
    """:func:`card_arqc_matches`, else :func:`arqc_matches`, with the CVN tag 91 answers by.

    The host's rules keep the result, so answering the request (:func:`issuer_answer_f55`)
    neither decodes F55 nor verifies the cryptogram a second time.
    """
    arqc = tags.get(0x9F26)
    profile = card_profile(card, tags)
    if arqc is not None and profile is not None:
        key = emv.check_cryptogram(profile, card.imk_ac, card.pan, card.psn, tags, arqc)
        if key is not None:
            return ArqcCheck(tags, True, profile, key)
    return ArqcCheck(tags, arqc_matches(card.imk_ac, card.pan, card.psn, tags), None)


def card_cryptogram(card: TestCard, tags: Mapping[int, bytes]) -> bytes:
    """The cryptogram the card computes over ``tags`` (9F10 included) by its catalogue CVN."""
    return emv.compute_cryptogram(emv.cvn_profile(card.cvn), card.imk_ac, card.pan, card.psn,
                                  tags)


def card_iad(card: TestCard) -> bytes:
    """9F10 of the card's first GENERATE AC answering an ARQC."""
    return emv.build_iad(emv.cvn_profile(card.cvn), emv.ARQC)


def issuer_answer_f55(card: TestCard, f55: object, response_code: str, *,
                      checked: ArqcCheck | None = None) -> bytes | None:
    """F55 of the answer to a chip request: tag 91 by the method of the card's CVN.

    None when the request carried no ARQC that verifies (there is nothing to
    answer a cryptogram with) or the answer is a format/MAC error. ``checked``:
    :func:`check_arqc` of this card over this F55, when the rules ran it already.
    """
    if response_code in ("30", "A0"):
        return None
    if checked is None:
        if not isinstance(f55, bytes):
            return None
        try:
            checked = check_arqc(card, tlv.decode_flat(f55))
        except Iso8583Error:
            return None
    profile, tags = checked.profile, checked.tags
    atc, arqc = tags.get(0x9F36), tags.get(0x9F26)
    if profile is None or atc is None or arqc is None:
        return None
    key = checked.key
    if key is not None and key.profile is profile and key.atc == atc:
        return tlv.encode_tlv(0x91, key.issuer_authentication_data(arqc, response_code))
    data = emv.issuer_authentication_data(profile, card.imk_ac, card.pan, card.psn, atc, arqc,
                                          response_code=response_code)
    return tlv.encode_tlv(0x91, data)


__all__ = [
    "AC_INPUT_TAGS", "SIGNON_FORMS", "ArqcCheck", "KeyedHash", "WorkingKeys", "apply_mac",
    "apply_mac_encoded", "arqc_matches",
    "card_arqc_matches", "card_cryptogram", "card_iad", "card_profile", "check_arqc",
    "compute_arqc", "encrypt_pin",
    "issuer_answer_f55", "mac_function", "message_mac", "new_working_keys", "pin_matches",
    "received_mac_ok",
    "unwrap_keys", "uses_x919", "wrap_keys",
]
