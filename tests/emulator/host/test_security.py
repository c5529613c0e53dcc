"""The host's keyed hash is HMAC-SHA256, byte for byte."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import example, given
from hypothesis import strategies as st

from emulator.host.security import KeyedHash


@given(key=st.binary(max_size=100), messages=st.lists(st.binary(max_size=300), max_size=4))
@example(key=b"k" * 32, messages=[b""])
@example(key=b"k" * 64, messages=[b"x"])
@example(key=b"k" * 65, messages=[b"x"])
def test_keyed_hash_is_hmac_sha256(key: bytes, messages: list[bytes]) -> None:
    keyed = KeyedHash(key)
    for message in messages:  # one object, many messages: no state carried over
        assert keyed.hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_keyed_hash_hides_its_key() -> None:
    assert "6b6b" not in repr(KeyedHash(b"k" * 32))
