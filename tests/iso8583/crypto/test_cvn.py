"""Cryptograms per CVN: known answers from public vectors, layouts, one-bit sensitivity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583.crypto import emv
from iso8583.crypto.kcv import tdes_kcv
from iso8583.errors import CryptoError
from tests.iso8583.crypto._vectors import h

# pyemv (github.com/knovichikhin/pyemv) tests/test_cvn_hsm.py: issuer key, PAN 1234567890123456,
# PSN 00, ATC 001C; the transaction data of its Visa examples and of its Mastercard one.
PYEMV_IMK = h("0123456789ABCDEFFEDCBA9876543210")
PYEMV_PAN, PYEMV_PSN = "1234567890123456", "00"
VISA_TAGS = {
    0x9F02: h("000000004000"), 0x9F03: h("000000000000"), 0x9F1A: h("0124"),
    0x95: h("8000048000"), 0x5F2A: h("0124"), 0x9A: h("191105"), 0x9C: h("01"),
    0x9F37: h("52BF4585"), 0x82: h("1800"), 0x9F36: h("001C"),
}
MC_TAGS = {
    0x9F02: h("000000009999"), 0x9F03: h("000000000000"), 0x9F1A: h("0124"),
    0x95: h("8000000000"), 0x5F2A: h("0124"), 0x9A: h("209906"), 0x9C: h("00"),
    0x9F37: h("ABCDEF12"), 0x82: h("1800"), 0x9F36: h("001C"),
}


def test_visa_cvn10_pyemv_known_answer() -> None:
    p = emv.cvn_profile("visa-10")
    # pyemv passes the CVR 03A06010 alone; here it sits in a CVN 10 IAD (06 01 0A CVR).
    tags = {**VISA_TAGS, 0x9F10: h("06010A03A06010")}
    arqc = emv.compute_cryptogram(p, PYEMV_IMK, PYEMV_PAN, PYEMV_PSN, tags)
    assert arqc == h("29CCA15AE665FA2E")
    tag91 = emv.issuer_authentication_data(p, PYEMV_IMK, PYEMV_PAN, PYEMV_PSN, h("001C"),
                                           arqc, response_code="00")
    assert tag91 == h("28993816AFAE4AEB") + b"00"  # ARPC method 1, ARC 3030


def test_visa_cvn18_pyemv_known_answer() -> None:
    p = emv.cvn_profile("visa-18")
    tags = {**VISA_TAGS, 0x9F10: h("06011203A0B800")}
    arqc = emv.compute_cryptogram(p, PYEMV_IMK, PYEMV_PAN, PYEMV_PSN, tags)
    assert arqc == h("7A788EA6B8A3E733")
    key = emv.derive_session_key(emv.derive_icc_master_key_b(PYEMV_IMK, PYEMV_PAN, "00"),
                                 h("001C"))
    assert tdes_kcv(key, 2) == h("22C8")
    # ARPC method 2 with CSU 00000000 -> 9AF514C1 (our declined CSU)
    tag91 = emv.issuer_authentication_data(p, PYEMV_IMK, PYEMV_PAN, PYEMV_PSN, h("001C"),
                                           arqc, response_code="05")
    assert tag91 == h("9AF514C1") + h("00000000")


def test_mastercard_cvn20_pyemv_known_answer() -> None:
    p = emv.cvn_profile("mc-20")
    # pyemv's comment gives 9F10 0110A0000322...; CVN 20 writes 14 in byte 2.
    tags = {**MC_TAGS, 0x9F10: h("0114A00003220000000000000000000000FF")}
    arqc = emv.compute_cryptogram(p, PYEMV_IMK, PYEMV_PAN, PYEMV_PSN, tags)
    assert arqc == h("CD29615D6452E70E")
    key = emv.derive_session_key(emv.derive_icc_master_key(PYEMV_IMK, PYEMV_PAN, "00"), h("001C"))
    # pyemv's ARPC uses the binary ARC 0010 (method 1 under the session key)
    assert emv.compute_arpc_method1(key, arqc, h("0010")) == h("DFD0956606B68D64")


def test_unionpay_cvn01_published_example() -> None:
    # https://553668.com/manong/959163.html "金融IC卡 ARQC和ARPC计算方法和实例": IMK-AC
    # F0C34A8124CEE0A91A0B034AA97D6EAC, PAN 6228000100001, PSN 01, ATC 0240, 9F10
    # 07000103A04002010A010000001000D1F61152, ARQC 5D016C91005E7CC2, ARC "01" ->
    # ARPC 21415243527CE78F.
    p = emv.cvn_profile("cup-01")
    imk = h("F0C34A8124CEE0A91A0B034AA97D6EAC")
    tags = {
        0x9F02: h("000000000001"), 0x9F03: h("000000000000"), 0x9F1A: h("0156"),
        0x95: h("0080046000"), 0x5F2A: h("0156"), 0x9A: h("140701"), 0x9C: h("00"),
        0x9F37: h("1E78EEBC"), 0x82: h("7D00"), 0x9F36: h("0240"),
        0x9F10: h("07000103A04002010A010000001000D1F61152"),
    }
    assert emv.cryptogram_input(p, tags) == h(
        "000000000001000000000000015600800460000156140701001E78EEBC7D00024003A04002")
    arqc = emv.compute_cryptogram(p, imk, "6228000100001", "01", tags)
    assert arqc == h("5D016C91005E7CC2")
    tag91 = emv.issuer_authentication_data(p, imk, "6228000100001", "01", h("0240"), arqc,
                                           response_code="01")
    assert tag91 == h("21415243527CE78F") + b"01"


@pytest.mark.parametrize("key", list(emv.CVNS))
def test_iad_layout_names_its_cvn_and_cryptogram_types(key: str) -> None:
    p = emv.cvn_profile(key)
    first = emv.build_iad(p, emv.ARQC)
    assert emv.profile_for_iad(p.scheme, first) is p
    assert emv.iad_cvr(p, first) != emv.iad_cvr(p, emv.build_iad(p, emv.ARQC, emv.TC))
    assert emv.iad_cvr(p, emv.build_iad(p, emv.AAC)) != emv.iad_cvr(p, first)
    assert emv.profile_for_iad("XXX", first) is None


@pytest.mark.parametrize("key", list(emv.CVNS))
def test_issuer_authentication_round_trip(key: str) -> None:
    p = emv.cvn_profile(key)
    atc, arqc = h("0007"), h("0102030405060708")
    for code, approved in (("00", True), ("05", False)):
        data = emv.issuer_authentication_data(p, PYEMV_IMK, PYEMV_PAN, "01", atc, arqc,
                                              response_code=code)
        assert len(data) == p.tag91_length
        verdict = emv.check_issuer_authentication(p, PYEMV_IMK, PYEMV_PAN, "01", atc, arqc, data)
        assert verdict == emv.IssuerAuthentication(True, approved)
        spoilt = bytes([data[0] ^ 0x01]) + data[1:]
        assert not emv.check_issuer_authentication(
            p, PYEMV_IMK, PYEMV_PAN, "01", atc, arqc, spoilt).authentic
        if p.session_key != "none":  # Visa CVN 10 answers under the ICC master key
            assert not emv.check_issuer_authentication(
                p, PYEMV_IMK, PYEMV_PAN, "01", h("0008"), arqc, data).authentic
    assert not emv.check_issuer_authentication(p, PYEMV_IMK, PYEMV_PAN, "01", atc, arqc,
                                               b"short").authentic


def test_bad_profile_and_input() -> None:
    with pytest.raises(CryptoError, match="known: cup-01"):
        emv.cvn_profile("amex-01")
    p = emv.cvn_profile("cup-01")
    with pytest.raises(CryptoError, match="9F10"):
        emv.cryptogram_input(p, VISA_TAGS)
    with pytest.raises(CryptoError, match="too short"):
        emv.iad_cvr(p, h("0701"))
    assert not emv.verify_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01", VISA_TAGS, bytes(8))


def test_option_b_is_option_a_up_to_16_digits_and_differs_beyond() -> None:
    assert emv.derive_icc_master_key_b(PYEMV_IMK, PYEMV_PAN, "01") == \
        emv.derive_icc_master_key(PYEMV_IMK, PYEMV_PAN, "01")
    long_pan = "1234567890123456789"
    assert emv.derive_icc_master_key_b(PYEMV_IMK, long_pan, "01") != \
        emv.derive_icc_master_key(PYEMV_IMK, long_pan, "01")


def _tags_for(p: emv.CvnProfile) -> dict[int, bytes]:
    return {**MC_TAGS, 0x9F10: emv.build_iad(p, emv.ARQC)}


def _maced_elements(p: emv.CvnProfile) -> list[tuple[int, int]]:
    """(tag, byte index) of every byte the CVN MACs: the ten tags and its part of 9F10."""
    tags = _tags_for(p)
    out = [(t, i) for t in emv.AC_INPUT_TAGS for i in range(len(tags[t]))]
    iad = tags[0x9F10]
    if p.mac_tail == "iad":
        covered = range(len(iad))
    elif p.mac_tail == "cvr6":
        covered = range(2, 8)
    else:
        covered = range(3, 7)
    return out + [(0x9F10, i) for i in covered]


@given(st.sampled_from(list(emv.CVNS)), st.data())
def test_one_bit_in_any_maced_element_changes_the_cryptogram(key: str, data: st.DataObject) -> None:
    p = emv.cvn_profile(key)
    tags = _tags_for(p)
    tag, index = data.draw(st.sampled_from(_maced_elements(p)))
    bit = data.draw(st.integers(0, 7))
    value = bytearray(tags[tag])
    value[index] ^= 1 << bit
    changed = {**tags, tag: bytes(value)}
    base = emv.compute_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01", tags)
    assert emv.compute_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01", changed) != base


@pytest.mark.parametrize("key", list(emv.CVNS))
def test_one_cryptogram_key_checks_and_answers_as_the_functions_do(key: str) -> None:
    """The issuer's check-then-answer under one derived key (CryptogramKey) gives the
    bytes of compute_cryptogram and issuer_authentication_data, for every CVN."""
    p = emv.cvn_profile(key)
    tags = {**VISA_TAGS, 0x9F10: emv.build_iad(p, emv.ARQC)}
    arqc = emv.compute_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01", tags)
    checked = emv.check_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01", tags, arqc)
    assert checked is not None
    assert "key hidden" in repr(checked)
    assert checked.cryptogram(tags) == arqc
    for code in ("00", "05", "51"):
        assert checked.issuer_authentication_data(arqc, code) == emv.issuer_authentication_data(
            p, PYEMV_IMK, PYEMV_PAN, "01", tags[0x9F36], arqc, response_code=code)
    assert emv.check_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01", tags, bytes(8)) is None
    assert emv.check_cryptogram(p, PYEMV_IMK, PYEMV_PAN, "01",
                                {k: v for k, v in tags.items() if k != 0x9F36}, arqc) is None
    with pytest.raises(CryptoError):
        checked.issuer_authentication_data(b"short", "00")


@given(st.sampled_from(["CUP", "VIS", "MCC", "XXX"]),
       st.lists(st.sampled_from([0x00, 0x01, 0x06, 0x07, 0x0A, 0x12, 0x14, 0xFF]),
                max_size=6).map(bytes))
def test_profile_for_iad_is_the_first_profile_of_the_scheme_naming_its_cvn(
        scheme: str, iad: bytes) -> None:
    want = next((p for p in emv.CVNS.values() if p.scheme == scheme
                 and len(iad) > p.cvn_offset and iad[p.cvn_offset] == p.cvn), None)
    assert emv.profile_for_iad(scheme, iad) is want
