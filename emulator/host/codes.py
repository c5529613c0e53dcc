"""The host emulator's magic amounts: which response code an amount forces.

The codes themselves, their texts and meaning live in :mod:`iso8583.responses`
(re-exported here for the host's rules); the choice of code for each rule is
documented in ``docs/host-emulator.md``.
"""

from __future__ import annotations

from typing import Final

from iso8583.responses import (
    APPROVED,
    DO_NOT_HONOUR,
    DUPLICATE,
    EXCEEDS_LIMIT,
    EXPIRED_CARD,
    FORMAT_ERROR,
    INSUFFICIENT_FUNDS,
    INVALID_AMOUNT,
    INVALID_CARD,
    INVALID_MERCHANT,
    INVALID_TRANSACTION,
    ISSUER_TIMEOUT,
    LOST_CARD,
    MAC_ERROR,
    ORIGINAL_AMOUNT_MISMATCH,
    ORIGINAL_NOT_FOUND,
    SIGN_ON_AGAIN,
    SYSTEM_ERROR,
    WRONG_PIN,
)

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


__all__ = [
    "APPROVED", "DO_NOT_HONOUR", "DUPLICATE", "EXCEEDS_LIMIT", "EXPIRED_CARD", "FORMAT_ERROR",
    "INSUFFICIENT_FUNDS", "INVALID_AMOUNT", "INVALID_CARD", "INVALID_MERCHANT",
    "INVALID_TRANSACTION", "ISSUER_TIMEOUT", "LOST_CARD", "MAC_ERROR", "MAGIC_AMOUNTS",
    "ORIGINAL_AMOUNT_MISMATCH", "ORIGINAL_NOT_FOUND", "SIGN_ON_AGAIN", "SYSTEM_ERROR",
    "WRONG_PIN", "forced_code",
]
