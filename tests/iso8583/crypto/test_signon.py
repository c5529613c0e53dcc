"""CUP sign-on F62 working-key unwrap and wrap."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from iso8583.crypto.kcv import tdes_kcv
from iso8583.crypto.signon import (
    FORM_LENGTHS,
    WorkingKeys,
    unwrap_signon_keys,
    wrap_signon_keys,
)
from iso8583.errors import CryptoError, KeyCheckError
from tests.iso8583.crypto._vectors import h, vector

k8 = st.binary(min_size=8, max_size=8)
k16 = st.binary(min_size=16, max_size=16)


def test_double_length_vector() -> None:
    v = vector("cup_signon_f62_double_length")
    tmk, f62 = h(v["tmk"]), h(v["f62"])
    keys = unwrap_signon_keys(tmk, f62)
    assert keys.pik == h(v["pik"])
    assert keys.mak == h(v["mak"])
    assert keys.tdk is None
    assert tdes_kcv(keys.pik, 4) == h(v["pik_check_value"])
    assert tdes_kcv(keys.mak, 4) == h(v["mak_check_value"])
    assert unwrap_signon_keys(tmk, f62, form=3) == keys
    assert wrap_signon_keys(tmk, keys, 3) == f62


@given(k16, k8, k8)
def test_form1_round_trip(tmk: bytes, pik: bytes, mak: bytes) -> None:
    keys = WorkingKeys(pik, mak)
    f62 = wrap_signon_keys(tmk, keys, 1)
    assert len(f62) == 24
    assert unwrap_signon_keys(tmk, f62, form=1) == keys


@given(k16, k16, st.one_of(k8, k16))
def test_form3_round_trip(tmk: bytes, pik: bytes, mak: bytes) -> None:
    keys = WorkingKeys(pik, mak)
    f62 = wrap_signon_keys(tmk, keys, 3)
    assert len(f62) == 40
    assert unwrap_signon_keys(tmk, f62, form=3) == keys


@given(k16, k16, st.one_of(k8, k16), k16)
def test_form4_round_trip(tmk: bytes, pik: bytes, mak: bytes, tdk: bytes) -> None:
    keys = WorkingKeys(pik, mak, tdk)
    f62 = wrap_signon_keys(tmk, keys, 4)
    assert len(f62) == 60
    assert unwrap_signon_keys(tmk, f62, form=4) == keys


@given(st.binary(max_size=120))
def test_other_lengths_rejected(f62: bytes) -> None:
    assume(len(f62) not in FORM_LENGTHS.values())
    with pytest.raises(KeyCheckError, match="length"):
        unwrap_signon_keys(bytes(16), f62)


def test_length_must_match_form() -> None:
    v = vector("cup_signon_f62_double_length")
    with pytest.raises(KeyCheckError, match=r"60\.3"):
        unwrap_signon_keys(h(v["tmk"]), h(v["f62"]), form=4)


@pytest.mark.parametrize(
    ("form", "cv_offsets"),
    [(1, {"PIK": 8, "MAK": 20}), (3, {"PIK": 16, "MAK": 36}),
     (4, {"PIK": 16, "MAK": 36, "TDK": 56})],
)
def test_check_value_mismatch_names_the_key(form: int, cv_offsets: dict[str, int]) -> None:
    tmk = bytes(range(16))
    pik = bytes(range(16, 16 + (8 if form == 1 else 16)))
    keys = WorkingKeys(pik, bytes(range(40, 48)), bytes(range(60, 76)) if form == 4 else None)
    f62 = wrap_signon_keys(tmk, keys, form)
    for name, offset in cv_offsets.items():
        bad = bytearray(f62)
        bad[offset] ^= 0x01
        with pytest.raises(KeyCheckError, match=name) as info:
            unwrap_signon_keys(tmk, bytes(bad))
        assert keys.pik.hex() not in str(info.value).lower()


def test_corrupted_encrypted_key_fails_its_check() -> None:
    v = vector("cup_signon_f62_double_length")
    bad = bytearray(h(v["f62"]))
    bad[3] ^= 0x80  # inside the encrypted PIK
    with pytest.raises(KeyCheckError, match="PIK"):
        unwrap_signon_keys(h(v["tmk"]), bytes(bad))


def test_wrap_rejects_keys_that_do_not_fit_the_form() -> None:
    tmk = bytes(16)
    with pytest.raises(CryptoError):
        wrap_signon_keys(tmk, WorkingKeys(bytes(16), bytes(8)), 1)
    with pytest.raises(CryptoError):
        wrap_signon_keys(tmk, WorkingKeys(bytes(8), bytes(8)), 3)
    with pytest.raises(CryptoError):
        wrap_signon_keys(tmk, WorkingKeys(bytes(16), bytes(8)), 4)
    with pytest.raises(CryptoError):
        wrap_signon_keys(tmk, WorkingKeys(bytes(16), bytes(8)), 2)
    with pytest.raises(CryptoError):
        wrap_signon_keys(bytes(5), WorkingKeys(bytes(16), bytes(8)), 3)


def test_working_keys_validate_lengths() -> None:
    with pytest.raises(CryptoError):
        WorkingKeys(bytes(24), bytes(8))
    with pytest.raises(CryptoError):
        WorkingKeys(bytes(16), bytes(7))
    with pytest.raises(CryptoError):
        WorkingKeys(bytes(16), bytes(8), bytes(8))


def test_working_keys_repr_is_masked() -> None:
    v = vector("cup_signon_f62_double_length")
    keys = unwrap_signon_keys(h(v["tmk"]), h(v["f62"]))
    text = repr(keys) + str(keys)
    assert v["pik"] not in text.upper()
    assert v["mak"] not in text.upper()
    assert "8D0A74" in text  # the PIK's check value is what operators compare
