"""Unit tests of the EMV card dialogue against a scripted card: every status-word path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import pytest

from drivers.emv import (
    AID_CUP_CREDIT,
    AID_CUP_DEBIT,
    AID_MASTERCARD,
    AID_VISA,
    DEFAULT_F55_TAGS,
    F55_TAGS_WITH_PSN,
    CardReadResult,
    CryptogramError,
    CryptogramType,
    EmvKernel,
    TerminalConfig,
    TransactionData,
    TransactionType,
    read_card,
)
from drivers.errors import (
    CardBlockedError,
    CardDataError,
    CardError,
    CardRemovedError,
    NoApplicationError,
)
from iso8583 import tlv
from tests.drivers.emv_fakes import FakeApp, FakeCard

DATE = dt.date(2026, 11, 23)
UN = bytes.fromhex("A1B2C3D4")
AC_INPUT_TAGS = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82, 0x9F36)


def txn(kind: TransactionType = TransactionType.REFUND, amount: int = 1234) -> TransactionData:
    return TransactionData(kind, amount, DATE, dt.time(12, 34, 56), unpredictable_number=UN,
                           sequence_counter=42)


def cup(**kw: object) -> FakeApp:
    return FakeApp(AID_CUP_DEBIT, **kw)  # type: ignore[arg-type]


def visa(**kw: object) -> FakeApp:
    base: dict[str, object] = {"pan": "4761739001010010", "label": "VISA CREDIT",
                               "service_code": "201"}
    base.update(kw)
    return FakeApp(AID_VISA, **base)  # type: ignore[arg-type]


AAC = TerminalConfig(refund_ends_with="aac")
RECORDS = TerminalConfig(refund_ends_with="records")


# --- happy paths ------------------------------------------------------------------


def test_contact_sale_with_pse_asks_arqc() -> None:
    card = FakeCard([cup()])
    res = read_card(card, txn(TransactionType.SALE))
    assert card.commands() == ["A4", "B2", "B2", "A4", "A8", "B2", "B2", "AE"]
    assert card.log[-1].apdu[2] == 0x80  # P1: ARQC
    assert res.pan == "6225880000000019"
    assert res.psn == "01"
    assert res.card_sequence_number == "001"
    assert res.expiry == "3012"
    assert res.track2 == "6225880000000019D30122200000000000"
    assert res.aid == AID_CUP_DEBIT
    assert res.label == "UnionPay Debit"
    assert not res.contactless
    assert res.entry_mode == "051"
    assert res.entry_mode_for(pin_entered=False) == "052"
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.ARQC
    assert res.cryptogram.requested is CryptogramType.ARQC
    assert res.cryptogram.atc == b"\x00\x07"
    assert res.tags[0x9C] == b"\x00"
    assert res.tags[0x9F02] == bytes.fromhex("000000001234")
    assert res.tags[0x9A] == bytes.fromhex("261123")
    assert res.apdu_count == len(card.log)


def test_cdol1_data_is_the_terminal_data() -> None:
    card = FakeCard([cup()])
    read_card(card, txn(TransactionType.SALE), AAC)
    gen_ac = card.log[-1].apdu
    expected = (bytes.fromhex("000000001234") + bytes(6) + b"\x01\x56"
                + bytes.fromhex("8000000000") + b"\x01\x56" + bytes.fromhex("261123")
                + b"\x00" + UN)
    assert gen_ac[5:5 + gen_ac[4]] == expected


def test_refund_aac_flow_asks_aac() -> None:
    card = FakeCard([cup()])
    res = read_card(card, txn(), AAC)
    assert card.log[-1].apdu[:3] == bytes.fromhex("80AE00")
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.AAC
    assert res.tags[0x9C] == b"\x20"


def test_refund_records_flow_stops_after_read_record() -> None:
    card = FakeCard([cup()])
    res = read_card(card, txn(), RECORDS)
    assert "AE" not in card.commands()
    assert card.commands()[-1] == "B2"
    assert res.cryptogram is None
    f55 = tlv.decode_flat(res.f55())
    assert 0x9F26 not in f55
    assert f55[0x9C] == b"\x20"


def test_balance_asks_arqc() -> None:
    card = FakeCard([cup()])
    res = read_card(card, txn(TransactionType.BALANCE, 0))
    assert res.tags[0x9C] == b"\x31"
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.ARQC


def test_format2_gpo_and_generate_ac() -> None:
    card = FakeCard([cup(gpo_format=2, ac_format=2)])
    res = read_card(card, txn(TransactionType.SALE))
    assert res.cryptogram is not None
    assert res.cryptogram.ac == bytes.fromhex("1122334455667788")
    assert res.tags[0x82] == b"\x19\x80"


def test_f55_has_ac_input_tags_and_no_clear_card_data() -> None:
    res = read_card(FakeCard([cup()]), txn(TransactionType.SALE))
    f55 = res.f55()
    flat = tlv.decode_flat(f55)
    for tag in AC_INPUT_TAGS:
        assert tag in flat, tlv.format_tag(tag)
    assert flat[0x9F03] == bytes(6)
    assert 0x5A not in flat
    assert 0x57 not in flat
    assert 0x5F34 not in flat
    assert [i.tag for i in tlv.decode(f55)] == [t for t in DEFAULT_F55_TAGS if t in flat]
    assert tlv.decode_flat(res.f55(F55_TAGS_WITH_PSN))[0x5F34] == b"\x01"


def test_repr_and_logs_never_show_the_pan(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="drivers.emv"):
        res = read_card(FakeCard([cup()]), txn(TransactionType.SALE))
    for text in (repr(res), str(res), caplog.text):
        assert "6225880000000019" not in text
    assert "622588******0019" in repr(res)
    assert "622588******0019" in caplog.text


def test_result_is_frozen() -> None:
    res = read_card(FakeCard([cup()]), txn())
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.pan = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        res.tags[0x9F02] = b""  # type: ignore[index]


# --- application selection ----------------------------------------------------------


def test_pse_absent_falls_back_to_aid_list_with_next_aid_on_6A82() -> None:
    card = FakeCard([visa()], pse=False)
    res = read_card(card, txn(), AAC)
    selects = [e for e in card.log if e.apdu[1] == 0xA4]
    assert [e.sw for e in selects[:5]] == [0x6A82, 0x6A82, 0x6A82, 0x6A82, 0x9000]
    assert res.aid == AID_VISA
    assert res.pan == "4761739001010010"


def test_pse_lists_nothing_supported_falls_back_to_aid_list() -> None:
    other = FakeApp(bytes.fromhex("A0000000999999"), label="OTHER")
    card = FakeCard([other, visa(priority=None)])

    def hide_visa_in_pse(apdu: bytes, data: bytes, sw: int) -> tuple[bytes, int]:
        if apdu[:4] == bytes.fromhex("00B2020C"):
            return b"", 0x6A83
        return data, sw

    card.hook = hide_visa_in_pse
    assert read_card(card, txn(), AAC).aid == AID_VISA


def test_priority_order_and_no_priority_last() -> None:
    apps = [cup(priority=None), FakeApp(AID_CUP_CREDIT, pan="6250000000000012", priority=2),
            visa(priority=1)]
    assert read_card(FakeCard(apps), txn(), AAC).aid == AID_VISA
    assert read_card(FakeCard(apps, pse=False), txn(), AAC).aid == AID_VISA
    apps[2].priority = None
    assert read_card(FakeCard(apps), txn(), AAC).aid == AID_CUP_CREDIT


def test_partial_name_selection_follows_next_occurrence() -> None:
    long_aid = AID_VISA + b"\x01"
    card = FakeCard([FakeApp(long_aid, pan="4761739001010010")], pse=False)
    res = read_card(card, txn(), AAC)
    assert res.aid == long_aid
    assert any(e.apdu[:4] == bytes.fromhex("00A40402") for e in card.log)
    strict = TerminalConfig(partial_selection=False, refund_ends_with="aac")
    with pytest.raises(NoApplicationError):
        read_card(FakeCard([FakeApp(long_aid)], pse=False), txn(), strict)


def test_blocked_application_6283() -> None:
    with pytest.raises(CardBlockedError):
        read_card(FakeCard([cup(blocked=True)]), txn())
    with pytest.raises(CardBlockedError):
        read_card(FakeCard([cup(blocked=True)], pse=False), txn())


def test_blocked_application_skipped_when_another_is_usable() -> None:
    res = read_card(FakeCard([cup(blocked=True), visa(priority=2)]), txn(), AAC)
    assert res.aid == AID_VISA


def _sw_on(prefix: str, sw: int) -> object:
    def hook(apdu: bytes, data: bytes, old: int) -> tuple[bytes, int]:
        if apdu.hex().upper().startswith(prefix):
            return b"", sw
        return data, old
    return hook


@pytest.mark.parametrize("prefix", ["00A404000E315041", "00A4040008A000000333"])
def test_6A81_on_select_is_card_blocked(prefix: str) -> None:
    card = FakeCard([cup()], hook=_sw_on(prefix, 0x6A81))  # type: ignore[arg-type]
    with pytest.raises(CardBlockedError):
        read_card(card, txn())


def test_pse_6283_falls_back_to_aid_list() -> None:
    card = FakeCard([cup()], hook=_sw_on("00A404000E315041", 0x6283))  # type: ignore[arg-type]
    assert read_card(card, txn(), AAC).aid == AID_CUP_DEBIT


def test_no_supported_application() -> None:
    unknown = FakeApp(bytes.fromhex("A0000000999999"))
    with pytest.raises(NoApplicationError):
        read_card(FakeCard([unknown]), txn())
    with pytest.raises(NoApplicationError):
        read_card(FakeCard([unknown], pse=False), txn())
    with pytest.raises(NoApplicationError):
        read_card(FakeCard([unknown], contactless=True), txn())


def test_gpo_6985_moves_to_next_candidate() -> None:
    res = read_card(FakeCard([cup(gpo_sw=0x6985), visa(priority=2)]), txn(), AAC)
    assert res.aid == AID_VISA
    with pytest.raises(NoApplicationError):
        read_card(FakeCard([cup(gpo_sw=0x6985)]), txn())


def test_unknown_sw_on_gpo_is_a_card_error() -> None:
    with pytest.raises(CardError, match="GPO answered 6F00"):
        read_card(FakeCard([cup(gpo_sw=0x6F00)]), txn())


def test_final_select_naming_another_application_is_card_data_error() -> None:
    def rename(apdu: bytes, data: bytes, sw: int) -> tuple[bytes, int]:
        if apdu.startswith(bytes.fromhex("00A4040008")) and data:
            return data.replace(AID_CUP_DEBIT, AID_CUP_CREDIT), sw
        return data, sw
    with pytest.raises(CardDataError, match="another application"):
        read_card(FakeCard([cup()], hook=rename), txn())


# --- 61xx / 6Cxx ------------------------------------------------------------------


def _same_result(a: CardReadResult, b: CardReadResult) -> None:
    assert (a.pan, a.track2, a.expiry, a.psn, a.aid) == (b.pan, b.track2, b.expiry, b.psn, b.aid)
    assert a.f55() == b.f55()


@pytest.mark.parametrize("contactless", [False, True])
def test_61xx_is_followed_by_get_response(contactless: bool) -> None:
    plain = read_card(FakeCard([cup()], contactless=contactless), txn(TransactionType.SALE))
    card = FakeCard([cup()], contactless=contactless, chain61=True)
    chained = read_card(card, txn(TransactionType.SALE))
    _same_result(plain, chained)
    assert "C0" in card.commands()
    assert chained.apdu_count == len(card.log)


@pytest.mark.parametrize("contactless", [False, True])
def test_6Cxx_is_resent_with_le(contactless: bool) -> None:
    plain = read_card(FakeCard([cup()], contactless=contactless), txn(TransactionType.SALE))
    card = FakeCard([cup()], contactless=contactless, wrong_le=True)
    corrected = read_card(card, txn(TransactionType.SALE))
    _same_result(plain, corrected)
    assert any(e.sw >> 8 == 0x6C for e in card.log)
    resent = [e for prev, e in zip(card.log, card.log[1:], strict=False) if prev.sw >> 8 == 0x6C]
    assert all(e.apdu[-1] == prev_sw & 0xFF for e, prev_sw in
               zip(resent, [p.sw for p in card.log if p.sw >> 8 == 0x6C], strict=True))


def test_61xx_data_is_accumulated_across_get_responses() -> None:
    res_plain = read_card(FakeCard([cup()]), txn(TransactionType.SALE))

    class Split(FakeCard):
        """Hands out long answers in 16-byte pieces through 61xx."""

        def _answer(self, apdu: bytes) -> tuple[bytes, int]:
            if apdu[1] == 0xC0:
                piece, self._pending = self._pending[:16], self._pending[16:]
                return piece, (0x6110 if self._pending else 0x9000)
            data, sw = self._dispatch(apdu)
            if sw == 0x9000 and len(data) > 16:
                self._pending = data[16:]
                return data[:16], 0x6110
            return data, sw

    res = read_card(Split([cup()]), txn(TransactionType.SALE))
    _same_result(res_plain, res)


def test_endless_61xx_is_bounded() -> None:
    card = FakeCard([cup()], hook=lambda a, d, s: (b"", 0x6102))
    with pytest.raises(CardError, match="61xx/6Cxx"):
        read_card(card, txn())
    assert len(card.log) == TerminalConfig().max_chained + 1


def test_endless_6Cxx_is_bounded() -> None:
    card = FakeCard([cup()], hook=lambda a, d, s: (b"", 0x6C10))
    with pytest.raises(CardError, match="61xx/6Cxx"):
        read_card(card, txn())


# --- cryptograms ----------------------------------------------------------------


def test_tc_to_a_refund_is_rejected() -> None:
    with pytest.raises(CryptogramError, match="refund offline"):
        read_card(FakeCard([cup(ac_answer="TC")]), txn(), AAC)


def test_arqc_when_aac_asked_is_rejected() -> None:
    with pytest.raises(CryptogramError):
        read_card(FakeCard([cup(ac_answer="ARQC")]), txn(), AAC)


def test_tc_when_arqc_asked_is_rejected() -> None:
    with pytest.raises(CryptogramError):
        read_card(FakeCard([cup(ac_answer="TC")]), txn(TransactionType.SALE))


def test_aac_to_a_sale_is_returned_as_card_decline() -> None:
    res = read_card(FakeCard([cup(ac_answer="AAC")]), txn(TransactionType.SALE))
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.AAC
    assert res.cryptogram.requested is CryptogramType.ARQC


def test_rfu_cryptogram_type_is_card_data_error() -> None:
    def rfu(apdu: bytes, data: bytes, sw: int) -> tuple[bytes, int]:
        if apdu[:2] == b"\x80\xae":
            return data[:2] + b"\xc0" + data[3:], sw
        return data, sw
    with pytest.raises(CardDataError, match="RFU"):
        read_card(FakeCard([cup()], hook=rfu), txn(TransactionType.SALE))


def test_generate_ac_error_sw() -> None:
    card = FakeCard([cup()], hook=_sw_on("80AE", 0x6985))  # type: ignore[arg-type]
    with pytest.raises(CardError, match="GENERATE AC AAC answered 6985"):
        read_card(card, txn(), AAC)


# --- contactless ------------------------------------------------------------------


def test_contactless_uses_ppse_and_fills_ttq() -> None:
    card = FakeCard([cup()], contactless=True)
    res = read_card(card, txn(TransactionType.SALE))
    assert card.log[0].apdu[5:5 + 14] == b"2PAY.SYS.DDF01"
    assert res.contactless
    assert res.entry_mode == "071"
    gpo = next(e.apdu for e in card.log if e.apdu[1] == 0xA8)
    assert gpo[5] == 0x83
    assert gpo[7:11] == bytes.fromhex("26800080")  # TTQ, online cryptogram required for a sale
    assert res.tags[0x9F66] == bytes.fromhex("26800080")


def test_contactless_refund_ttq_does_not_force_online() -> None:
    res = read_card(FakeCard([cup()], contactless=True), txn(), RECORDS)
    assert res.tags[0x9F66] == bytes.fromhex("26000080")


def test_ppse_absent_is_no_application() -> None:
    with pytest.raises(NoApplicationError, match="PPSE"):
        read_card(FakeCard([cup()], contactless=True, ppse=False), txn())


def test_contactless_cryptogram_in_gpo_is_not_asked_again() -> None:
    card = FakeCard([cup(gpo_cryptogram=True, ac_answer="AAC")], contactless=True)
    res = read_card(card, txn(), AAC)
    assert "AE" not in card.commands()
    assert res.cryptogram is not None
    assert res.cryptogram.type is CryptogramType.AAC
    assert res.cryptogram.requested is None
    assert 0x9F26 in tlv.decode_flat(res.f55())


def test_contactless_tc_in_gpo_for_refund_is_rejected() -> None:
    card = FakeCard([cup(gpo_cryptogram=True, ac_answer="TC")], contactless=True)
    with pytest.raises(CryptogramError):
        read_card(card, txn(), RECORDS)


def test_contactless_pan_and_expiry_from_track2_when_records_omit_them() -> None:
    card = FakeCard([cup(omit=(0x5A, 0x5F24))], contactless=True)
    res = read_card(card, txn(), RECORDS)
    assert res.pan == "6225880000000019"
    assert res.expiry == "3012"


# --- malformed card data ------------------------------------------------------------


@pytest.mark.parametrize("tag", [0x5A, 0x57, 0x5F24])
def test_missing_mandatory_tag_contact(tag: int) -> None:
    with pytest.raises(CardDataError, match=tlv.format_tag(tag)):
        read_card(FakeCard([cup(omit=(tag,))]), txn(), RECORDS)


def test_missing_cdol1_only_matters_when_a_cryptogram_is_asked() -> None:
    read_card(FakeCard([cup(omit=(0x8C,))]), txn(), RECORDS)
    with pytest.raises(CardDataError, match="8C"):
        read_card(FakeCard([cup(omit=(0x8C,))]), txn(), AAC)


def test_pan_mismatch_between_5a_and_57() -> None:
    app = cup(extra_record_tags=b"")
    card = FakeCard([app])

    def other_pan(apdu: bytes, data: bytes, sw: int) -> tuple[bytes, int]:
        return data.replace(bytes.fromhex("6225880000000019D3"),
                            bytes.fromhex("6225880000000027D3")), sw
    card.hook = other_pan
    with pytest.raises(CardDataError, match="differ"):
        read_card(card, txn(), RECORDS)


def test_duplicate_tag_with_another_value() -> None:
    app = cup(extra_record_tags=tlv.encode_tlv(0x57, bytes.fromhex("6225880000000019D30122")))
    with pytest.raises(CardDataError, match="twice"):
        read_card(FakeCard([app]), txn(), RECORDS)


@pytest.mark.parametrize(
    ("afl", "match"),
    [
        ("080101", "multiple of 4"),
        ("00010100", "SFI"),
        ("08000100", "records"),
        ("08020100", "records"),
        ("08010102", "offline-auth"),
        ("08" "01" "FF" "00" "10" "01" "FF" "00", "at most"),
    ],
)
def test_bad_afl(afl: str, match: str) -> None:
    app = cup()
    app.afl = bytes.fromhex(afl)
    with pytest.raises(CardDataError, match=match):
        read_card(FakeCard([app]), txn(), RECORDS)


def test_read_record_not_found_is_a_card_error() -> None:
    app = cup()
    app.afl = bytes.fromhex("08010200")
    with pytest.raises(CardError, match="6A83"):
        read_card(FakeCard([app]), txn(), RECORDS)


def _rewrite(ins: int, fn: object) -> object:
    def hook(apdu: bytes, data: bytes, sw: int) -> tuple[bytes, int]:
        if apdu[1] == ins and sw == 0x9000:
            return fn(data), sw  # type: ignore[operator]
        return data, sw
    return hook


@pytest.mark.parametrize("ins", [0xA4, 0xB2, 0xA8, 0xAE])
def test_truncated_tlv(ins: int) -> None:
    card = FakeCard([cup()], hook=_rewrite(ins, lambda d: d[:-3]))  # type: ignore[arg-type]
    with pytest.raises(CardDataError):
        read_card(card, txn(TransactionType.SALE))


@pytest.mark.parametrize("ins", [0xA4, 0xB2, 0xA8, 0xAE])
def test_corrupt_tlv_length(ins: int) -> None:
    card = FakeCard([cup()],
                    hook=_rewrite(ins, lambda d: d[:1] + bytes((d[1] + 1,)) + d[2:]))  # type: ignore[arg-type]
    with pytest.raises(CardDataError):
        read_card(card, txn(TransactionType.SALE))


def test_wrong_record_template() -> None:
    card = FakeCard([cup()], hook=_rewrite(0xB2, lambda d: b"\x71" + d[1:]))  # type: ignore[arg-type]
    with pytest.raises(CardDataError, match="70"):
        read_card(card, txn())


def test_transport_out_of_range_sw() -> None:
    card = FakeCard([cup()], hook=lambda a, d, s: (d, 0x19000))
    with pytest.raises(CardError):
        read_card(card, txn())


# --- removal --------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 1, 3, 5, 7])
def test_card_removed_mid_read_propagates(after: int) -> None:
    with pytest.raises(CardRemovedError):
        read_card(FakeCard([cup()], remove_after=after), txn(TransactionType.SALE))


# --- configuration ----------------------------------------------------------------


def test_kernel_reuses_config() -> None:
    kernel = EmvKernel(TerminalConfig(aids=(AID_MASTERCARD, AID_VISA), refund_ends_with="aac"))
    assert kernel.read_card(FakeCard([visa()]), txn()).aid == AID_VISA
    with pytest.raises(NoApplicationError):
        kernel.read_card(FakeCard([cup()]), txn())


@pytest.mark.parametrize(
    "bad",
    [
        {"aids": ()},
        {"refund_ends_with": "tc"},
        {"country_code": b"\x01"},
        {"ttq": b"\x00"},
        {"ifd_serial": "1"},
        {"max_chained": 0},
    ],
)
def test_bad_terminal_config(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        TerminalConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [{"amount": -1}, {"amount": 10**12}, {"unpredictable_number": b"\x00"},
     {"sequence_counter": 10**8}, {"cvm_results": b""}],
)
def test_bad_transaction_data(bad: dict[str, object]) -> None:
    args: dict[str, object] = {"type": TransactionType.SALE, "amount": 1, "date": DATE}
    args.update(bad)
    with pytest.raises(ValueError):  # noqa: PT011
        TransactionData(**args)  # type: ignore[arg-type]


def test_unpredictable_number_is_random_when_not_given() -> None:
    t1 = TransactionData(TransactionType.SALE, 1, DATE)
    a = read_card(FakeCard([cup()]), t1)
    b = read_card(FakeCard([cup()]), t1)
    assert len(a.tags[0x9F37]) == 4
    assert a.tags[0x9F37] != b.tags[0x9F37]  # two 32-bit draws


# --- ISO 8583 fields ---------------------------------------------------------------


def test_message_fields_encode_in_the_cup_dialect() -> None:
    from iso8583.dialects import get_dialect
    from iso8583.message import Message

    res = read_card(FakeCard([cup()]), txn(), AAC)
    fields = res.message_fields(pin_entered=False)
    assert fields[2] == "6225880000000019"
    assert fields[14] == "3012"
    assert fields[22] == "052"
    assert fields[23] == "001"
    assert fields[35] == "6225880000000019D30122200000000000"
    assert fields[55] == res.f55()
    m = Message("0220")
    for number, value in fields.items():
        m[number] = value
    dialect = get_dialect("cup")
    back = dialect.decode(dialect.encode(m))
    assert {n: back.get(n) for n in fields} == fields
    no_psn = read_card(FakeCard([cup(psn=None)]), txn(), AAC)
    assert 23 not in no_psn.message_fields(pin_entered=True, f55_tags=None)
    assert 55 not in no_psn.message_fields(pin_entered=True, f55_tags=None)


def test_application_matched_by_two_terminal_aids_is_tried_once() -> None:
    config = TerminalConfig(aids=(AID_VISA[:5], AID_VISA), refund_ends_with="aac")
    card = FakeCard([visa(gpo_sw=0x6985)], pse=False)
    with pytest.raises(NoApplicationError):
        read_card(card, txn(), config)
    assert card.commands().count("A8") == 1
