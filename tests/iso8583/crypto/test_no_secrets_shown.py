"""repr/str/exception text of crypto objects never shows key, PIN or PIN block hex."""

from __future__ import annotations

import pytest

from iso8583.crypto import pinblock as pb
from iso8583.crypto.des import DesKey
from iso8583.crypto.mac import CupMac, RetailMac, X919Mac
from iso8583.crypto.signon import WorkingKeys, unwrap_signon_keys
from iso8583.errors import CryptoError

KEY = bytes.fromhex("A1B2C3D4E5F60718293A4B5C6D7E8F90")
PIN = "8642"
PAN = "6225881234560019"


def _texts(obj: object) -> str:
    return f"{obj!r} {obj!s}".upper()


def _secrets() -> list[str]:
    return [KEY.hex().upper(), KEY[:8].hex().upper(), KEY[8:].hex().upper()]


@pytest.mark.parametrize(
    "obj",
    [DesKey(KEY), DesKey(KEY[:8]), CupMac(KEY), CupMac(KEY[:8]),
     RetailMac(KEY), X919Mac(KEY), WorkingKeys(KEY, KEY[:8], KEY)],
    ids=lambda o: type(o).__name__,
)
def test_key_holders_hide_their_keys(obj: object) -> None:
    text = _texts(obj)
    for secret in _secrets():
        assert secret not in text


def test_pin_block_errors_hide_pin_pan_and_block() -> None:
    block = pb.encrypt_format0(KEY, PIN, PAN)
    messages: list[str] = []
    for wrong_pan in ("5544332211009966", "4012345678909"):
        try:
            pb.decrypt_format0(KEY, block, wrong_pan)
        except CryptoError as exc:
            messages.append(str(exc) + repr(exc))
    block4 = pb.encrypt_format4(KEY, PIN, PAN, bytes(8))
    try:
        pb.decrypt_format4(KEY, block4, "5544332211009966")
    except CryptoError as exc:
        messages.append(str(exc) + repr(exc))
    assert messages
    for text in messages:
        for secret in (PIN, PAN, block.hex(), block4.hex(), *_secrets()):
            assert secret.upper() not in text.upper()


def test_signon_errors_hide_keys() -> None:
    f62 = bytes(range(40))
    with pytest.raises(CryptoError) as info:
        unwrap_signon_keys(KEY, f62)
    text = str(info.value).upper()
    for secret in (*_secrets(), f62.hex().upper()):
        assert secret not in text
