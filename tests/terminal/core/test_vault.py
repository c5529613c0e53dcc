"""The vault: sealed blobs (AES-GCM), the 0600 key file, the keyed PAN hash."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.core.errors import JournalError
from terminal.core.vault import KEY_FILE, Vault

MATERIAL = bytes(range(64))
VAULT = Vault(MATERIAL)
PAN = "6225880000000019"


@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_open_is_the_inverse_of_seal(plain: bytes, context: bytes) -> None:
    sealed = VAULT.seal(plain, context=context)
    assert VAULT.open_sealed(sealed, context=context) == plain
    if len(plain) >= 8:
        assert plain not in sealed


def test_sealing_twice_gives_different_blobs() -> None:
    assert VAULT.seal(b"same", context=b"c") != VAULT.seal(b"same", context=b"c")


@given(st.binary(min_size=1, max_size=256), st.data())
def test_any_flipped_bit_is_detected(plain: bytes, data: st.DataObject) -> None:
    sealed = bytearray(VAULT.seal(plain, context=b"ctx"))
    index = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    sealed[index] ^= 1 << bit
    with pytest.raises(JournalError):
        VAULT.open_sealed(bytes(sealed), context=b"ctx")


def test_wrong_context_wrong_key_and_truncation_are_refused() -> None:
    sealed = VAULT.seal(b"0200 request", context=b"000001:000001:0200")
    with pytest.raises(JournalError, match="integrity"):
        VAULT.open_sealed(sealed, context=b"000001:000002:0200")
    with pytest.raises(JournalError, match="integrity"):
        Vault(bytes(64)).open_sealed(sealed, context=b"000001:000001:0200")
    with pytest.raises(JournalError, match="damaged"):
        VAULT.open_sealed(sealed[:20], context=b"000001:000001:0200")
    with pytest.raises(JournalError, match="damaged"):
        VAULT.open_sealed(b"\x02" + sealed[1:], context=b"000001:000001:0200")
    with pytest.raises(JournalError, match="integrity"):
        VAULT.open_sealed(sealed[:-1], context=b"000001:000001:0200")


def test_key_material_must_be_64_bytes() -> None:
    with pytest.raises(JournalError, match="length"):
        Vault(bytes(32))


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    first = Vault.open(tmp_path / "d")
    path = tmp_path / "d" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 64
    sealed = first.seal(b"advice", context=b"pending")
    again = Vault.open(tmp_path / "d")
    assert again.open_sealed(sealed, context=b"pending") == b"advice"
    assert again.pan_hash(PAN) == first.pan_hash(PAN)


def test_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Vault.open(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o666])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    Vault.open(tmp_path)
    (tmp_path / KEY_FILE).chmod(mode)
    with pytest.raises(JournalError, match="0600") as caught:
        Vault.open(tmp_path)
    assert caught.value.cashier_en == "Key file permissions are wrong"


def test_a_key_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(JournalError, match="length"):
        Vault.open(tmp_path)


@given(st.from_regex(r"\A[0-9]{13,19}\Z"))
def test_pan_hash_is_stable_keyed_and_hides_the_pan(pan: str) -> None:
    digest = VAULT.pan_hash(pan)
    assert digest == VAULT.pan_hash(pan)
    assert digest == Vault(MATERIAL).pan_hash(pan)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest != hashlib.sha256(pan.encode()).hexdigest()
    assert digest != Vault(bytes(64)).pan_hash(pan)
    assert pan not in digest


def test_pan_hash_tells_cards_apart_and_depends_only_on_the_second_key() -> None:
    assert VAULT.pan_hash(PAN) != VAULT.pan_hash("6225880000000027")
    other_aead = bytes(32) + MATERIAL[32:]
    assert Vault(other_aead).pan_hash(PAN) == VAULT.pan_hash(PAN)


def test_two_data_dirs_hash_the_same_pan_differently(tmp_path: Path) -> None:
    assert Vault.open(tmp_path / "a").pan_hash(PAN) != Vault.open(tmp_path / "b").pan_hash(PAN)
