"""ISO 8583:1987 dialect: the standard field table with ASCII encodings.

Framing: ``len(2, binary) | MTI(4, ASCII) | bitmap(8 or 16, binary) | fields``.
Numeric data and LLVAR/LLLVAR prefixes are ASCII digits; binary fields are raw
bytes. Network management is 0800 with F70; reversals carry F90 original data
elements (MTI n4 + STAN n6 + transmission date-time n10 + acquirer n11 +
forwarding n11). MAC: ANSI X9.19 in F64 (F128 with a secondary bitmap).
"""

from __future__ import annotations

from iso8583.dialect import DEFAULT_F55_TAGS, DialectSettings, DialectSpec, TransactionProfile
from iso8583.fields import Enc, FieldSpec, Kind, LenType, Sensitive

F, LL, LLL = LenType.FIXED, LenType.LL, LenType.LLL
N, Z, B, AN, ANS = Kind.N, Kind.Z, Kind.B, Kind.AN, Kind.ANS


def _f(number: int, name: str, kind: Kind, length: int, len_type: LenType = F,
       sensitive: Sensitive | None = None) -> FieldSpec:
    return FieldSpec(number, name, kind, length, len_type, len_enc=Enc.ASCII,
                     data_enc=Enc.ASCII, sensitive=sensitive)


_TABLE: list[FieldSpec] = [
    _f(2, "Primary account number", N, 19, LL, Sensitive.PAN),
    _f(3, "Processing code", N, 6),
    _f(4, "Amount, transaction", N, 12),
    _f(5, "Amount, settlement", N, 12),
    _f(6, "Amount, cardholder billing", N, 12),
    _f(7, "Transmission date and time (MMDDhhmmss)", N, 10),
    _f(8, "Amount, cardholder billing fee", N, 8),
    _f(9, "Conversion rate, settlement", N, 8),
    _f(10, "Conversion rate, cardholder billing", N, 8),
    _f(11, "System trace audit number", N, 6),
    _f(12, "Time, local transaction (hhmmss)", N, 6),
    _f(13, "Date, local transaction (MMDD)", N, 4),
    _f(14, "Date, expiration (YYMM)", N, 4),
    _f(15, "Date, settlement", N, 4),
    _f(16, "Date, conversion", N, 4),
    _f(17, "Date, capture", N, 4),
    _f(18, "Merchant type", N, 4),
    _f(19, "Acquiring institution country code", N, 3),
    _f(20, "PAN extended, country code", N, 3),
    _f(21, "Forwarding institution country code", N, 3),
    _f(22, "POS entry mode", N, 3),
    _f(23, "Card sequence number", N, 3),
    _f(24, "Network international identifier", N, 3),
    _f(25, "POS condition code", N, 2),
    _f(26, "POS PIN capture code", N, 2),
    _f(27, "Authorization id response length", N, 1),
    _f(28, "Amount, transaction fee (x+n8)", ANS, 9),
    _f(29, "Amount, settlement fee (x+n8)", ANS, 9),
    _f(30, "Amount, transaction processing fee (x+n8)", ANS, 9),
    _f(31, "Amount, settlement processing fee (x+n8)", ANS, 9),
    _f(32, "Acquiring institution id", N, 11, LL),
    _f(33, "Forwarding institution id", N, 11, LL),
    _f(34, "Primary account number, extended", ANS, 28, LL, Sensitive.PAN),
    _f(35, "Track 2 data", Z, 37, LL, Sensitive.TRACK),
    _f(36, "Track 3 data", Z, 104, LLL, Sensitive.TRACK),
    _f(37, "Retrieval reference number", AN, 12),
    _f(38, "Authorization id response", AN, 6),
    _f(39, "Response code", AN, 2),
    _f(40, "Service restriction code", AN, 3),
    _f(41, "Card acceptor terminal id", ANS, 8),
    _f(42, "Card acceptor id", ANS, 15),
    _f(43, "Card acceptor name/location", ANS, 40),
    _f(44, "Additional response data", ANS, 25, LL),
    _f(45, "Track 1 data", ANS, 76, LL, Sensitive.TRACK),
    _f(46, "Additional data - ISO", ANS, 999, LLL),
    _f(47, "Additional data - national", ANS, 999, LLL),
    _f(48, "Additional data - private", ANS, 999, LLL),
    _f(49, "Currency code, transaction", AN, 3),
    _f(50, "Currency code, settlement", AN, 3),
    _f(51, "Currency code, cardholder billing", AN, 3),
    FieldSpec(52, "PIN data", B, 8, sensitive=Sensitive.PIN),
    _f(53, "Security related control information", N, 16),
    _f(54, "Additional amounts", ANS, 120, LLL),
    FieldSpec(55, "ICC system related data", B, 255, LLL, len_enc=Enc.ASCII),
    *(_f(i, f"Reserved ({i})", ANS, 999, LLL) for i in range(56, 62)),
    # the sign-on answer's working keys (hex, under the TMK): hidden like CUP's F62
    _f(62, "Reserved (62)", ANS, 999, LLL, Sensitive.KEY),
    _f(63, "Reserved (63)", ANS, 999, LLL),
    FieldSpec(64, "Message authentication code", B, 8),
    _f(66, "Settlement code", N, 1),
    _f(67, "Extended payment code", N, 2),
    _f(68, "Receiving institution country code", N, 3),
    _f(69, "Settlement institution country code", N, 3),
    _f(70, "Network management information code", N, 3),
    _f(71, "Message number", N, 4),
    _f(72, "Message number, last", N, 4),
    _f(73, "Date, action (YYMMDD)", N, 6),
    _f(74, "Credits, number", N, 10),
    _f(75, "Credits, reversal number", N, 10),
    _f(76, "Debits, number", N, 10),
    _f(77, "Debits, reversal number", N, 10),
    _f(78, "Transfer, number", N, 10),
    _f(79, "Transfer, reversal number", N, 10),
    _f(80, "Inquiries, number", N, 10),
    _f(81, "Authorizations, number", N, 10),
    _f(82, "Credits, processing fee amount", N, 12),
    _f(83, "Credits, transaction fee amount", N, 12),
    _f(84, "Debits, processing fee amount", N, 12),
    _f(85, "Debits, transaction fee amount", N, 12),
    _f(86, "Credits, amount", N, 16),
    _f(87, "Credits, reversal amount", N, 16),
    _f(88, "Debits, amount", N, 16),
    _f(89, "Debits, reversal amount", N, 16),
    _f(90, "Original data elements", N, 42),
    _f(91, "File update code", AN, 1),
    _f(92, "File security code", AN, 2),
    _f(93, "Response indicator", AN, 5),
    _f(94, "Service indicator", AN, 7),
    _f(95, "Replacement amounts", AN, 42),
    FieldSpec(96, "Message security code", B, 8),
    _f(97, "Amount, net settlement (x+n16)", ANS, 17),
    _f(98, "Payee", ANS, 25),
    _f(99, "Settlement institution id", N, 11, LL),
    _f(100, "Receiving institution id", N, 11, LL),
    _f(101, "File name", ANS, 17, LL),
    _f(102, "Account id 1", ANS, 28, LL),
    _f(103, "Account id 2", ANS, 28, LL),
    _f(104, "Transaction description", ANS, 100, LLL),
    *(_f(i, f"Reserved ({i})", ANS, 999, LLL) for i in range(105, 128)),
    FieldSpec(128, "Message authentication code", B, 8),
]
FIELDS: dict[int, FieldSpec] = {s.number: s for s in _TABLE}

T = TransactionProfile
TRANSACTIONS: dict[str, TransactionProfile] = {t.name: t for t in (
    T("sign_on", "0800", net_code="001", on_timeout="retry"),
    T("sale", "0200", "000000", "00", on_timeout="reverse", moves_money=True),
    T("void", "0200", "020000", "00", on_timeout="reverse", moves_money=True),
    T("refund", "0200", "200000", "00", on_timeout="reverse", moves_money=True),
    T("reversal", "0400", on_timeout="resend", moves_money=True),
    T("balance", "0200", "310000", "00"),
    T("settlement", "0500", on_timeout="retry"),
    T("echo", "0800", net_code="301"),
    T("sign_off", "0800", net_code="002"),
    T("key_change", "0800", net_code="161"),
)}

SPEC = DialectSpec(
    name="iso87",
    title="ISO 8583:1987",
    fields=FIELDS,
    mti_enc=Enc.ASCII,
    bitmap_enc=Enc.BINARY,
    transactions=TRANSACTIONS,
    settings=DialectSettings(
        refund_mti="0200",  # online refund; "0220" makes it an advice
        refund_reversible=True,
        refund_carries_f55=True,
        reversal_original_data="f90",
        card_organisation_field=None,
        pin_block_format=0,
        security_control="2600000000000000",  # F53 with a format 0 PIN block
        currency="156",
        mac="x919",
        f55_tags=(*DEFAULT_F55_TAGS, 0x5F34),  # the PAN sequence number rides in F55 too
    ),
)
