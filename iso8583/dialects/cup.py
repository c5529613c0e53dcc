"""China UnionPay POS dialect (the default): field table, framing and transactions.

Framing: ``len(2, binary) | TPDU(5: 60 DDDD SSSS) | header(6, BCD) | MTI(2, BCD) |
bitmap(8, binary) | fields``. Variable lengths are BCD: one byte for LLVAR, two
for LLLVAR; n/z lengths count digits, b/an/ans lengths count bytes. See
DESIGN.md section 4 for the transaction table this module encodes.
"""

from __future__ import annotations

from iso8583.dialect import BatchUploadProfile, DialectSettings, DialectSpec, TransactionProfile
from iso8583.fields import FieldSpec, LenType, Sensitive, an, ans, b, n, nvar, z

LL, LLL = LenType.LL, LenType.LLL

FIELDS: dict[int, FieldSpec] = {s.number: s for s in (
    nvar(2, "Primary account number", 19, sensitive=Sensitive.PAN),
    n(3, "Processing code", 6),
    n(4, "Amount, transaction", 12),
    n(11, "System trace audit number", 6),
    n(12, "Time, local transaction (hhmmss)", 6),
    n(13, "Date, local transaction (MMDD)", 4),
    n(14, "Date, expiration (YYMM)", 4),
    n(15, "Date, settlement (MMDD)", 4),
    n(22, "POS entry mode", 3, align="left"),
    n(23, "Card sequence number", 3, align="right"),
    n(25, "POS condition code", 2),
    n(26, "POS PIN capture code", 2),
    nvar(32, "Acquiring institution id", 11),
    z(35, "Track 2 data", 37),
    z(36, "Track 3 data", 104, LLL),
    an(37, "Retrieval reference number", 12),
    an(38, "Authorization id response", 6),
    an(39, "Response code", 2),
    ans(41, "Card acceptor terminal id", 8),
    ans(42, "Card acceptor id", 15),
    ans(44, "Additional response data", 25, LL),
    nvar(48, "Additional data - private", 322, LLL),
    an(49, "Currency code, transaction", 3),
    b(52, "PIN data", 8, sensitive=Sensitive.PIN),
    n(53, "Security related control information", 16),
    ans(54, "Additional amounts", 20, LLL),
    b(55, "ICC system related data", 255, LLL),
    nvar(60, "Reserved private (60: type, batch, net code, ...)", 26, LLL),
    nvar(61, "Original message data", 29, LLL),
    b(62, "Reserved private (62)", 512, LLL, sensitive=Sensitive.KEY),
    ans(63, "Reserved private (63)", 163, LLL),
    b(64, "Message authentication code", 8),
)}

T = TransactionProfile
TRANSACTIONS: dict[str, TransactionProfile] = {t.name: t for t in (
    T("sign_on", "0800", f60_type="00", net_code="003", on_timeout="retry"),
    T("sale", "0200", "000000", "00", "22", "000", "reverse", moves_money=True),
    T("void", "0200", "200000", "00", "23", "000", "reverse", moves_money=True),
    T("refund", "0220", "200000", "00", "25", "000", "resend", moves_money=True),
    T("reversal", "0400", on_timeout="resend", moves_money=True),
    T("balance", "0200", "310000", "00", "01", "000"),
    T("settlement", "0500", f60_type="00", net_code="201", on_timeout="retry"),
    T("batch_upload", "0320", f60_type="00", net_code="201", on_timeout="retry"),
    T("batch_upload_icc", "0320", f60_type="00", net_code="203", on_timeout="retry"),
    T("batch_upload_end", "0320", f60_type="00", net_code="202", on_timeout="retry"),
    T("sign_off", "0820", f60_type="00", net_code="002"),
    T("echo", "0820", f60_type="00", net_code="301"),
)}

SPEC = DialectSpec(
    name="cup",
    title="China UnionPay POS",
    fields=FIELDS,
    tpdu=True,
    header_len=6,
    default_header=bytes.fromhex("602200000000"),
    transactions=TRANSACTIONS,
    settings=DialectSettings(
        refund_mti="0220",  # refunds go as advices
        refund_reversible=False,  # a timed-out refund is resent, never reversed
        refund_carries_f55=False,
        reversal_original_data="f61",  # reversal copies the original's fields
        card_organisation_field=63,
        pin_block_format=0,
        security_control="2600000000000000",  # F53: format 0, double-length TDES
        currency="156",
        mac="cup",
        # non-chip items 8 per 0320 in F48 (201), chip items one each with F55 (203),
        # refunds (0220 advices) one each with their fields (201), the end (202)
        batch_upload=BatchUploadProfile(),
    ),
)
