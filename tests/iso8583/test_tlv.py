"""BER-TLV codec for F55 and EMV data: strict decoding, round trips, DOLs, masking."""

from __future__ import annotations

from typing import Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso8583 import tlv
from iso8583.errors import DecodeError, EncodeError, TlvError

h = bytes.fromhex

# -- strategies -------------------------------------------------------------------


def _first_bytes(constructed: bool, multi: bool) -> list[int]:
    out = []
    for b in range(1, 0xFF):
        if bool(b & 0x20) != constructed or ((b & 0x1F) == 0x1F) != multi:
            continue
        out.append(b)
    return out


def tags(constructed: bool) -> st.SearchStrategy[int]:
    single = st.sampled_from(_first_bytes(constructed, multi=False))
    two = st.tuples(st.sampled_from(_first_bytes(constructed, multi=True)),
                    st.integers(0, 0x7F)).map(lambda t: t[0] << 8 | t[1])
    three = st.tuples(st.sampled_from(_first_bytes(constructed, multi=True)),
                      st.integers(0x80, 0xFF), st.integers(0, 0x7F)).map(
        lambda t: t[0] << 16 | t[1] << 8 | t[2])
    return st.one_of(single, two, three)


Node = tuple[int, Union[bytes, list["Node"]]]  # noqa: UP007 - recursive alias needs a runtime Union

leaves: st.SearchStrategy[Node] = st.tuples(
    tags(constructed=False), st.binary(max_size=300) | st.binary(min_size=126, max_size=130)
)
trees: st.SearchStrategy[list[Node]] = st.lists(
    st.recursive(
        leaves,
        lambda kids: st.tuples(tags(constructed=True), st.lists(kids, max_size=4)),
        max_leaves=12,
    ),
    max_size=5,
)


def encode_tree(nodes: list[Node]) -> bytes:
    return tlv.encode(
        (tag, encode_tree(body) if isinstance(body, list) else body) for tag, body in nodes
    )


def matches(decoded: list[tlv.Tlv], nodes: list[Node]) -> bool:
    if len(decoded) != len(nodes):
        return False
    for item, (tag, body) in zip(decoded, nodes, strict=True):
        if item.tag != tag:
            return False
        if isinstance(body, list):
            if not item.constructed or not matches(list(item.children), body):
                return False
        elif item.value != body or item.children:
            return False
    return True


# -- round trips ------------------------------------------------------------------


@given(trees)
def test_encode_decode_round_trip(nodes: list[Node]) -> None:
    data = encode_tree(nodes)
    decoded = tlv.decode(data)
    assert matches(decoded, nodes)
    assert b"".join(item.encode() for item in decoded) == data


@given(trees, st.binary(max_size=3).map(lambda b: bytes(0xFF if x & 1 else 0 for x in b)))
def test_padding_between_objects_is_skipped(nodes: list[Node], pad: bytes) -> None:
    data = b"".join(pad + encode_tree([n]) for n in nodes) + pad
    assert matches(tlv.decode(data), nodes)


@given(st.dictionaries(tags(constructed=False), st.binary(max_size=20), max_size=8))
def test_mapping_encode_and_decode_flat(values: dict[int, bytes]) -> None:
    assert tlv.decode_flat(tlv.encode(values)) == values


def test_decode_flat_descends_and_first_wins() -> None:
    inner = tlv.encode([(0x5A, h("6225881234560019")), (0x9F26, b"\x01" * 8)])
    data = tlv.encode([(0x70, inner), (0x9F26, b"\x02" * 8), (0x77, tlv.encode({0x9F36: b"\0\1"}))])
    assert tlv.decode_flat(data) == {
        0x5A: h("6225881234560019"), 0x9F26: b"\x01" * 8, 0x9F36: b"\0\1",
    }


@pytest.mark.parametrize(
    ("length", "prefix"),
    [(0, "00"), (0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100"),
     (0xFFFF, "82FFFF")],
)
def test_length_forms(length: int, prefix: str) -> None:
    encoded = tlv.encode_tlv(0x9F10, bytes(length))
    assert encoded[2 : 2 + len(prefix) // 2] == h(prefix)
    assert tlv.decode(encoded)[0].value == bytes(length)


def test_non_minimal_long_length_is_accepted() -> None:
    assert tlv.decode(h("9F3681020001"))[0].value == h("0001")


def test_tag_helpers() -> None:
    assert tlv.format_tag(0x9F26) == "9F26"
    assert tlv.format_tag(0x5A) == "5A"
    assert tlv.format_tag(0x9F0B) == "9F0B"
    assert tlv.tag_bytes(0x9F26) == h("9F26")
    assert tlv.tag_bytes(0xDF8101) == h("DF8101")
    assert tlv.is_constructed(0x70)
    assert tlv.is_constructed(0xBF0C)
    assert not tlv.is_constructed(0x9F26)
    assert tlv.TAG_NAMES[0x9F26] == "Application Cryptogram"


@pytest.mark.parametrize("tag", [0, -1, 0x9F, 0x5A26, 0x9F8F, 0xDF80, 0x9F818181FF01])
def test_malformed_tags_cannot_be_encoded(tag: int) -> None:
    with pytest.raises(EncodeError):
        tlv.encode_tlv(tag, b"")


def test_overlong_value_cannot_be_encoded() -> None:
    with pytest.raises(EncodeError):
        tlv.encode_tlv(0x9F10, bytes(0x10000))


# -- strict decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_data", "reason", "field", "pos"),
    [
        ("9F", "tag runs past", "55", 0),
        ("9F26", "length missing", "55.9F26", 2),
        ("9F2680", "indefinite", "55.9F26", 2),
        ("9F2683000001", "length form 83", "55.9F26", 2),
        ("9F2681", "length runs past", "55.9F26", 2),
        ("9F268200", "length runs past", "55.9F26", 2),
        ("9F260501020304", "runs past the end", "55.9F26", 0),
        ("9F36020001" "9F2605", "runs past the end", "55.9F26", 5),
        ("7003" "9F2605", "runs past the end", "55.9F26", 2),
        ("9F818181810101", "longer than 4 bytes", "55", 0),
    ],
)
def test_malformed_input_names_field_and_position(
    hex_data: str, reason: str, field: str, pos: int
) -> None:
    for decode in (tlv.decode, tlv.decode_flat):
        with pytest.raises(TlvError, match=reason) as info:
            decode(h(hex_data))
        assert info.value.field == field
        assert info.value.pos == pos
        assert isinstance(info.value, DecodeError)


def test_context_prefix_is_configurable() -> None:
    with pytest.raises(TlvError) as info:
        tlv.decode(h("9F2680"), context="card")
    assert info.value.field == "card.9F26"


def test_nesting_depth_is_bounded() -> None:
    data = b""
    for _ in range(tlv.MAX_DEPTH + 2):
        data = tlv.encode_tlv(0x70, data) if data else tlv.encode_tlv(0x70, b"\x5a\x00")
    with pytest.raises(TlvError, match="nested"):
        tlv.decode(data)


def _decode_error(data: bytes) -> TlvError | None:
    # Anything but TlvError propagates and fails the test.
    try:
        tlv.decode(data)
        tlv.decode_flat(data)
    except TlvError as exc:
        return exc
    return None


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_tlv_error(data: bytes) -> None:
    err = _decode_error(data)
    assert err is None or 0 <= err.pos <= len(data)


@given(trees, st.data())
def test_mutated_encodings_raise_only_tlv_error(nodes: list[Node], data: st.DataObject) -> None:
    raw = bytearray(encode_tree(nodes))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, len(raw)))
        if op == "flip" and at < len(raw):
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            raw[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif op == "delete" and at < len(raw):
            del raw[at]
        elif op == "truncate":
            del raw[at:]
    err = _decode_error(bytes(raw))
    assert err is None or 0 <= err.pos <= len(raw)


# -- DOLs -------------------------------------------------------------------------------

CDOL1 = h("9F02069F03069F1A0295055F2A029A039C019F37049F4E0A")


def test_decode_dol() -> None:
    assert tlv.decode_dol(CDOL1) == [
        (0x9F02, 6), (0x9F03, 6), (0x9F1A, 2), (0x95, 5), (0x5F2A, 2), (0x9A, 3),
        (0x9C, 1), (0x9F37, 4), (0x9F4E, 10),
    ]


@pytest.mark.parametrize(("hex_data", "pos"), [("9F02", 0), ("9F0206" "9F", 3), ("00", 0)])
def test_decode_dol_rejects(hex_data: str, pos: int) -> None:
    with pytest.raises(TlvError) as info:
        tlv.decode_dol(h(hex_data))
    assert info.value.pos == pos


def test_build_dol_data_padding_rules() -> None:
    dol = [(0x9F02, 6), (0x9F03, 6), (0x9A, 3), (0x9F37, 4), (0x9F4E, 5), (0x5A, 10), (0x70, 2),
           (0x9F1A, 2)]
    values = {
        0x9F02: h("012345"),           # n, short: left pad with zeros
        0x9A: h("20261123"),           # n, long: keep the rightmost bytes
        0x9F37: h("A1B2C3D4E5"),       # b, long: keep the leftmost bytes
        0x9F4E: b"SHOP",               # ans, short: right pad with zeros
        0x5A: h("6225881234560019"),   # cn, short: right pad with FF
        0x70: h("AAAA"),               # constructed: always zeros
        0x9F1A: h("0156"),
    }
    out = tlv.build_dol_data(dol, values)
    assert out == (h("000000012345") + bytes(6) + h("261123") + h("A1B2C3D4") + b"SHOP\x00"
                   + h("6225881234560019FFFF") + bytes(2) + h("0156"))
    assert len(out) == sum(n for _, n in dol)


# -- names and masking --------------------------------------------------------------------


def test_sensitive_values_are_masked() -> None:
    data = tlv.encode([
        (0x70, tlv.encode([(0x5A, h("6225881234560019")),
                           (0x57, h("6225881234560019D30122011234567890")),
                           (0x5F20, b"ZHANG/SAN")])),
        (0x9F26, h("1122334455667788")),
    ])
    decoded = tlv.decode(data)
    shown = "\n".join(tlv.describe(decoded)) + repr(decoded)
    assert "6225881234560019" not in shown
    assert "ZHANG" not in shown
    assert "5A48414E47" not in shown.upper()
    assert "622588******0019" in shown
    assert "1122334455667788" in shown
    assert {0x5A, 0x57, 0x56, 0x9F6B, 0x9F1F, 0x99} <= tlv.SENSITIVE_TAGS


def test_mask_pan() -> None:
    assert tlv.mask_pan("6225881234560019") == "622588******0019"
    assert tlv.mask_pan("12345678") == "******78"  # short numbers keep most digits hidden


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_tlv_error_long_run(data: bytes) -> None:
    err = _decode_error(data)
    assert err is None or 0 <= err.pos <= len(data)


@pytest.mark.slow
@settings(max_examples=5_000, deadline=None)
@given(trees)
def test_encode_decode_round_trip_long_run(nodes: list[Node]) -> None:
    data = encode_tree(nodes)
    assert matches(tlv.decode(data), nodes)


def _tree_or_error(data: bytes) -> dict[int, bytes] | tuple[object, int, str]:
    try:
        tree = tlv.decode(data)
    except TlvError as exc:
        return (exc.field, exc.pos, str(exc))
    expected: dict[int, bytes] = {}
    for item in tlv.iter_primitives(tree):
        expected.setdefault(item.tag, item.value)
    return expected


def _flat_or_error(data: bytes) -> dict[int, bytes] | tuple[object, int, str]:
    try:
        return tlv.decode_flat(data)
    except TlvError as exc:
        return (exc.field, exc.pos, str(exc))


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=200), st.builds(
    tlv.encode, st.lists(st.tuples(
        st.sampled_from([0x9F26, 0x5A, 0x82, 0x9F10, 0x70, 0x77, 0xBF0C]),
        st.binary(max_size=40)), max_size=8))))
def test_decode_flat_agrees_with_the_tree(data: bytes) -> None:
    """The flat fast path and the tree decoder accept, reject and report alike."""
    assert _flat_or_error(data) == _tree_or_error(data)


# -- decode_flat's layouts (data laid out like data seen before is cut, not walked) ---


def _walked(data: bytes) -> dict[int, bytes] | tuple[object, int, str]:
    """decode_flat by the walk alone (no layout), as it was before layouts."""
    flat: dict[int, bytes] = {}
    try:
        tlv._walk_flat(data, 0, "55", 0, flat)
    except TlvError as exc:
        return (exc.field, exc.pos, str(exc))
    return flat


@settings(max_examples=300)
@given(st.one_of(trees.map(encode_tree), st.builds(
    tlv.encode, st.lists(st.tuples(
        st.sampled_from([0x9F26, 0x5A, 0x82, 0x9F10, 0x70, 0x77, 0xBF0C]),
        st.binary(max_size=40)), min_size=2, max_size=8))),
       st.binary(max_size=3).map(lambda b: bytes(0xFF if x & 1 else 0 for x in b)),
       st.data())
def test_decode_flat_by_layout_agrees_with_the_walk(encoded: bytes, pad: bytes,
                                                    data: st.DataObject) -> None:
    """Once a layout is known, data of its length -- new values, or any byte changed
    (a tag, a length, padding) -- decodes, or fails, exactly as the walk decodes it."""
    first = pad + encoded + pad
    tlv._LAYOUTS.clear()
    assert _flat_or_error(first) == _walked(first)  # the walk, its layout kept
    again = bytearray(first)
    for _ in range(data.draw(st.integers(0, 4))):
        if again:
            again[data.draw(st.integers(0, len(again) - 1))] = data.draw(st.integers(0, 255))
    assert _flat_or_error(bytes(again)) == _walked(bytes(again))
    assert _flat_or_error(bytes(again)) == _tree_or_error(bytes(again))


def test_decode_flat_cuts_a_known_layout_and_keeps_no_values() -> None:
    tlv._LAYOUTS.clear()
    one = tlv.encode([(0x9F26, b"\x01" * 8), (0x9F36, b"\x00\x01"), (0x95, bytes(5))])
    two = tlv.encode([(0x9F26, b"\x02" * 8), (0x9F36, b"\x00\x02"), (0x95, b"\x80" * 5)])
    assert tlv.decode_flat(one) == {0x9F26: b"\x01" * 8, 0x9F36: b"\x00\x01", 0x95: bytes(5)}
    assert list(tlv._LAYOUTS) == [len(one)]
    assert tlv.decode_flat(two) == {0x9F26: b"\x02" * 8, 0x9F36: b"\x00\x02", 0x95: b"\x80" * 5}
    assert len(tlv._LAYOUTS[len(one)]) == 1  # the second was cut by the first's layout
    # the same length, another layout (9F36 one byte shorter, 95 one longer): walked, kept
    other = tlv.encode([(0x9F26, b"\x03" * 8), (0x9F36, b"\x03"), (0x95, bytes(6))])
    assert len(other) == len(one)
    assert tlv.decode_flat(other) == {0x9F26: b"\x03" * 8, 0x9F36: b"\x03", 0x95: bytes(6)}
    assert len(tlv._LAYOUTS[len(one)]) == 2


def test_decode_flat_layouts_are_bounded() -> None:
    tlv._LAYOUTS.clear()
    for n in range(3 * tlv._LAYOUTS_MAX):
        data = tlv.encode([(0x9F26, bytes(8)), (0x9F10, bytes(n % 200))])
        assert tlv.decode_flat(data) == {0x9F26: bytes(8), 0x9F10: bytes(n % 200)}
        assert sum(map(len, tlv._LAYOUTS.values())) <= tlv._LAYOUTS_MAX


@given(st.one_of(tags(constructed=False), tags(constructed=True),
                 st.integers(-2, 1 << 40)))
def test_tag_bytes_kept_are_the_tags_encoding(tag: int) -> None:
    """tag_bytes keeps what it encoded: again, the same bytes (or the same refusal)."""
    def outcome() -> bytes | str:
        try:
            return tlv.tag_bytes(tag)
        except EncodeError as exc:
            return str(exc)
    first = outcome()
    assert outcome() == first
    try:
        fresh: bytes | str = tlv._tag_bytes(tag)
    except EncodeError as exc:
        fresh = str(exc)
    assert first == fresh
