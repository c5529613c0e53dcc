"""TDES DUKPT (ANSI X9.24-1:2009)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583.crypto import dukpt
from iso8583.crypto.pinblock import decrypt_format0
from iso8583.errors import CryptoError
from tests.iso8583.crypto._vectors import h, vector

V = vector("dukpt_x9_24_tdes")
BDK, KSN0 = h(V["bdk"]), h(V["ksn"])


def test_shared_vector() -> None:
    ipek = dukpt.derive_ipek(BDK, KSN0)
    assert ipek == h(V["ipek"])
    ksn1 = dukpt.next_ksn(KSN0)
    assert ksn1 == h(V["ksn_counter1"])
    txn = dukpt.derive_transaction_key(ipek, ksn1)
    assert txn == h(V["transaction_key_counter1"])
    assert dukpt.pin_key(txn) == h(V["pin_key_counter1"])
    block = dukpt.encrypt_pin_block(ipek, ksn1, V["pin"], V["pan"])
    assert block == h(V["encrypted_pin_block_counter1"])
    assert dukpt.host_pin_key(BDK, ksn1) == h(V["pin_key_counter1"])
    assert decrypt_format0(dukpt.host_pin_key(BDK, ksn1), block, V["pan"]) == V["pin"]


# ANSI X9.24-1:2009 Annex A test data (same BDK/KSN, PIN 1234, PAN
# 4012345678909): encrypted PIN blocks for counters 2-5, current keys for
# counters 2 and 3, and the MAC request key for counter 1.
@pytest.mark.parametrize(
    ("counter", "epb"),
    [(2, "10A01C8D02C69107"), (3, "18DC07B94797B466"), (4, "0BC79509D5645DF7"),
     (5, "5BC0AF22AD87B327")],
)
def test_x9_24_annex_a_pin_blocks(counter: int, epb: str) -> None:
    ipek = dukpt.derive_ipek(BDK, KSN0)
    ksn = dukpt.with_counter(KSN0, counter)
    assert dukpt.encrypt_pin_block(ipek, ksn, "1234", "4012345678909") == h(epb)


def test_x9_24_annex_a_keys() -> None:
    ipek = dukpt.derive_ipek(BDK, KSN0)
    k2 = dukpt.derive_transaction_key(ipek, dukpt.with_counter(KSN0, 2))
    assert k2 == h("C46551CEF9FD24B0AA9AD834130D3BC7")
    k3 = dukpt.derive_transaction_key(ipek, dukpt.with_counter(KSN0, 3))
    assert k3 == h("0DF3D9422ACA56E547676D07AD6BADFA")
    k1 = h(V["transaction_key_counter1"])
    assert dukpt.mac_key(k1) == h("042666B4918430A368DE9628D03984C9")


def test_variants_differ_and_data_key_is_self_encrypted() -> None:
    k1 = h(V["transaction_key_counter1"])
    keys = {dukpt.pin_key(k1), dukpt.mac_key(k1), dukpt.mac_key(k1, response=True),
            dukpt.data_key(k1), dukpt.data_key(k1, response=True)}
    assert len(keys) == 5


@given(st.integers(0, dukpt.COUNTER_MASK))
def test_next_ksn_never_yields_more_than_ten_one_bits(counter: int) -> None:
    ksn = dukpt.with_counter(KSN0, counter)
    try:
        nxt = dukpt.next_ksn(ksn)
    except dukpt.DukptCounterExhausted:
        # 1FF800 (ten one-bits at the top) is the last usable counter.
        assert counter >= 0x1FF800
        return
    c = dukpt.ksn_counter(nxt)
    assert c > counter
    assert c.bit_count() <= dukpt.MAX_ONE_BITS
    assert int.from_bytes(nxt) >> 21 == int.from_bytes(ksn) >> 21
    # Nothing usable was skipped.
    assert all(x.bit_count() > 10 for x in range(counter + 1, min(c, counter + 2048)))


def test_stepping_through_the_top_of_the_counter() -> None:
    ksn = dukpt.with_counter(KSN0, 0x1FF000)
    seen: list[int] = []
    for _ in range(4096):  # bounded: a skipping bug must fail, not hang
        if dukpt.ksn_counter(ksn) >= 0x1FF800:
            break
        ksn = dukpt.next_ksn(ksn)
        seen.append(dukpt.ksn_counter(ksn))
    with pytest.raises(dukpt.DukptCounterExhausted):
        dukpt.next_ksn(ksn)
    assert seen[-1] == 0x1FF800  # the last counter with 10 one-bits
    assert all(c.bit_count() <= 10 for c in seen)


def test_unusable_counters_rejected() -> None:
    ipek = dukpt.derive_ipek(BDK, KSN0)
    with pytest.raises(dukpt.DukptCounterExhausted):
        dukpt.derive_transaction_key(ipek, dukpt.with_counter(KSN0, 0x7FF))  # 11 one-bits
    with pytest.raises(CryptoError):
        dukpt.derive_transaction_key(ipek, KSN0)  # counter 0
    with pytest.raises(dukpt.DukptCounterExhausted):
        dukpt.with_counter(KSN0, dukpt.COUNTER_MASK + 1)
    assert issubclass(dukpt.DukptCounterExhausted, CryptoError)


def test_bad_lengths_rejected() -> None:
    with pytest.raises(CryptoError):
        dukpt.derive_ipek(BDK[:8], KSN0)
    with pytest.raises(CryptoError):
        dukpt.derive_ipek(BDK, KSN0[:9])
    with pytest.raises(CryptoError):
        dukpt.derive_transaction_key(BDK[:8], KSN0)
    with pytest.raises(CryptoError):
        dukpt.pin_key(bytes(8))
