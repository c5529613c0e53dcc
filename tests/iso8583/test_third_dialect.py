"""A third dialect is data only: register a spec, and the codec, framing and printer serve it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iso8583.dialect import DialectSettings, DialectSpec
from iso8583.dialects import get_dialect, names, register
from iso8583.fields import Enc, FieldSpec, Kind, LenType, Sensitive
from iso8583.pretty import format_message

from .strategies import messages

# An ASCII-bitmap host profile with binary LL prefixes and a 4-byte frame length,
# none of which the shipped dialects use.
SPEC = DialectSpec(
    name="test-ascii-bitmap",
    title="Test dialect (ASCII bitmap)",
    fields={f.number: f for f in (
        FieldSpec(2, "PAN", Kind.N, 19, LenType.LL, len_enc=Enc.BINARY, data_enc=Enc.ASCII,
                  sensitive=Sensitive.PAN),
        FieldSpec(4, "Amount", Kind.N, 12, data_enc=Enc.ASCII),
        FieldSpec(11, "STAN", Kind.N, 6),
        FieldSpec(35, "Track 2", Kind.Z, 37, LenType.LL, sensitive=Sensitive.TRACK),
        FieldSpec(48, "Private", Kind.ANS, 300, LenType.LLL, len_enc=Enc.ASCII),
        FieldSpec(70, "Net code", Kind.N, 3, data_enc=Enc.ASCII),
        FieldSpec(127, "Blob", Kind.B, 500, LenType.LLL, len_enc=Enc.BINARY),
    )},
    mti_enc=Enc.ASCII,
    bitmap_enc=Enc.ASCII,
    length_bytes=4,
    settings=DialectSettings(refund_mti="0200", refund_reversible=True,
                             reversal_original_data="f90", card_organisation_field=None,
                             security_control=None, currency="978", mac="x919",
                             f55_tags=(0x9F26, 0x9F27, 0x9F10)),
)
register(SPEC)
THIRD = get_dialect("test-ascii-bitmap")


def test_registered_and_listed() -> None:
    assert "test-ascii-bitmap" in names()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip(data: st.DataObject) -> None:
    message = data.draw(messages(THIRD))
    body = THIRD.encode(message)
    assert THIRD.decode(body) == message
    frame = THIRD.pack(message)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert THIRD.unpack(frame).message == message


def test_settings_are_typed_data() -> None:
    assert THIRD.settings.refund_mti == "0200"
    assert THIRD.settings.security_control is None
    assert THIRD.settings.entry_mode_prefix["contactless"] == "07"
    assert get_dialect("cup").settings.card_organisation_field == 63
    assert get_dialect("iso87").settings.reversal_original_data == "f90"


def test_layout_and_masking() -> None:
    m = THIRD.message("0200", {2: "6225880000000019", 4: 100, 70: "301"})
    body = THIRD.encode(m)
    assert body[:4] == b"0200"
    assert body[4:36].isalnum()  # primary + secondary bitmap as 32 hex characters
    assert "6225880000000019" not in format_message(m, THIRD)
