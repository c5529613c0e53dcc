"""The terminal's side of the protocol: every request per dialect, MACs, answer checks."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iso8583 import composite
from iso8583.crypto import signon
from iso8583.crypto.message_mac import (
    apply_mac,
    apply_mac_encoded,
    mac_function,
    received_mac_ok,
)
from iso8583.dialect import Dialect
from iso8583.dialects import get_dialect
from iso8583.errors import DecodeError, KeyCheckError, ResponseError, ResponseMacError
from iso8583.message import Message
from iso8583.responses import TerminalAction
from iso8583.settlement import HalfTotals, SettlementTotals, SettleResult
from iso8583.terminal import (
    CardInput,
    EntryKind,
    OriginalRef,
    RequestContext,
    TerminalProtocol,
    UploadItem,
)

CUP = get_dialect("cup")
ISO87 = get_dialect("iso87")
TID, MID = "10000001", "123456789012345"
MAK8 = bytes.fromhex("0123456789ABCDEF")
MAK16 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TMK = bytes.fromhex("11111111111111112222222222222222")
NOW = datetime(2024, 11, 23, 10, 15, 30)
CTX = RequestContext("000007", "000003", NOW)
PIN_BLOCK = bytes.fromhex("0123456789ABCDEF")
ICC = bytes.fromhex("9F2608A1B2C3D4E5F607089F270180")
PAN = "6225880000000019"
CHIP = CardInput(PAN, "2912", "chip", "01", PAN + "D29122010000000000", ICC, "CUP")
KEYED = CardInput(PAN)
ORIGINAL = OriginalRef("000002", "000042", "1122", "000000123456", "654321", 10_000, "CUP")
ENTRIES: list[EntryKind] = ["chip", "contactless", "stripe", "manual", "fallback"]


def proto(dialect: Dialect = CUP) -> TerminalProtocol:
    return TerminalProtocol(dialect, TID, MID)


def mak_for(dialect: Dialect) -> bytes:
    return MAK16 if dialect.settings.mac == "x919" else MAK8


def answer_to(dialect: Dialect, request: Message, code: str = "00", *,
              mak: bytes | None = None, extra: dict[int, object] | None = None) -> Message:
    """An answer as a host builds it: the request's key fields, F12/F13 of its own, MACed."""
    resp = dialect.message(request.response_mti)
    for number in (2, 3, 4, 11, 25, 41, 42, 49, 60, 70, 90):
        value = request.get(number)
        if value is not None:
            resp[number] = value
    resp[12] = "101531"
    resp[13] = "1123"
    resp[39] = code
    for number, extra_value in (extra or {}).items():
        resp[number] = extra_value
    if mak is not None:
        apply_mac(dialect, mak, resp)
    return resp


# --- requests ------------------------------------------------------------------------
def test_cup_chip_sale_with_pin() -> None:
    msg = proto().sale(CTX, 12_300, CHIP, PIN_BLOCK)
    assert msg.mti == "0200"
    assert msg[3] == "000000"
    assert msg.amount == 12_300
    assert (msg[11], msg[12], msg[13]) == ("000007", "101530", "1123")
    assert msg[22] == "051"
    assert msg[23] == "001"
    assert (msg[26], msg[52], msg[53]) == ("06", PIN_BLOCK, "2600000000000000")
    assert msg[55] == ICC
    assert msg[49] == "156"
    assert (msg.tid, msg.mid) == (TID, MID)
    f60 = composite.F60.decode(str(msg[60]))
    assert (f60.msg_type, f60.batch, f60.net_code) == ("22", "000003", "000")
    assert (f60.read_capability, f60.ic_condition) == ("5", "0")
    assert 64 not in msg  # the caller MACs


@pytest.mark.parametrize(("entry", "pin", "f22"), [
    ("chip", True, "051"), ("chip", False, "052"), ("contactless", True, "071"),
    ("contactless", False, "072"), ("stripe", True, "021"), ("stripe", False, "022"),
    ("manual", False, "012"), ("manual", True, "011"), ("fallback", False, "802"),
])
def test_entry_mode_from_dialect_prefix(entry: EntryKind, pin: bool, f22: str) -> None:
    card = CardInput(PAN, entry=entry, card_seq="01")
    msg = proto().sale(CTX, 100, card, PIN_BLOCK if pin else None)
    assert msg[22] == f22
    assert (23 in msg) == (entry in ("chip", "contactless"))
    assert (52 in msg, 53 in msg, 26 in msg) == (pin, pin, pin)


def test_fallback_marks_60_5() -> None:
    f60 = composite.F60.decode(str(proto().sale(CTX, 100, CardInput(PAN, entry="fallback"))[60]))
    assert (f60.read_capability, f60.ic_condition) == ("5", "2")


def test_balance() -> None:
    msg = proto().balance(CTX, CHIP)
    assert (msg.mti, msg[3]) == ("0200", "310000")
    assert 4 not in msg
    assert composite.F60.decode(str(msg[60])).msg_type == "01"


def test_cup_void_names_the_original() -> None:
    msg = proto().void(CTX, ORIGINAL, KEYED)
    assert (msg.mti, msg[3], msg[22]) == ("0200", "200000", "012")
    assert msg.amount == ORIGINAL.amount
    assert (msg[37], msg[38]) == ("000000123456", "654321")
    assert msg[61] == "000002000042"
    assert composite.F60.decode(str(msg[60])).msg_type == "23"
    assert 55 not in proto().void(CTX, ORIGINAL, CHIP)


def test_cup_refund_is_an_advice_with_answered_date_and_organisation() -> None:
    msg = proto().refund(CTX, ORIGINAL, 5_000, CHIP)
    assert (msg.mti, msg[3], msg.amount) == ("0220", "200000", 5_000)
    assert msg[37] == ORIGINAL.rrn
    assert msg[61] == "000002" + "000042" + "1122"
    assert composite.F63.decode(str(msg[63])).card_organisation == "CUP"
    assert 55 not in msg  # CUP refunds carry no ICC data
    assert 38 not in msg
    assert composite.F60.decode(str(msg[60])).msg_type == "25"


def test_iso87_refund_is_online_with_f55_and_no_organisation() -> None:
    msg = proto(ISO87).refund(CTX, ORIGINAL, 5_000, CHIP)
    assert msg.mti == ISO87.settings.refund_mti == "0200"
    assert msg[55] == ICC
    assert 63 not in msg


def test_cup_reversal_copies_the_request_without_secrets() -> None:
    p = proto()
    sale = p.mac(p.sale(CTX, 12_300, CHIP, PIN_BLOCK), MAK8)
    rev = p.reversal(sale, "98")
    assert rev.mti == "0400"
    assert rev[39] == "98"
    for number in (2, 3, 4, 11, 22, 23, 25, 41, 42, 49, 60):
        assert rev[number] == sale[number]
    for number in (35, 52, 53, 55, 64, 90):
        assert number not in rev


def test_iso87_reversal_is_a_new_message_with_f90() -> None:
    p = proto(ISO87)
    sale = p.sale(CTX, 12_300, CHIP)
    rev = p.reversal(sale, "98", RequestContext("000008", CTX.batch, NOW))
    assert rev[11] == "000008"
    assert str(rev[90]).startswith("0200" + "000007" + "1123101530")
    with pytest.raises(ValueError, match="ctx"):
        p.reversal(sale, "98")


def test_network_management_is_never_maced() -> None:
    p = proto()
    for msg in (p.sign_on(CTX, 1), p.sign_on(CTX), p.sign_on(CTX, 4), p.echo(CTX),
                p.sign_off(CTX)):
        assert p.mac(msg, MAK8) is msg
        assert 64 not in msg
    codes = [composite.F60.decode(str(m[60])).net_code
             for m in (p.sign_on(CTX, 1), p.sign_on(CTX, 4), p.echo(CTX), p.sign_off(CTX))]
    assert codes == ["001", "004", "301", "002"]
    assert (p.echo(CTX).mti, p.sign_on(CTX).mti) == ("0820", "0800")
    with pytest.raises(ValueError, match="form"):
        p.sign_on(CTX, 2)


def test_iso87_network_management_uses_f70() -> None:
    p = proto(ISO87)
    assert p.sign_on(CTX)[70] == "001"
    assert p.echo(CTX)[70] == "301"


def test_settlement_and_batch_upload() -> None:
    p = proto()
    totals = SettlementTotals(HalfTotals(2, 30_000, 1, 5_000))
    msg = p.settlement(CTX, totals)
    assert (msg.mti, msg[48]) == ("0500", totals.encode())
    assert composite.F60.decode(str(msg[60])).net_code == "201"
    item = UploadItem("refund", PAN, 5_000, "000003", "000005", "1123", "000000000777", None)
    up = p.batch_upload(CTX, item)
    assert (up.mti, up[3], up.amount, up[37]) == ("0320", "200000", 5_000, "000000000777")
    assert up[61] == "000003000005" + "1123"
    assert composite.F60.decode(str(up[60])).net_code == "201"
    chip = p.batch_upload(CTX, UploadItem("sale", PAN, 1, "000003", "000006", "1123", None,
                                          None, ICC))
    assert composite.F60.decode(str(chip[60])).net_code == "203"
    assert (chip[3], chip[55]) == ("000000", ICC)
    end = p.batch_upload_end(CTX, 12)
    assert (end[48], composite.F60.decode(str(end[60])).net_code) == ("0012", "202")
    with pytest.raises(KeyError, match="batch_upload"):
        proto(ISO87).batch_upload_end(CTX, 1)


def test_card_input_repr_masks_the_pan() -> None:
    assert PAN not in repr(CHIP)
    assert PAN not in repr(UploadItem("sale", PAN, 1, "1", "1", None, None, None))


# --- every request round-trips and its MAC verifies ---------------------------------
cards = st.builds(
    CardInput,
    pan=st.from_regex(r"62[0-9]{14,17}", fullmatch=True),
    expiry=st.none() | st.just("2912"),
    entry=st.sampled_from(ENTRIES),
    card_seq=st.none() | st.from_regex(r"[0-9]{2}", fullmatch=True),
    track2=st.none() | st.from_regex(r"62[0-9]{14}D[0-9]{10}", fullmatch=True),
    icc_data=st.none() | st.binary(min_size=1, max_size=120),
    scheme=st.none() | st.sampled_from(["CUP", "VIS", "MCC"]),
)
originals = st.builds(
    OriginalRef,
    batch=st.from_regex(r"[0-9]{6}", fullmatch=True),
    stan=st.from_regex(r"[0-9]{6}", fullmatch=True),
    date=st.none() | st.from_regex(r"(0[1-9]|1[0-2])[0-2][0-9]", fullmatch=True),
    rrn=st.none() | st.from_regex(r"[0-9]{12}", fullmatch=True),
    auth_code=st.none() | st.from_regex(r"[0-9A-Z]{6}", fullmatch=True),
    amount=st.integers(1, 10**10),
    scheme=st.none() | st.sampled_from(["CUP", "VIS"]),
)
contexts = st.builds(
    RequestContext,
    stan=st.from_regex(r"[0-9]{6}", fullmatch=True),
    batch=st.from_regex(r"[0-9]{6}", fullmatch=True),
    now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[Dialect, Message]:
    dialect = draw(st.sampled_from([CUP, ISO87]))
    p = proto(dialect)
    ctx, card, original = draw(contexts), draw(cards), draw(originals)
    pin = draw(st.none() | st.binary(min_size=8, max_size=8))
    amount = draw(st.integers(1, 10**10))
    kind = draw(st.sampled_from(["sale", "balance", "void", "refund", "reversal",
                                 "settlement", "upload"]))
    if kind == "sale":
        return dialect, p.sale(ctx, amount, card, pin)
    if kind == "balance":
        return dialect, p.balance(ctx, card, pin)
    if kind == "void":
        return dialect, p.void(ctx, original, card, pin)
    if kind == "refund":
        return dialect, p.refund(ctx, original, amount, card, pin)
    if kind == "reversal":
        sale = p.sale(ctx, amount, card, pin)
        return dialect, p.reversal(sale, draw(st.sampled_from(["98", "96", "A0", "06"])), ctx)
    if kind == "settlement":
        totals = SettlementTotals(HalfTotals(1, amount, 0, 0))
        return dialect, p.settlement(ctx, totals)
    item = UploadItem("sale", card.pan, amount, original.batch, original.stan, original.date,
                      original.rrn, original.auth_code)
    if dialect is ISO87:
        return dialect, p.sale(ctx, amount, card, pin)
    return dialect, p.batch_upload(ctx, item)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_every_request_round_trips_and_its_mac_verifies(case: tuple[Dialect, Message]) -> None:
    dialect, request = case
    mak = mak_for(dialect)
    proto(dialect).mac(request, mak)
    body = dialect.encode(request)
    decoded = dialect.decode(body)
    assert decoded == request
    assert received_mac_ok(dialect, mak, body, decoded)
    assert not received_mac_ok(dialect, bytes(reversed(mak)), body, decoded)
    # the same through the MAC function a host keeps per terminal
    other = bytes(reversed(mak))
    assert received_mac_ok(dialect, mak, body, decoded, mac_of=mac_function(dialect, mak))
    assert not received_mac_ok(dialect, other, body, decoded, mac_of=mac_function(dialect, other))
    again = decoded.copy()
    assert apply_mac_encoded(dialect, mak, again, mac_of=mac_function(dialect, mak)) == body
    assert again == request


# --- answers -------------------------------------------------------------------------
def test_approved_answer() -> None:
    p = proto()
    sale = p.mac(p.sale(CTX, 12_300, CHIP), MAK8)
    resp = answer_to(CUP, sale, mak=MAK8, extra={37: "000000000001", 38: "123456"})
    body = CUP.encode(resp)
    answer = p.check_response(sale, CUP.decode(body), body=body, mak=MAK8)
    assert answer.approved
    assert answer.action is TerminalAction.APPROVED
    assert (answer.rrn, answer.auth_code) == ("000000000001", "123456")
    assert (answer.date, answer.time) == ("1123", "101531")  # the answer's, not the request's
    assert answer.balance is None
    assert answer.settle_balanced is None


def test_decline_codes_and_their_action() -> None:
    p = proto()
    sale = p.mac(p.sale(CTX, 12_300, CHIP), MAK8)
    for code, action in [("51", TerminalAction.DECLINED), ("25", TerminalAction.DECLINED),
                         ("77", TerminalAction.SIGN_ON_AGAIN)]:
        answer = p.check_response(sale, answer_to(CUP, sale, code, mak=MAK8), mak=MAK8)
        assert (answer.code, answer.action, answer.approved) == (code, action, False)


@pytest.mark.parametrize("code", ["A0", "77", "03", "30"])
def test_unmaced_codes_pass_without_f64(code: str) -> None:
    p = proto()
    sale = p.mac(p.sale(CTX, 12_300, CHIP), MAK8)
    answer = p.check_response(sale, answer_to(CUP, sale, code), mak=None)
    assert answer.code == code
    bad = answer_to(CUP, sale, code, mak=bytes(8))
    with pytest.raises(ResponseMacError):  # ... but a MAC that is there must verify
        p.check_response(sale, bad, mak=MAK8)


def test_maced_answer_without_mac_or_key_is_refused() -> None:
    p = proto()
    sale = p.mac(p.sale(CTX, 12_300, CHIP), MAK8)
    with pytest.raises(ResponseMacError):
        p.check_response(sale, answer_to(CUP, sale, "00"), mak=MAK8)
    with pytest.raises(ResponseMacError):
        p.check_response(sale, answer_to(CUP, sale, "00", mak=MAK8), mak=None)


def test_foreign_answers_are_refused() -> None:
    p = proto()
    sale = p.mac(p.sale(CTX, 12_300, CHIP), MAK8)
    good = answer_to(CUP, sale, mak=MAK8)
    for number, value in ((11, "000999"), (41, "99999999")):
        other = good.copy()
        other[number] = value
        with pytest.raises(ResponseError) as info:
            p.check_response(sale, apply_mac(CUP, MAK8, other), mak=MAK8)
        assert not isinstance(info.value, ResponseMacError)
    wrong_mti = good.copy()
    wrong_mti.mti = "0230"
    with pytest.raises(ResponseError):
        p.check_response(sale, wrong_mti, mak=MAK8)


def test_iso87_answer_with_x919_mac() -> None:
    p = proto(ISO87)
    refund = p.mac(p.refund(CTX, ORIGINAL, 100, CHIP), MAK16)
    resp = answer_to(ISO87, refund, mak=MAK16)
    assert p.check_response(refund, resp, mak=MAK16).approved
    with pytest.raises(ResponseMacError):
        p.check_response(refund, resp, mak=MAK8 + MAK8[::-1])


def test_balance_and_settlement_answers() -> None:
    p = proto()
    bal = p.mac(p.balance(CTX, CHIP), MAK8)
    resp = answer_to(CUP, bal, mak=MAK8, extra={54: "1001156C000000012345"})
    assert p.check_response(bal, resp, mak=MAK8).balance == 12_345
    totals = SettlementTotals()
    stl = p.mac(p.settlement(CTX, totals), MAK8)
    for dom, fore, want in [(SettleResult.BALANCED, SettleResult.BALANCED, True),
                            (SettleResult.BALANCED, SettleResult.NOT_BALANCED, False)]:
        resp = answer_to(CUP, stl, mak=MAK8, extra={48: totals.encode(dom, fore)})
        assert p.check_response(stl, resp, mak=MAK8).settle_balanced is want


def test_sign_on_answer_is_checked_without_a_mac_and_gives_keys() -> None:
    p = proto()
    request = p.sign_on(CTX)
    keys = signon.WorkingKeys(bytes(range(16)), bytes(range(8, 16)))
    f62 = signon.wrap_signon_keys(TMK, keys, 3)
    resp = answer_to(CUP, request, extra={62: f62})
    resp[60] = composite.F60("00", "000009", "003").encode()
    assert p.check_response(request, resp).approved
    result = p.accept_sign_on(TMK, resp)
    assert (result.keys.pik, result.keys.mak) == (keys.pik, keys.mak)
    assert result.batch == "000009"
    refused = answer_to(CUP, request, "03")
    with pytest.raises(ResponseError, match="refused"):
        p.accept_sign_on(TMK, refused)
    bad = resp.copy()
    bad[62] = f62[:-1] + bytes([f62[-1] ^ 1])
    with pytest.raises(KeyCheckError):
        p.accept_sign_on(TMK, bad)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_one_bit_change_of_a_maced_answer_is_refused(data: st.DataObject) -> None:
    dialect = data.draw(st.sampled_from([CUP, ISO87]))
    p, mak = proto(dialect), mak_for(dialect)
    code = data.draw(st.sampled_from(["00", "51", "A0", "25"]))
    request = p.mac(p.sale(CTX, 12_300, CHIP, PIN_BLOCK), mak)
    body = bytearray(dialect.encode(answer_to(dialect, request, code, mak=mak,
                                              extra={37: "000000000001"})))
    bit = data.draw(st.integers(0, len(body) * 8 - 1))
    body[bit // 8] ^= 0x80 >> (bit % 8)
    try:
        changed = dialect.decode(bytes(body))
    except DecodeError:
        return  # refused before it reaches the check
    with pytest.raises(ResponseError):
        p.check_response(request, changed, body=bytes(body), mak=mak)
