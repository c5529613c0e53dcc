"""The committed vector file matches the shared one and is used as given."""

from __future__ import annotations

import json

import pytest

from tests.iso8583.crypto._vectors import LOCAL, SHARED, vectors


def test_local_copy_has_every_vector_with_a_source() -> None:
    data = vectors()
    for name in ("cup_signon_f62_double_length", "iso9564_format0_clear", "kcv_tdes",
                 "dukpt_x9_24_tdes"):
        assert data[name]["source"]


@pytest.mark.skipif(not SHARED.exists(), reason="no shared/ directory beside the repo")
def test_local_copy_equals_shared_copy() -> None:
    assert json.loads(LOCAL.read_text(encoding="utf-8")) == json.loads(
        SHARED.read_text(encoding="utf-8")
    )
