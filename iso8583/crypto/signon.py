"""CUP sign-on working keys: unwrap (terminal) and wrap (host emulator) the 0810 F62 key block.

Layouts (DESIGN.md section 4; each key TDES-ECB encrypted under the TMK and
followed by a 4-byte check value = first 4 bytes of E_key(00 x 8)):

====  =====  =====================================================
form  bytes  content
====  =====  =====================================================
001   24     PIK8 CV4 MAK8 CV4 (single-DES keys)
003   40     PIK16 CV4 MAK16 CV4
004   60     PIK16 CV4 MAK16 CV4 TDK16 CV4
====  =====  =====================================================

In the 16-byte MAK slot a single-DES MAK is sent as its 8 encrypted bytes
followed by 8 zero bytes (that is how the published 60.3=003 example reads);
a slot whose second half is not zero carries a double-length MAK.
"""

from __future__ import annotations

from dataclasses import dataclass

from iso8583.crypto.des import decrypt_ecb, encrypt_ecb
from iso8583.crypto.kcv import kcv_matches, tdes_kcv
from iso8583.errors import CryptoError, KeyCheckError

#: F60.3 network management code -> F62 length.
FORM_LENGTHS: dict[int, int] = {1: 24, 3: 40, 4: 60}
CV_LEN = 4
_ZERO8 = bytes(8)


def _describe(name: str, key: bytes | None) -> str:
    if key is None:
        return f"{name}=None"
    return f"{name}=<{len(key)} bytes, kcv {tdes_kcv(key).hex().upper()}>"


@dataclass(frozen=True, repr=False)
class WorkingKeys:
    """Clear working keys after sign-on. ``repr`` shows lengths and check values only."""

    pik: bytes
    mak: bytes
    tdk: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.pik) not in (8, 16):
            raise CryptoError(f"PIK must be 8 or 16 bytes, got {len(self.pik)}")
        if len(self.mak) not in (8, 16):
            raise CryptoError(f"MAK must be 8 or 16 bytes, got {len(self.mak)}")
        if self.tdk is not None and len(self.tdk) != 16:
            raise CryptoError(f"TDK must be 16 bytes, got {len(self.tdk)}")

    def __repr__(self) -> str:
        parts = (_describe("pik", self.pik), _describe("mak", self.mak), _describe("tdk", self.tdk))
        return f"WorkingKeys({', '.join(parts)})"

    __str__ = __repr__


def _check_tmk(tmk: bytes) -> None:
    if len(tmk) not in (8, 16, 24):
        raise CryptoError(f"TMK must be 8, 16 or 24 bytes, got {len(tmk)}")


def _unwrap(tmk: bytes, enc: bytes, cv: bytes, name: str, form: int) -> bytes:
    key = decrypt_ecb(tmk, enc)
    if not kcv_matches(key, cv):
        raise KeyCheckError(f"sign-on {name} check value does not match (F62 form {form:03d})")
    return key


def _unwrap_mak_slot(tmk: bytes, slot: bytes, cv: bytes, form: int) -> bytes:
    enc = slot[:8] if slot[8:] == _ZERO8 else slot
    return _unwrap(tmk, enc, cv, "MAK", form)


def unwrap_signon_keys(tmk: bytes, f62: bytes, form: int | None = None) -> WorkingKeys:
    """Decrypt and check the working keys of a sign-on reply's F62.

    ``form`` (the F60.3 code 1, 3 or 4), when given, must agree with the length.
    Raises :class:`KeyCheckError` naming the key whose check value fails, or for
    a length that is not 24, 40 or 60.
    """
    _check_tmk(tmk)
    n = len(f62)
    by_length = {length: code for code, length in FORM_LENGTHS.items()}
    if n not in by_length:
        raise KeyCheckError(f"sign-on F62 length {n} is not 24, 40 or 60")
    code = by_length[n]
    if form is not None and form != code:
        raise KeyCheckError(f"sign-on F62 length {n} does not match F60.3 {form:03d}")
    if code == 1:
        pik = _unwrap(tmk, f62[0:8], f62[8:12], "PIK", code)
        mak = _unwrap(tmk, f62[12:20], f62[20:24], "MAK", code)
        return WorkingKeys(pik, mak)
    pik = _unwrap(tmk, f62[0:16], f62[16:20], "PIK", code)
    mak = _unwrap_mak_slot(tmk, f62[20:36], f62[36:40], code)
    if code == 3:
        return WorkingKeys(pik, mak)
    tdk = _unwrap(tmk, f62[40:56], f62[56:60], "TDK", code)
    return WorkingKeys(pik, mak, tdk)


def encrypted_pik(f62: bytes) -> tuple[bytes, bytes]:
    """The PIK as F62 carries it (still under the TMK) and its check value.

    A PIN pad that holds the TMK as its master key loads exactly these bytes,
    so the clear PIK never leaves the pad. Raises :class:`KeyCheckError` for a
    length that is not 24, 40 or 60.
    """
    if len(f62) == FORM_LENGTHS[1]:
        return f62[0:8], f62[8:12]
    if len(f62) in (FORM_LENGTHS[3], FORM_LENGTHS[4]):
        return f62[0:16], f62[16:20]
    raise KeyCheckError(f"sign-on F62 length {len(f62)} is not 24, 40 or 60")


def _wrap(tmk: bytes, key: bytes) -> bytes:
    return encrypt_ecb(tmk, key) + tdes_kcv(key, CV_LEN)


def wrap_signon_keys(tmk: bytes, keys: WorkingKeys, form: int) -> bytes:
    """Build F62 for a sign-on reply (host side); ``form`` is the F60.3 code 1, 3 or 4."""
    _check_tmk(tmk)
    if form not in FORM_LENGTHS:
        raise CryptoError(f"sign-on form must be 1, 3 or 4, got {form}")
    if form == 1:
        if len(keys.pik) != 8 or len(keys.mak) != 8:
            raise CryptoError("sign-on form 001 carries an 8-byte PIK and an 8-byte MAK")
        return _wrap(tmk, keys.pik) + _wrap(tmk, keys.mak)
    if len(keys.pik) != 16:
        raise CryptoError(f"sign-on form {form:03d} carries a 16-byte PIK")
    mak_slot = encrypt_ecb(tmk, keys.mak)
    if len(keys.mak) == 8:
        mak_slot += _ZERO8
    elif mak_slot[8:] == _ZERO8:
        # Would read back as a single-DES MAK; never happens with a real key.
        raise CryptoError("MAK cannot be sent in this sign-on form")
    body = _wrap(tmk, keys.pik) + mak_slot + tdes_kcv(keys.mak, CV_LEN)
    if form == 3:
        return body
    if keys.tdk is None:
        raise CryptoError("sign-on form 004 carries a TDK")
    return body + _wrap(tmk, keys.tdk)


__all__ = ["FORM_LENGTHS", "WorkingKeys", "encrypted_pik", "unwrap_signon_keys",
           "wrap_signon_keys"]
