"""The host's keyed hash is HMAC-SHA256, byte for byte."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import example, given
from hypothesis import strategies as st

from emulator.host import core
from emulator.host.core import AcquirerHost
from emulator.host.ledger import MemoryLedgerStore
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


def test_the_host_pan_hash_is_the_keyed_hash_through_its_cache() -> None:
    """AcquirerHost.pan_hash keeps what it worked out (bounded): every answer, first or
    again, before and after the cache is cleared when full, is the HMAC's first half."""
    secret = b"s" * 32
    host = AcquirerHost(store=MemoryLedgerStore(secret=secret))
    pans = [f"62258800{i:08d}" for i in range(core._PAN_HASH_CACHE + 50)]
    for pan in [*pans, *pans[:100], *reversed(pans[-100:])]:
        want = hmac.new(secret, pan.encode(), hashlib.sha256).hexdigest()[:32]
        assert host.pan_hash(pan) == want
    assert len(host._pan_hashes) <= core._PAN_HASH_CACHE
