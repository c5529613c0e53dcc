"""The virtual EMV card application: every command and status-word path."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from emulator.card.app import (
    AFL,
    CDOL1,
    CDOL2,
    PDOL,
    PPSE_NAME,
    PSE_NAME,
    CardPoweredOff,
    VirtualCard,
    contact_atr,
    contactless_atr,
)
from emulator.card.faults import CardFaults
from emulator.catalogue import CARDS, CardStatus, card_by_name
from emulator.catalogue import TestCard as CatalogueCard
from iso8583 import tlv
from iso8583.crypto import emv

DEBIT = card_by_name("cup-debit")

# Terminal-side values for the DOLs (what an EMV kernel would send for a refund).
TERMINAL = {
    0x9F02: bytes.fromhex("000000012345"),
    0x9F03: bytes(6),
    0x9F1A: bytes.fromhex("0156"),
    0x95: bytes(5),
    0x5F2A: bytes.fromhex("0156"),
    0x9A: bytes.fromhex("261123"),
    0x9C: bytes.fromhex("20"),
    0x9F37: bytes.fromhex("11223344"),
    0x8A: b"00",
}


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes | None = None,
         le: int | None = None) -> bytes:
    out = bytes([cla, ins, p1, p2])
    if data is not None:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le])
    return out


def select(name: bytes, p2: int = 0) -> bytes:
    return apdu(0x00, 0xA4, 0x04, p2, name, 0x00)


def dol_data(dol: bytes, overrides: dict[int, bytes] | None = None) -> bytes:
    values = dict(TERMINAL)
    values.update(overrides or {})
    return tlv.build_dol_data(tlv.decode_dol(dol), values)


def gpo() -> bytes:
    data = dol_data(PDOL)
    return apdu(0x80, 0xA8, 0x00, 0x00, bytes([0x83, len(data)]) + data, 0x00)


def generate_ac(p1: int, dol: bytes = CDOL1, overrides: dict[int, bytes] | None = None) -> bytes:
    return apdu(0x80, 0xAE, p1, 0x00, dol_data(dol, overrides), 0x00)


def read_record(sfi: int, number: int, le: int = 0x00) -> bytes:
    return apdu(0x00, 0xB2, number, sfi << 3 | 4, None, le)


def run(card: VirtualCard, command: bytes) -> tuple[bytes, int]:
    response = card.process(command)
    assert len(response) >= 2
    return response[:-2], int.from_bytes(response[-2:], "big")


def powered(name: str = "cup-debit", *, contactless: bool = False, **kw: object) -> VirtualCard:
    card = VirtualCard(card_by_name(name), **kw)  # type: ignore[arg-type]
    card.power_on(contactless=contactless)
    return card


def ready(card: VirtualCard) -> None:
    """SELECT the application and run GPO."""
    assert run(card, select(card.aid))[1] == 0x9000
    assert run(card, gpo())[1] == 0x9000


def flat(data: bytes) -> dict[int, bytes]:
    return tlv.decode_flat(data)


# --- ATR and interfaces -----------------------------------------------------------------
def test_atrs() -> None:
    atr = contactless_atr()
    assert atr[:4] == bytes([0x3B, 0x80 | (len(atr) - 5), 0x80, 0x01])
    tck = 0
    for b in atr[1:]:
        tck ^= b
    assert tck == 0
    c = contact_atr()
    assert c[:4] == bytes([0x3B, 0x60 | (len(c) - 4), 0x00, 0x00])
    card = VirtualCard(DEBIT)
    assert card.power_on(contactless=False) == c
    assert card.power_on(contactless=True) == atr


def test_interfaces_and_chip_checked() -> None:
    with pytest.raises(ValueError, match="magnetic-stripe"):
        VirtualCard(card_by_name("cup-magstripe"))
    with pytest.raises(ValueError, match="no contactless"):
        VirtualCard(card_by_name("cup-expired")).power_on(contactless=True)


def test_unpowered_card_does_not_answer() -> None:
    card = VirtualCard(DEBIT)
    with pytest.raises(CardPoweredOff):
        card.process(select(PSE_NAME))
    card.power_on(contactless=False)
    card.power_off()
    with pytest.raises(CardPoweredOff):
        card.process(select(PSE_NAME))


# --- selection --------------------------------------------------------------------------
def test_pse_directory_contact() -> None:
    card = powered()
    data, sw = run(card, select(PSE_NAME))
    assert sw == 0x9000
    fci = flat(data)
    assert fci[0x84] == PSE_NAME
    assert fci[0x88] == b"\x01"
    data, sw = run(card, read_record(1, 1))
    assert sw == 0x9000
    entry = flat(data)
    assert entry[0x4F] == DEBIT.aid
    assert entry[0x50] == DEBIT.label.encode()
    assert entry[0x87] == b"\x01"
    assert run(card, read_record(1, 2))[1] == 0x6A83
    assert run(card, select(PPSE_NAME))[1] == 0x6A82


def test_ppse_directory_contactless() -> None:
    card = powered(contactless=True)
    data, sw = run(card, select(PPSE_NAME))
    assert sw == 0x9000
    fci = flat(data)
    assert fci[0x84] == PPSE_NAME
    assert fci[0x4F] == DEBIT.aid
    (template,) = tlv.decode(data)
    proprietary = next(t for t in template.children if t.tag == 0xA5)
    assert [t.tag for t in proprietary.children] == [0xBF0C]
    assert run(card, select(PSE_NAME))[1] == 0x6A82


def test_select_aid_fci() -> None:
    card = powered()
    data, sw = run(card, select(DEBIT.aid or b""))
    assert sw == 0x9000
    fci = flat(data)
    assert fci[0x84] == DEBIT.aid
    assert fci[0x50] == b"UnionPay Debit"
    assert fci[0x87] == b"\x01"
    assert fci[0x9F38] == PDOL
    assert [t for t, _ in tlv.decode_dol(PDOL)] == [0x9F02, 0x9F1A, 0x5F2A, 0x9A, 0x9C, 0x9F37]


def test_select_paths() -> None:
    card = powered()
    aid = DEBIT.aid or b""
    assert run(card, select(aid[:5]))[1] == 0x9000  # partial AID selection
    assert run(card, select(bytes.fromhex("A0000000031010")))[1] == 0x6A82
    assert run(card, select(aid, p2=0x02))[1] == 0x6A82  # no next occurrence
    assert run(card, apdu(0x00, 0xA4, 0x00, 0x00, aid, 0))[1] == 0x6A86
    assert run(card, apdu(0x00, 0xA4, 0x04, 0x0C, aid, 0))[1] == 0x6A86
    assert run(card, apdu(0x00, 0xA4, 0x04, 0x00, None, 0))[1] == 0x6700


def test_blocked_application_answers_6283() -> None:
    card = powered("cup-blocked")
    assert run(card, select(PSE_NAME))[1] == 0x9000  # the directory still lists it
    assert run(card, read_record(1, 1))[1] == 0x9000
    data, sw = run(card, select(card.aid))
    assert (data, sw) == (b"", 0x6283)
    assert run(card, gpo())[1] == 0x6985
    blocked_by_knob = powered(faults=CardFaults(blocked=True))
    assert run(blocked_by_knob, select(blocked_by_knob.aid))[1] == 0x6283


# --- GPO and records --------------------------------------------------------------------
def test_gpo_paths() -> None:
    card = powered()
    assert run(card, gpo())[1] == 0x6985  # nothing selected
    assert run(card, select(card.aid))[1] == 0x9000
    short = apdu(0x80, 0xA8, 0, 0, bytes([0x83, 2, 0, 0]), 0)
    assert run(card, short)[1] == 0x6700
    assert run(card, apdu(0x80, 0xA8, 0, 0, bytes([0x83, 0]), 0))[1] == 0x6700
    assert run(card, apdu(0x80, 0xA8, 1, 0, bytes([0x83, 0]), 0))[1] == 0x6A86
    data, sw = run(card, gpo())
    assert sw == 0x9000
    assert data[0] == 0x77
    answer = flat(data)
    assert answer[0x82] == bytes.fromhex("1C00")  # UnionPay CVN 01: issuer authentication
    assert answer[0x94] == AFL


def test_gpo_contactless_aip() -> None:
    card = powered(contactless=True)
    ready(card)
    assert card.aip == bytes.fromhex("1C80")
    visa = powered("visa-credit", contactless=True)  # CVN 18: the ARPC rides in CDOL2
    assert visa.aip == bytes.fromhex("1880")


def records(card: VirtualCard) -> dict[int, bytes]:
    """Read every record the AFL names; return the union of their tags."""
    afl = flat(run(card, gpo())[0])[0x94]
    found: dict[int, bytes] = {}
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for number in range(first, last + 1):
            data, sw = run(card, read_record(sfi, number))
            assert sw == 0x9000
            assert data[0] == 0x70
            found.update(flat(data))
    return found


READABLE = [c for c in CARDS if c.chip and c.status is not CardStatus.BLOCKED]


@pytest.mark.parametrize("test_card", READABLE, ids=lambda c: c.name)
def test_records_carry_the_catalogue_data(test_card: CatalogueCard) -> None:
    card = VirtualCard(test_card)
    card.power_on(contactless=False)
    assert run(card, select(card.aid))[1] == 0x9000
    tags = records(card)
    c = card.card
    assert tags[0x5A].hex().upper().rstrip("F") == c.pan
    assert tags[0x57].hex().upper().rstrip("F") == c.track2
    assert tags[0x5F24].hex()[:4] == c.expiry
    assert tags[0x5F34].hex() == c.psn
    assert tags[0x5F20] == b"TEST/CARD"
    assert tags[0x8C] == CDOL1
    assert [t for t, _ in tlv.decode_dol(tags[0x8C])] == [
        0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37]
    assert tags[0x8D] == card.cdol2
    assert tags[0x8D].endswith(CDOL2)
    for tag in (0x9F08, 0x5F28, 0x9F07, 0x8E):
        assert tag in tags
    cvm = tags[0x8E]
    assert cvm[8:10] == (bytes.fromhex("4203") if c.pin_required else bytes.fromhex("1F03"))


def test_expiry_is_last_day_of_month() -> None:
    card = powered("mastercard")  # 3006 -> 300630
    assert records_after_select(card)[0x5F24] == bytes.fromhex("300630")


def records_after_select(card: VirtualCard) -> dict[int, bytes]:
    assert run(card, select(card.aid))[1] == 0x9000
    return records(card)


def test_read_record_paths() -> None:
    card = powered()
    assert run(card, read_record(2, 1))[1] == 0x6985  # no application selected
    ready(card)
    assert run(card, read_record(4, 1))[1] == 0x6A82
    assert run(card, read_record(2, 3))[1] == 0x6A83
    assert run(card, apdu(0x00, 0xB2, 0x01, 0x10, None, 0))[1] == 0x6A86  # P2 not SFI mode
    assert run(card, apdu(0x00, 0xB2, 0x00, 0x14, None, 0))[1] == 0x6A86
    assert run(card, apdu(0x00, 0xB2, 0x01, 0x14, b"\x00", 0))[1] == 0x6700


# --- GENERATE AC ------------------------------------------------------------------------
def cryptogram_ok(card: VirtualCard, answer: dict[int, bytes], sent: dict[int, bytes]) -> bool:
    tags = {t: sent[t] for t in emv.AC_INPUT_TAGS if t in sent}
    tags[0x82] = card.aip
    tags[0x9F36] = answer[0x9F36]
    tags[0x9F10] = answer[0x9F10]
    profile = emv.profile_for_iad(card.card.scheme, answer[0x9F10])
    assert profile is not None
    assert profile.key == card.card.cvn
    return emv.verify_cryptogram(profile, card.card.imk_ac, card.card.pan, card.card.psn, tags,
                                 answer[0x9F26])


def issuer_auth(card: VirtualCard, arqc: bytes, code: str = "00") -> bytes:
    """Tag 91's value as the host answers the card's ARQC."""
    c = card.card
    return emv.issuer_authentication_data(card.profile, c.imk_ac, c.pan, c.psn,
                                          card.atc.to_bytes(2, "big"), arqc, response_code=code)


def second_ac(card: VirtualCard, p1: int, arpc: bytes | None, code: str = "00") -> bytes:
    """The second GENERATE AC with the ARPC where this card's CVN takes it."""
    overrides: dict[int, bytes] = {0x8A: code.encode()}
    if card.profile.issuer_auth == "cdol2":
        overrides[0x91] = arpc if arpc is not None else bytes(card.profile.tag91_length)
    elif arpc is not None:
        run(card, apdu(0x00, 0x82, 0, 0, arpc))
    return generate_ac(p1, card.cdol2, overrides)


def test_generate_ac_before_gpo_is_refused() -> None:
    card = powered()
    assert run(card, generate_ac(0x80))[1] == 0x6985
    assert run(card, select(card.aid))[1] == 0x9000
    assert run(card, generate_ac(0x80))[1] == 0x6985


def test_arqc_verifies_against_the_issuer_key() -> None:
    card = powered()
    ready(card)
    data, sw = run(card, generate_ac(0x80))
    assert sw == 0x9000
    assert data[0] == 0x77
    answer = flat(data)
    assert answer[0x9F27] == b"\x80"
    assert answer[0x9F36] == b"\x00\x01"
    assert len(answer[0x9F26]) == 8
    assert len(answer[0x9F10]) == 19  # 07 DKI CVN CVR(4) alg + 0A issuer discretionary data
    assert answer[0x9F10][2] == 0x01
    assert answer[0x9F10][4] == 0xA0
    assert cryptogram_ok(card, answer, TERMINAL)
    assert not cryptogram_ok(card, answer, {**TERMINAL, 0x9F02: bytes.fromhex("000000012346")})


def test_refund_asks_aac() -> None:
    card = powered()
    ready(card)
    answer = flat(run(card, generate_ac(0x00))[0])
    assert answer[0x9F27] == b"\x00"
    assert cryptogram_ok(card, answer, TERMINAL)
    assert run(card, generate_ac(0x40, CDOL2))[1] == 0x6985  # the transaction is over


@pytest.mark.parametrize("name", ["cup-debit", "visa-credit", "mastercard"])
def test_tc_request_goes_online_then_second_generate_ac(name: str) -> None:
    card = powered(name)
    ready(card)
    first = flat(run(card, generate_ac(0x40))[0])
    assert first[0x9F27] == b"\x80"  # never approved offline
    assert cryptogram_ok(card, first, TERMINAL)
    assert run(card, generate_ac(0x80, card.cdol2))[1] == 0x6A86  # no ARQC in the second
    second = flat(run(card, second_ac(card, 0x40, issuer_auth(card, first[0x9F26])))[0])
    assert second[0x9F27] == b"\x40"
    assert second[0x9F36] == b"\x00\x01"  # the transaction's ATC, as the ARPC is keyed on it
    assert cryptogram_ok(card, second, TERMINAL)
    assert emv.iad_cvr(card.profile, second[0x9F10]) != emv.iad_cvr(card.profile, first[0x9F10])
    assert run(card, generate_ac(0x40, card.cdol2))[1] == 0x6985


@pytest.mark.parametrize("name", ["cup-debit", "visa-credit", "mastercard"])
@pytest.mark.parametrize("fault", ["no-arpc", "corrupt", "declined"])
def test_second_generate_ac_without_a_good_approving_arpc_gives_aac(name: str, fault: str) -> None:
    card = powered(name)
    ready(card)
    arqc = flat(run(card, generate_ac(0x80))[0])[0x9F26]
    good = issuer_auth(card, arqc, "05" if fault == "declined" else "00")
    arpc = {"no-arpc": None, "corrupt": bytes([good[0] ^ 0x80]) + good[1:],
            "declined": good}[fault]
    answer = flat(run(card, second_ac(card, 0x40, arpc))[0])
    assert answer[0x9F27] == b"\x00"


def test_external_authenticate_paths() -> None:
    card = powered()
    ready(card)
    assert run(card, apdu(0x00, 0x82, 0, 0, bytes(10)))[1] == 0x6985  # before any ARQC
    arqc = flat(run(card, generate_ac(0x80))[0])[0x9F26]
    assert run(card, apdu(0x00, 0x82, 1, 0, bytes(10)))[1] == 0x6A86
    assert run(card, apdu(0x00, 0x82, 0, 0, bytes(4)))[1] == 0x6700
    assert run(card, apdu(0x00, 0x82, 0, 0, bytes(10)))[1] == 0x6300  # not the issuer's
    assert run(card, apdu(0x00, 0x82, 0, 0, issuer_auth(card, arqc)))[1] == 0x6985  # once
    answer = flat(run(card, generate_ac(0x40, CDOL2))[0])
    assert answer[0x9F27] == b"\x00"


def test_second_generate_ac_declined_by_issuer_gives_aac() -> None:
    card = powered()
    ready(card)
    arqc = flat(run(card, generate_ac(0x80))[0])[0x9F26]
    run(card, apdu(0x00, 0x82, 0, 0, issuer_auth(card, arqc)))
    answer = flat(run(card, generate_ac(0x40, CDOL2, {0x8A: b"05"}))[0])
    assert answer[0x9F27] == b"\x00"


def test_generate_ac_paths() -> None:
    card = powered()
    ready(card)
    assert run(card, generate_ac(0xC0))[1] == 0x6A86
    assert run(card, apdu(0x80, 0xAE, 0x80, 0x01, dol_data(CDOL1), 0))[1] == 0x6A86
    assert run(card, apdu(0x80, 0xAE, 0x81, 0x00, dol_data(CDOL1), 0))[1] == 0x6A86
    assert run(card, generate_ac(0x90))[1] == 0x6A81  # CDA: no certificates on this card
    assert run(card, apdu(0x80, 0xAE, 0x80, 0x00, dol_data(CDOL1)[:-1], 0))[1] == 0x6700


def test_aac_only_card() -> None:
    card = powered(faults=CardFaults(aac_only=True))
    ready(card)
    assert flat(run(card, generate_ac(0x80))[0])[0x9F27] == b"\x00"


def test_atc_increments_and_survives_power_cycles() -> None:
    card = powered()
    for expected in (1, 2, 3):
        ready(card)
        answer = flat(run(card, generate_ac(0x80))[0])
        assert int.from_bytes(answer[0x9F36], "big") == expected
        card.power_off()
        card.power_on()
    assert card.atc == 3


# --- GET DATA ---------------------------------------------------------------------------
def test_get_data() -> None:
    card = powered()
    assert flat(run(card, apdu(0x80, 0xCA, 0x9F, 0x36, None, 0))[0]) == {0x9F36: b"\x00\x00"}
    assert flat(run(card, apdu(0x80, 0xCA, 0x9F, 0x17, None, 0))[0]) == {0x9F17: b"\x03"}
    ready(card)
    run(card, generate_ac(0x80))
    assert flat(run(card, apdu(0x80, 0xCA, 0x9F, 0x13, None, 0))[0]) == {0x9F13: b"\x00\x01"}
    assert flat(run(card, apdu(0x80, 0xCA, 0x9F, 0x36, None, 0))[0]) == {0x9F36: b"\x00\x01"}
    assert run(card, apdu(0x80, 0xCA, 0x9F, 0x4F, None, 0))[1] == 0x6A88
    assert run(card, apdu(0x80, 0xCA, 0x9F, 0x36, b"\x00", 0))[1] == 0x6700


# --- malformed commands -----------------------------------------------------------------
@pytest.mark.parametrize(("command", "sw"), [
    (b"", 0x6700),
    (b"\x00\xA4\x04", 0x6700),
    (bytes.fromhex("00A4040006A000000333"), 0x6700),  # Lc says 6, 5 follow
    (bytes.fromhex("00A4040000000E"), 0x6700),  # extended length
    (bytes.fromhex("0020008000"), 0x6D00),  # VERIFY is not supported
    (bytes.fromhex("00CA9F3600"), 0x6E00),  # GET DATA is proprietary class 80
    (bytes.fromhex("80A4040000"), 0x6E00),
    (bytes.fromhex("FFA4040000"), 0x6E00),
])
def test_malformed_commands(command: bytes, sw: int) -> None:
    assert run(powered(), command)[1] == sw


# --- T=0 transmission -------------------------------------------------------------------
def test_t0_case_4_answers_61xx_and_get_response() -> None:
    card = powered(t0=True)
    data, sw = run(card, select(card.aid))
    assert data == b""
    assert sw >> 8 == 0x61
    length = sw & 0xFF
    first, sw = run(card, apdu(0x00, 0xC0, 0, 0, None, 10))
    assert len(first) == 10
    assert sw == 0x6100 | (length - 10)
    assert run(card, apdu(0x00, 0xC0, 0, 0, None, length))[1] == 0x6C00 | (length - 10)
    rest, sw = run(card, apdu(0x00, 0xC0, 0, 0, None, length - 10))
    assert sw == 0x9000
    assert flat(first + rest)[0x84] == card.aid
    assert run(card, apdu(0x00, 0xC0, 0, 0, None, 0))[1] == 0x6985  # nothing pending


def test_t0_wrong_le_answers_6cxx() -> None:
    card = powered(t0=True)
    run(card, select(card.aid))
    data, sw = run(card, read_record(2, 1, le=0))
    assert (data, sw >> 8) == (b"", 0x6C)
    data, sw = run(card, read_record(2, 1, le=sw & 0xFF))
    assert sw == 0x9000
    assert data[0] == 0x70


def test_t0_get_response_paths() -> None:
    card = powered(t0=True)
    run(card, select(card.aid))
    assert run(card, apdu(0x00, 0xC0, 1, 0, None, 5))[1] == 0x6A86
    assert run(card, apdu(0x80, 0xC0, 0, 0, None, 5))[1] == 0x6E00
    assert run(card, apdu(0x00, 0xC0, 0, 0, b"\x01", 5))[1] == 0x6700
    # any other command drops data that was not fetched
    run(card, select(card.aid))
    run(card, apdu(0x80, 0xCA, 0x9F, 0x36, None, 5))
    assert run(card, apdu(0x00, 0xC0, 0, 0, None, 5))[1] == 0x6985


# --- robustness -------------------------------------------------------------------------
def valid_commands() -> list[bytes]:
    return [select(PSE_NAME), select(DEBIT.aid or b""), gpo(), read_record(2, 1),
            generate_ac(0x80), generate_ac(0x40, CDOL2), apdu(0x80, 0xCA, 0x9F, 0x36, None, 0),
            apdu(0x00, 0xC0, 0, 0, None, 0)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(valid_commands())))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(("flip", "cut", "insert")))
        if op == "flip" and base:
            i = draw(st.integers(0, len(base) - 1))
            base[i] = draw(st.integers(0, 255))
        elif op == "cut" and base:
            del base[draw(st.integers(0, len(base) - 1)):]
        else:
            base.insert(draw(st.integers(0, len(base))), draw(st.integers(0, 255)))
    return bytes(base)


@settings(max_examples=300, deadline=None)
@given(commands=st.lists(st.one_of(st.binary(max_size=300), mutated()), max_size=12),
       t0=st.booleans(), contactless=st.booleans())
@example(commands=[b"\x80\xAE\x80\x00"], t0=False, contactless=False)
def test_any_command_sequence_gets_a_status_word(commands: list[bytes], t0: bool,
                                                 contactless: bool) -> None:
    card = powered(t0=t0, contactless=contactless)
    for command in [select(PPSE_NAME if contactless else PSE_NAME), *commands]:
        response = card.process(command)
        assert len(response) >= 2
        assert response[-2] in (0x90, 0x61, 0x6C, 0x62, 0x67, 0x69, 0x6A, 0x6D, 0x6E)
