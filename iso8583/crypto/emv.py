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

That generic profile stays for callers that name no scheme. Real cards compute
the cryptogram their *cryptogram version number* (CVN) defines; the second half
of this module holds one :class:`CvnProfile` per CVN a test card can claim
(see :data:`CVNS` for the sources of each) and the functions card and host
share: :func:`build_iad`, :func:`compute_cryptogram`,
:func:`verify_cryptogram`, :func:`issuer_authentication_data` (tag 91 for the
host's answer) and :func:`check_issuer_authentication` (the card's side).
"""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from iso8583.crypto.des import (
    ecb_contexts,
    encrypt_ecb,
    fresh_ecb_encryptor,
    set_odd_parity,
    xor_bytes,
)
from iso8583.crypto.mac import one_shot_retail_mac
from iso8583.errors import CryptoError

AC_INPUT_TAGS: tuple[int, ...] = (
    0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82, 0x9F36,
)
_AMOUNT_OTHER_DEFAULT = bytes(6)
_AC_VALUES = operator.itemgetter(*AC_INPUT_TAGS)


def _check_key16(key: bytes, name: str) -> None:
    if len(key) != 16:
        raise CryptoError(f"{name} must be 16 bytes, got {len(key)}")


def derive_icc_master_key(imk: bytes, pan: str, psn: str) -> bytes:
    """ICC master key from the issuer master key (EMV Book 2 A1.4.1 option A)."""
    return _icc_master_key(bytes(imk), pan, psn)


# A pure function the host runs for every chip request of the same few cards: two
# ECB encryptions and a parity pass (~25 us) saved per call. Bounded; nothing logged.
@lru_cache(maxsize=4096)
def _icc_master_key(imk: bytes, pan: str, psn: str) -> bytes:
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
    # left and right halves: two ECB blocks, encrypted in one call
    return encrypt_ecb(icc_mk, atc + b"\xf0" + bytes(5) + atc + b"\x0f" + bytes(5))


def ac_input(tags: Mapping[int, bytes]) -> bytes:
    """The cryptogram input: values of :data:`AC_INPUT_TAGS` in order (9F03 defaults to zeros)."""
    try:  # every tag there (a chip request's F55): one C call, not a loop of ten look-ups
        return b"".join(_AC_VALUES(tags))
    except (KeyError, TypeError):
        pass  # 9F03 left out, a tag missing or not bytes: the loop says which
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
    # a fresh context: a session key is used once and must not evict cached MAK contexts
    return fresh_ecb_encryptor(icc_mk_or_session_key).update(xor_bytes(arqc, arc + bytes(6)))


__all__ = [
    "AAC",
    "AC_INPUT_TAGS",
    "ARQC",
    "CVNS",
    "TC",
    "CryptogramKey",
    "CvnProfile",
    "IssuerAuthentication",
    "ac_input",
    "build_iad",
    "check_cryptogram",
    "check_issuer_authentication",
    "compute_arpc_method1",
    "compute_arqc",
    "compute_cryptogram",
    "cryptogram_input",
    "cvn_profile",
    "derive_icc_master_key",
    "derive_icc_master_key_b",
    "derive_session_key",
    "generate_ac",
    "iad_cvr",
    "issuer_authentication_data",
    "profile_for_iad",
    "verify_arqc",
    "verify_cryptogram",
]


# --- cryptogram version numbers ------------------------------------------------------
#
# Sources (public; no code copied):
# * EMV 4.3 Book 2 Annex A1.2 (MAC algorithm 3, padding methods 1 and 2), A1.3.1
#   (common session key), A1.4.1/A1.4.2 (master key options A and B), 8.2.1/8.2.2
#   (ARPC methods 1 and 2).
# * pyemv (github.com/knovichikhin/pyemv) pyemv/cvn.py docstrings and
#   tests/test_cvn_hsm.py: Visa CVN 10 (option A, no session key, Visa padding,
#   CVR in the input, ARPC method 1 under the ICC master key), Visa CVN 18 (option B,
#   common session key, whole 9F10 in the input, ARPC method 2), Mastercard CVN 20
#   (option A, common session key, the 6-byte CVR in the input, ARPC method 1 under
#   the session key). Their known answers are in tests/iso8583/crypto/test_cvn.py.
# * UnionPay CVN 01 (PBOC 2.0 / UICS, JR/T 0025.5 Annex B): option A, the PBOC
#   session key E_MK(00 x 6 || ATC) || E_MK(00 x 6 || ATC XOR FFFF), padding
#   method 2, the 4-byte CVR (9F10 bytes 4-7) after the ten tags, ARPC method 1
#   under the session key with the ASCII response code. Checked against the worked
#   example published at https://553668.com/manong/959163.html ("金融IC卡 ARQC和ARPC
#   计算方法和实例"), kept as a known answer in test_cvn.py.

CvnKey = Literal["cup-01", "visa-10", "visa-18", "mc-20"]

#: Cryptogram types as the CID (9F27) and GENERATE AC P1 code them.
AAC, TC, ARQC = 0x00, 0x40, 0x80


@dataclass(frozen=True)
class CvnProfile:
    """How one cryptogram version computes, lays out and answers a cryptogram."""

    key: CvnKey
    scheme: str  # card organisation as in F63 / the catalogue (CUP, VIS, MCC)
    cvn: int  # the byte the card writes in 9F10
    master_key: Literal["A", "B"]
    session_key: Literal["none", "common", "pboc"]
    padding: Literal[1, 2]  # ISO/IEC 9797-1 padding method of the cryptogram MAC
    mac_tail: Literal["cvr4", "cvr6", "iad"]  # what of 9F10 follows the ten tags
    arpc_method: Literal[1, 2]
    #: how the terminal hands tag 91 to the card: EXTERNAL AUTHENTICATE before
    #: the second GENERATE AC, or inside the second GENERATE AC's CDOL2 data
    issuer_auth: Literal["external_authenticate", "cdol2"]

    @property
    def cvn_offset(self) -> int:
        """Index of the CVN byte in 9F10 (Visa/UnionPay byte 3, Mastercard byte 2)."""
        return 1 if self.scheme == "MCC" else 2

    @property
    def tag91_length(self) -> int:
        """Method 1: ARPC(8) || ARC(2); method 2: ARPC(4) || CSU(4)."""
        return 10 if self.arpc_method == 1 else 8


CVNS: Mapping[str, CvnProfile] = {
    p.key: p for p in (
        CvnProfile("cup-01", "CUP", 0x01, "A", "pboc", 2, "cvr4", 1, "external_authenticate"),
        CvnProfile("visa-10", "VIS", 0x0A, "A", "none", 1, "cvr4", 1, "external_authenticate"),
        CvnProfile("visa-18", "VIS", 0x12, "B", "common", 2, "iad", 2, "cdol2"),
        CvnProfile("mc-20", "MCC", 0x14, "A", "common", 2, "cvr6", 1, "cdol2"),
    )
}


def cvn_profile(key: str) -> CvnProfile:
    """The profile called ``key``; :class:`CryptoError` names the known ones."""
    try:
        return CVNS[key]
    except KeyError:
        raise CryptoError(f"unknown CVN profile {key!r}; known: {', '.join(CVNS)}") from None


#: Each scheme's profiles (in CVNS order) with where their CVN byte sits and its value:
#: profile_for_iad runs for every chip request.
_BY_SCHEME: dict[str, tuple[tuple[int, int, CvnProfile], ...]] = {}
for _profile in CVNS.values():
    _BY_SCHEME[_profile.scheme] = (*_BY_SCHEME.get(_profile.scheme, ()),
                                   (_profile.cvn_offset, _profile.cvn, _profile))


def profile_for_iad(scheme: str, iad: bytes) -> CvnProfile | None:
    """The profile of ``scheme`` whose CVN the issuer application data names."""
    for offset, cvn, profile in _BY_SCHEME.get(scheme, ()):
        if len(iad) > offset and iad[offset] == cvn:
            return profile
    return None


def _cvr_type_bits(first: int, second: int | None) -> int:
    """CVR byte: bits 8-7 second AC (00 AAC, 01 TC, 10 not requested), 6-5 first AC
    (00 AAC, 01 TC, 10 ARQC). Same bits in the Visa/UnionPay CVR byte 2 and the
    Mastercard CVR byte 1 (pyemv's examples A0: first ARQC, second not requested)."""
    code = {AAC: 0b00, TC: 0b01, ARQC: 0b10}
    second_bits = 0b10 if second is None else code[second]
    return second_bits << 6 | code[first] << 4


def build_iad(profile: CvnProfile, first: int, second: int | None = None, *,
              dki: int = 0x01) -> bytes:
    """Issuer application data (9F10) a card of this CVN returns.

    UnionPay: 07 DKI CVN CVR(03 xx 00 00) 01 (3DES) + 0A 01 and 9 bytes of issuer
    discretionary data; Visa CVN 10/18: 06 DKI CVN CVR(03 xx 00 00); Mastercard
    CVN 20: DKI CVN CVR(6) DAC(2) counters(8, ending FF).
    """
    bits = _cvr_type_bits(first, second)
    if profile.scheme == "MCC":
        return (bytes([dki, profile.cvn, bits]) + bytes(5) + bytes(2)
                + bytes(7) + b"\xff")
    cvr = bytes([0x03, bits, 0x00, 0x00])
    if profile.scheme == "CUP":
        return bytes([0x07, dki, profile.cvn]) + cvr + b"\x01" + b"\x0a\x01" + bytes(9)
    return bytes([0x06, dki, profile.cvn]) + cvr


def iad_cvr(profile: CvnProfile, iad: bytes) -> bytes:
    """The part of 9F10 this CVN puts after the ten tags in the cryptogram input."""
    if profile.mac_tail == "iad":
        return iad
    start, length = (2, 6) if profile.mac_tail == "cvr6" else (3, 4)
    if len(iad) < start + length:
        raise CryptoError(f"issuer application data too short for {profile.key}")
    return iad[start:start + length]


def derive_icc_master_key_b(imk: bytes, pan: str, psn: str) -> bytes:
    """ICC master key option B (EMV Book 2 A1.4.2); PANs of 16 digits or fewer use option A.

    Longer PANs: SHA-1 over PAN || PSN (a 0 nibble in front when odd), decimalised
    (the decimal digits of the hash in order, then its letters A-F as 0-5) to 16
    digits, which then go through option A. No public vector with a PAN over 16
    digits is checked here.
    """
    if len(pan) <= 16:
        return derive_icc_master_key(imk, pan, psn)
    derive_icc_master_key(imk, pan, psn)  # the same argument checks
    digits = pan + psn
    if len(digits) % 2:
        digits = "0" + digits
    text = hashlib.sha1(bytes.fromhex(digits), usedforsecurity=False).hexdigest().upper()
    decimal = [c for c in text if c.isdigit()]
    decimal += [str("ABCDEF".index(c)) for c in text if not c.isdigit()]
    z = "".join(decimal[:16])
    return derive_icc_master_key(imk, z[:14], z[14:])


# The ICC master key (option A or B) and its ECB encryption, per card: a pure function of
# the card the host runs for every chip request of the same few cards (option B's SHA-1
# and the session key's layers of checks and cache look-ups saved). Bounded; nothing logged.
@lru_cache(maxsize=4096)
def _master_ecb(option: str, imk: bytes, pan: str, psn: str
                ) -> tuple[bytes, Callable[[bytes], bytes]]:
    icc_mk = derive_icc_master_key_b(imk, pan, psn) if option == "B" else \
        derive_icc_master_key(imk, pan, psn)
    return icc_mk, ecb_contexts(icc_mk)[0].update


_SIX_ZEROS = bytes(6)
_COMMON_LEFT = b"\xf0" + bytes(5)
_COMMON_RIGHT = b"\x0f" + bytes(5)


def _session_key(profile: CvnProfile, imk: bytes, pan: str, psn: str, atc: bytes) -> bytes:
    """The key of one cryptogram: the CVN's session key of the card's ICC master key."""
    icc_mk, encrypt = _master_ecb(profile.master_key, bytes(imk), pan, psn)
    if len(atc) != 2:
        raise CryptoError(f"ATC must be 2 bytes, got {len(atc)}")
    if profile.session_key == "none":
        return icc_mk
    if profile.session_key == "common":  # derive_session_key: two blocks, one call
        return encrypt(atc + _COMMON_LEFT + atc + _COMMON_RIGHT)
    # PBOC / UICS: the ATC and its complement, each left-padded with six 00 bytes (two
    # ECB blocks, encrypted in one call)
    return encrypt(_SIX_ZEROS + atc + _SIX_ZEROS + bytes((atc[0] ^ 0xFF, atc[1] ^ 0xFF)))


def cryptogram_input(profile: CvnProfile, tags: Mapping[int, bytes]) -> bytes:
    """The ten tags of :data:`AC_INPUT_TAGS` followed by this CVN's part of 9F10."""
    iad = tags.get(0x9F10)
    if iad is None:
        raise CryptoError("cryptogram input tag 9F10 is missing")
    return ac_input(tags) + iad_cvr(profile, iad)


class CryptogramKey:
    """The key of one cryptogram (one card, one ATC) under a CVN, derived once.

    The issuer uses it twice -- checking the ARQC, then computing the ARPC that
    answers it -- so the session key is derived and its TDES context built once
    for both (a context costs as much as the whole MAC). Not cached anywhere: it
    is dropped with the request.
    """

    __slots__ = ("_ede", "atc", "key", "profile")

    def __init__(self, profile: CvnProfile, imk: bytes, pan: str, psn: str,
                 atc: bytes) -> None:
        self.profile = profile
        self.atc = atc
        self.key = _session_key(profile, imk, pan, psn, atc)
        self._ede: Callable[[bytes], bytes] | None = None

    def __repr__(self) -> str:
        return f"CryptogramKey({self.profile.key}, <key hidden>)"

    def _encrypt(self) -> Callable[[bytes], bytes]:
        """TDES-ECB under the key (a fresh context, built on first use)."""
        if self._ede is None:
            self._ede = fresh_ecb_encryptor(self.key).update
        return self._ede

    def cryptogram(self, tags: Mapping[int, bytes]) -> bytes:
        """:func:`compute_cryptogram` under this key."""
        return one_shot_retail_mac(self.key, cryptogram_input(self.profile, tags),
                                   padding=self.profile.padding, ede=self._encrypt())

    def issuer_authentication_data(self, arqc: bytes, response_code: str) -> bytes:
        """:func:`issuer_authentication_data` under this key."""
        detail = _arpc_detail(self.profile, arqc, response_code)
        if self.profile.arpc_method == 1:
            _check_key16(self.key, "ARPC key")
            return self._encrypt()(xor_bytes(arqc, detail + bytes(6))) + detail
        return one_shot_retail_mac(self.key, arqc + detail, padding=2,
                                   ede=self._encrypt())[:4] + detail


def compute_cryptogram(profile: CvnProfile, imk: bytes, pan: str, psn: str,
                       tags: Mapping[int, bytes]) -> bytes:
    """ARQC/TC/AAC of a card with this CVN over ``tags`` (ATC from 9F36, IAD from 9F10)."""
    return CryptogramKey(profile, imk, pan, psn, _atc(tags)).cryptogram(tags)


def check_cryptogram(profile: CvnProfile, imk: bytes, pan: str, psn: str,
                     tags: Mapping[int, bytes], cryptogram: bytes) -> CryptogramKey | None:
    """:func:`verify_cryptogram` keeping the key for the answer: None when it does not verify."""
    try:
        key = CryptogramKey(profile, imk, pan, psn, _atc(tags))
        expected = key.cryptogram(tags)
    except CryptoError:
        return None
    return key if hmac.compare_digest(expected, cryptogram) else None


def verify_cryptogram(profile: CvnProfile, imk: bytes, pan: str, psn: str,
                      tags: Mapping[int, bytes], cryptogram: bytes) -> bool:
    """Constant-time check of a received cryptogram; False for malformed input."""
    try:
        expected = compute_cryptogram(profile, imk, pan, psn, tags)
    except CryptoError:
        return False
    return hmac.compare_digest(expected, cryptogram)


#: Card status update (ARPC method 2), byte 2 bit 8 "issuer approves online
#: transaction" (EMV Common Core Definitions CSU layout *(verify)*).
CSU_APPROVED = bytes.fromhex("00800000")
CSU_DECLINED = bytes(4)


def _arpc_key(profile: CvnProfile, imk: bytes, pan: str, psn: str, atc: bytes) -> bytes:
    return _session_key(profile, imk, pan, psn, atc)


def _arpc(profile: CvnProfile, key: bytes, arqc: bytes, detail: bytes) -> bytes:
    if profile.arpc_method == 1:
        return compute_arpc_method1(key, arqc, detail)
    # method 2: MAC algorithm 3, padding 2, over ARQC || CSU, leftmost 4 bytes
    return one_shot_retail_mac(key, arqc + detail, padding=2)[:4]


def issuer_authentication_data(profile: CvnProfile, imk: bytes, pan: str, psn: str,
                               atc: bytes, arqc: bytes, *, response_code: str) -> bytes:
    """Tag 91 of the host's answer: ARPC || ARC (method 1) or ARPC || CSU (method 2).

    ``response_code`` is the two-character F39; method 1 carries it as the ARC
    (ASCII, as 8A), method 2 turns it into the CSU's approve bit.
    """
    detail = _arpc_detail(profile, arqc, response_code)
    key = _arpc_key(profile, imk, pan, psn, atc)
    return _arpc(profile, key, arqc, detail) + detail


def _arpc_detail(profile: CvnProfile, arqc: bytes, response_code: str) -> bytes:
    """Method 1: the ARC (F39 in ASCII); method 2: the CSU."""
    if len(arqc) != 8:
        raise CryptoError(f"ARQC must be 8 bytes, got {len(arqc)}")
    if profile.arpc_method == 1:
        detail = response_code.encode("ascii")
        if len(detail) != 2:
            raise CryptoError("response code must be 2 characters")
        return detail
    return CSU_APPROVED if response_code == "00" else CSU_DECLINED


@dataclass(frozen=True)
class IssuerAuthentication:
    """What a card concludes from tag 91."""

    authentic: bool  # the ARPC is the issuer's
    approved: bool  # ...and the issuer approved (ARC 00 / CSU approve bit)


def check_issuer_authentication(profile: CvnProfile, imk: bytes, pan: str, psn: str,
                                atc: bytes, arqc: bytes, data: bytes) -> IssuerAuthentication:
    """The card's check of issuer authentication data against its own ARQC."""
    if len(data) != profile.tag91_length or len(arqc) != 8:
        return IssuerAuthentication(False, False)
    split = 8 if profile.arpc_method == 1 else 4
    arpc, detail = data[:split], data[split:]
    key = _arpc_key(profile, imk, pan, psn, atc)
    authentic = hmac.compare_digest(_arpc(profile, key, arqc, detail), arpc)
    approved = detail == b"00" if profile.arpc_method == 1 else bool(detail[1] & 0x80)
    return IssuerAuthentication(authentic, authentic and approved)
