"""Response codes (F39) the acquirer host emulator answers with, and why.

Only codes of ISO 8583:1987 and the CUP POS table are used; the choice for each
rule is documented in ``docs/host-emulator.md``.
"""

from __future__ import annotations

from typing import Final

APPROVED: Final = "00"
INVALID_MERCHANT: Final = "03"  # unknown TID / TID-MID pair: the connection is closed
DO_NOT_HONOUR: Final = "05"  # also: ARQC does not verify
INVALID_TRANSACTION: Final = "12"  # void/refund of something that cannot be voided/refunded
INVALID_AMOUNT: Final = "13"  # zero, negative or malformed amount, wrong currency
INVALID_CARD: Final = "14"  # unknown or blocked card; refund/void with another card
ORIGINAL_NOT_FOUND: Final = "25"  # no approved original for F37/F61
FORMAT_ERROR: Final = "30"  # mandatory field missing or unparsable
LOST_CARD: Final = "41"
INSUFFICIENT_FUNDS: Final = "51"
EXPIRED_CARD: Final = "54"
WRONG_PIN: Final = "55"
EXCEEDS_LIMIT: Final = "61"
ORIGINAL_AMOUNT_MISMATCH: Final = "64"  # refund over the refundable rest, void for another amount
SIGN_ON_AGAIN: Final = "77"  # CUP: financial request before sign-on (no working keys)
DUPLICATE: Final = "94"  # a different message reuses (TID, batch, STAN, MTI)
SYSTEM_ERROR: Final = "96"
ISSUER_TIMEOUT: Final = "98"
MAC_ERROR: Final = "A0"  # request MAC does not verify: nothing booked, answer not MACed

#: Magic amounts: ``amount % 100`` (the fen part) forces this answer on a sale or
#: refund after the MAC, PIN and ARQC checks pass.  ``.00`` and every other
#: ending mean "no forced code".
MAGIC_AMOUNTS: Final[dict[int, str]] = {
    5: DO_NOT_HONOUR,
    12: INVALID_TRANSACTION,
    13: INVALID_AMOUNT,
    14: INVALID_CARD,
    41: LOST_CARD,
    51: INSUFFICIENT_FUNDS,
    54: EXPIRED_CARD,
    55: WRONG_PIN,
    61: EXCEEDS_LIMIT,
    96: SYSTEM_ERROR,
    98: ISSUER_TIMEOUT,
}


def forced_code(amount: int) -> str | None:
    """The response code a magic amount forces, or None for a normal amount."""
    return MAGIC_AMOUNTS.get(amount % 100)
