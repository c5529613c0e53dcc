"""The test-card catalogue shared by the acquirer emulator and the virtual cards.

One record per card: what the chip personalises (PAN, expiry, PSN, AID, label,
issuer master key for application cryptograms) and what the issuer knows
(account kind, opening balance or credit limit, PIN, status). The host checks a
PIN block and an ARQC against the same record the virtual card was built from,
so an end-to-end test needs no other configuration.

Only test numbers live here: Luhn-valid PANs in test ranges and public test
keys. Nothing here is a real card.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AccountKind(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class CardStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"  # issuer answers 14 / the chip application is blocked
    EXPIRED = "expired"  # expiry in the past: issuer answers 54
    LOST = "lost"


@dataclass(frozen=True)
class TestCard:
    """One test card and its issuer account."""

    name: str
    scheme: str  # card organisation as sent in F63 (CUP, VIS, MCC)
    pan: str
    psn: str  # PAN sequence number, F23 / tag 5F34 (2 digits)
    expiry: str  # YYMM, F14 / tag 5F24 (as YYMMDD on the chip, last day of month)
    service_code: str  # 3 digits in track 2; first digit 2 or 6 means chip card
    pin: str | None  # online PIN the issuer checks; None: the card has no PIN
    aid: bytes | None  # None: magnetic-stripe only
    label: str  # application label, tag 50
    contact: bool
    contactless: bool
    account: AccountKind
    opening_balance: int  # fen; for credit cards the credit limit
    status: CardStatus
    imk_ac: bytes  # issuer master key for application cryptograms (16 bytes, test key)
    #: the cryptogram version the chip is personalised with: a key of
    #: :data:`iso8583.crypto.emv.CVNS` (how it derives keys, lays out 9F10, MACs and
    #: checks the ARPC). Card and host read it from here, never from the scheme.
    cvn: str = "cup-01"

    @property
    def pin_required(self) -> bool:
        return self.pin is not None

    @property
    def track2(self) -> str:
        """Track-2 equivalent data with ``D`` as separator (F35 / tag 57)."""
        return f"{self.pan}D{self.expiry}{self.service_code}0000000000"

    @property
    def chip(self) -> bool:
        return self.aid is not None


AID_CUP_DEBIT = bytes.fromhex("A000000333010101")
AID_CUP_CREDIT = bytes.fromhex("A000000333010102")
AID_CUP_QUASI_CREDIT = bytes.fromhex("A000000333010103")
AID_VISA = bytes.fromhex("A0000000031010")
AID_MASTERCARD = bytes.fromhex("A0000000041010")

_K = bytes.fromhex  # keeps the table below readable

CARDS: tuple[TestCard, ...] = (
    TestCard("cup-debit", "CUP", "6225880000000019", "01", "3012", "220", "123456",
             AID_CUP_DEBIT, "UnionPay Debit", True, True, AccountKind.DEBIT,
             10_000_000, CardStatus.ACTIVE, _K("0123456789ABCDEFFEDCBA9876543210")),
    TestCard("cup-credit", "CUP", "6250000000000012", "01", "2912", "220", "111111",
             AID_CUP_CREDIT, "UnionPay Credit", True, True, AccountKind.CREDIT,
             5_000_000, CardStatus.ACTIVE, _K("11112222333344445555666677778888")),
    TestCard("visa-credit", "VIS", "4761739001010010", "01", "3112", "201", None,
             AID_VISA, "VISA CREDIT", True, True, AccountKind.CREDIT,
             2_000_000, CardStatus.ACTIVE, _K("2315208C9110AD402315208C9110AD40"), "visa-18"),
    TestCard("mastercard", "MCC", "5413330089010012", "00", "3006", "201", "4315",
             AID_MASTERCARD, "MASTERCARD", True, True, AccountKind.CREDIT,
             2_000_000, CardStatus.ACTIVE, _K("9E15204313F7318ACB79B90BD986AD29"), "mc-20"),
    TestCard("cup-magstripe", "CUP", "6222000000000090", "00", "3008", "101", "888888",
             None, "", False, False, AccountKind.DEBIT,
             1_000_000, CardStatus.ACTIVE, _K("00000000000000000000000000000000")),
    TestCard("cup-expired", "CUP", "6225880000000027", "01", "2001", "220", "123456",
             AID_CUP_DEBIT, "UnionPay Debit", True, False, AccountKind.DEBIT,
             1_000_000, CardStatus.EXPIRED, _K("3333444455556666777788889999AAAA")),
    TestCard("cup-blocked", "CUP", "6225880000000035", "01", "3012", "220", "123456",
             AID_CUP_DEBIT, "UnionPay Debit", True, False, AccountKind.DEBIT,
             1_000_000, CardStatus.BLOCKED, _K("44445555666677778888999900001111")),
    TestCard("cup-low-funds", "CUP", "6225880000000043", "01", "3012", "220", "123456",
             AID_CUP_DEBIT, "UnionPay Debit", True, True, AccountKind.DEBIT,
             1_000, CardStatus.ACTIVE, _K("5555666677778888999900001111AAAA")),
    TestCard("cup-nopin", "CUP", "6225880000000050", "01", "3012", "220", None,
             AID_CUP_DEBIT, "UnionPay Debit", True, True, AccountKind.DEBIT,
             10_000_000, CardStatus.ACTIVE, _K("6666777788889999AAAABBBBCCCCDDDD")),
)

_BY_NAME = {c.name: c for c in CARDS}
_BY_PAN = {c.pan: c for c in CARDS}


def card_by_name(name: str) -> TestCard:
    """The test card called ``name``; ``KeyError`` lists the known names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown test card {name!r}; known: {', '.join(_BY_NAME)}") from None


def card_by_pan(pan: str) -> TestCard | None:
    """The test card with this PAN, or None when the issuer does not know it."""
    return _BY_PAN.get(pan)
