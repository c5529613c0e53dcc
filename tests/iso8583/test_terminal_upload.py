"""Batch upload (批上送) messages: CUP F48 lists of non-chip items, chip items with F55,
refunds as advices, the end marker; items survive pack -> encode -> decode -> parse."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583 import composite, tlv
from iso8583.dialect import BatchUploadProfile
from iso8583.dialects import get_dialect
from iso8583.errors import DecodeError, EncodeError
from iso8583.message import Message
from iso8583.terminal import (
    RequestContext,
    TerminalProtocol,
    UploadChunk,
    UploadItem,
    parse_upload_counts,
    plan_upload,
    upload_icc_data,
    upload_way,
)

CUP = get_dialect("cup")
ISO87 = get_dialect("iso87")
PROFILE = CUP.settings.batch_upload
CTX = RequestContext(stan="000123", batch="000003", now=datetime(2026, 11, 23, 18, 0, 0))
PAN = "6225880000000019"
ICC = tlv.encode([(0x9F26, bytes(8)), (0x9F27, b"\x80"), (0x9F36, b"\x00\x01")])


def proto() -> TerminalProtocol:
    return TerminalProtocol(CUP, "10000001", "123456789012345")


def stripe(stan: str, amount: int = 1_000, scheme: str = "CUP") -> UploadItem:
    return UploadItem("sale", PAN, amount, "000003", stan, "1123", None, None, scheme=scheme)


def net_code(msg: Message) -> str:
    return composite.F60.decode(str(msg[60])).net_code


def roundtrip(msg: Message) -> Message:
    return CUP.decode(CUP.encode(msg))


def test_the_cup_profile_is_dialect_data() -> None:
    assert BatchUploadProfile() == PROFILE
    assert ISO87.settings.batch_upload is None
    rows = CUP.transactions
    assert [rows[k].net_code for k in (PROFILE.list_kind, PROFILE.chip_kind, PROFILE.end_kind)] \
        == ["201", "203", "202"]
    # F48 n...322 holds the count and 8 items of 40 digits: the cap comes from the field
    assert CUP.fields[48].max_len == 2 + composite.UPLOAD_ITEMS_MAX * composite.UPLOAD_ITEM_DIGITS


def test_non_chip_items_go_eight_per_message_in_f48() -> None:
    items = [stripe(f"{i:06d}", 100 * i, "CUP" if i % 2 else "VIS") for i in range(1, 11)]
    chunks = plan_upload(PROFILE, items)
    assert [(c.way, len(c.items)) for c in chunks] == [("list", 8), ("list", 2)]
    msg = roundtrip(proto().upload(CTX, chunks[0]))
    assert (msg.mti, net_code(msg), msg[11]) == ("0320", "201", "000123")
    assert 2 not in msg
    assert 4 not in msg
    assert 61 not in msg
    text = str(msg[48])
    assert text[:2] == "08"
    assert len(text) == 2 + 8 * 40
    first = text[2:42]
    assert first == "00" + "000001" + PAN.rjust(20, "0") + "000000000100"  # CUP: 00
    entries = composite.F48UploadList.decode(text).entries
    assert [(e.organisation, e.stan, e.pan, e.amount) for e in entries[:2]] == [
        ("00", "000001", PAN, 100), ("01", "000002", PAN, 200)]


def test_chip_items_go_alone_with_f55_and_refunds_as_advices() -> None:
    chip = UploadItem("sale", PAN, 12_300, "000003", "000007", "1123", "000000000042",
                      "000042", ICC, scheme="CUP", entry_mode="051", card_seq="1")
    refund = UploadItem("refund", PAN, 5_000, "000003", "000008", "1123", "000000000043",
                        "000043", scheme="CUP")
    chunks = plan_upload(PROFILE, [chip, stripe("000001"), refund])
    assert [c.way for c in chunks] == ["list", "advice", "chip"]
    icc = roundtrip(proto().upload(CTX, chunks[2]))
    assert (net_code(icc), icc[2], icc.amount, icc[22], icc[23]) == \
        ("203", PAN, 12_300, "051", "001")
    assert (icc[55], icc[37], icc[38], icc[61]) == (ICC, "000000000042", "000042",
                                                   "000003000007" + "1123")
    advice = roundtrip(proto().upload(CTX, chunks[1]))
    assert (net_code(advice), advice[3], advice.amount, advice[63]) == \
        ("201", "200000", 5_000, "CUP")
    assert 55 not in advice
    assert 48 not in advice


def test_a_chip_item_of_a_dialect_without_a_list_form_goes_alone() -> None:
    assert upload_way(None, stripe("000001")) == "advice"
    assert upload_way(PROFILE, stripe("000001")) == "list"
    with pytest.raises(ValueError, match="one item"):
        proto().upload(CTX, UploadChunk("chip", (stripe("000001"), stripe("000002"))))


def test_the_end_carries_the_count_and_its_answer_what_the_host_holds() -> None:
    p = proto()
    end = p.batch_upload_end(CTX, 12)
    assert (net_code(end), end[48]) == ("202", "0012")
    answer = CUP.message("0330", {11: "000123", 39: "00", 41: "10000001", 48: "00120011",
                                  60: end[60]})
    mak = bytes(16)  # 0320/0330 are MACed
    p.mac(answer, mak)
    checked = p.check_response(end, answer, mak=mak)
    assert checked.upload_counts == composite.UploadCounts(12, 11)
    assert parse_upload_counts("0012") == composite.UploadCounts(12, None)
    assert parse_upload_counts("12x") is None
    item = p.upload(CTX, plan_upload(PROFILE, [stripe("000001")])[0])
    reply = CUP.message("0330", {11: "000123", 39: "00", 41: "10000001", 48: "0001"})
    p.mac(reply, mak)
    assert p.check_response(item, reply, mak=mak).upload_counts is None


def test_the_tc_replaces_the_arqc_in_an_uploaded_f55() -> None:
    tc = "1122334455667788"
    tags = tlv.decode_flat(upload_icc_data(ICC, "TC", tc))
    assert (tags[0x9F26], tags[0x9F27], tags[0x9F36]) == (bytes.fromhex(tc), b"\x40", b"\x00\x01")
    assert upload_icc_data(ICC, "ARQC", tc) == ICC
    assert upload_icc_data(ICC, "TC", None) == ICC
    assert upload_icc_data(b"\x9f", "TC", tc) == b"\x9f"  # unreadable F55: as sent


@pytest.mark.parametrize("text", [
    "", "0", "00", "09" + "00000001" + "0" * 32 * 9,  # nine items
    "02" + "00" + "000001" + "0" * 20 + "0" * 12,  # says 2, holds 1
    "01" + "07" + "000001" + "6" * 20 + "0" * 12,  # organisation 07
    "01" + "00" + "000001" + "0" * 20 + "0" * 12,  # PAN all zeros
])
def test_bad_f48_lists_are_decode_errors(text: str) -> None:
    with pytest.raises(DecodeError):
        composite.F48UploadList.decode(text)


def test_bad_entries_are_encode_errors() -> None:
    with pytest.raises(EncodeError):
        composite.F48UploadList(()).encode()
    with pytest.raises(EncodeError):
        composite.UploadEntry("02", "000001", PAN, 1).encode()
    with pytest.raises(EncodeError):
        composite.UploadEntry("00", "000001", PAN, 10**12).encode()
    assert PAN not in repr(composite.UploadEntry("00", "000001", PAN, 1))


items = st.builds(
    UploadItem,
    kind=st.sampled_from(["sale", "refund"]),
    pan=st.from_regex(r"6[0-9]{15,18}", fullmatch=True),
    amount=st.integers(1, 10**12 - 1),
    batch=st.just("000003"),
    stan=st.from_regex(r"[0-9]{6}", fullmatch=True),
    date=st.none() | st.from_regex(r"(0[1-9]|1[0-2])[0-2][0-9]", fullmatch=True),
    rrn=st.none() | st.from_regex(r"[0-9]{12}", fullmatch=True),
    auth_code=st.none() | st.from_regex(r"[0-9A-Z]{6}", fullmatch=True),
    icc_data=st.none() | st.just(ICC),
    scheme=st.none() | st.sampled_from(["CUP", "VIS", "MCC"]),
)


@given(st.lists(items, max_size=20))
def test_items_round_trip_through_the_messages(batch: list[UploadItem]) -> None:
    p = proto()
    seen: list[tuple[str, int, str]] = []
    for chunk in plan_upload(PROFILE, batch):
        msg = roundtrip(p.upload(CTX, chunk))
        if chunk.way == "list":
            assert net_code(msg) == "201"
            assert len(chunk.items) <= 8
            for entry, item in zip(composite.F48UploadList.decode(str(msg[48])).entries,
                                   chunk.items, strict=True):
                domestic = item.scheme in (None, "CUP")
                assert entry.organisation == ("00" if domestic else "01")
                seen.append((entry.stan, entry.amount, entry.pan))
        else:
            assert net_code(msg) == ("203" if chunk.way == "chip" else "201")
            assert (55 in msg) == (chunk.way == "chip")
            named = composite.F61.decode(str(msg[61]))
            seen.append((named.stan, msg.amount or 0, str(msg[2])))
    assert sorted(seen) == sorted((i.stan, i.amount, i.pan) for i in batch)
