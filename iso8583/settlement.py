"""Settlement totals as CUP POS field 48 carries them in 0500/0510.

Layout chosen (CUP POS message spec, field 48 in settlement, as implemented by
public CUP terminal code): two halves, domestic cards (内卡, card organisation
CUP) then foreign cards (外卡, every other organisation), each::

    debit amount n12 | debit count n3 | credit amount n12 | credit count n3 | result n1

62 digits in all.  Debit = approved sales still standing (not voided, not
reversed); credit = approved refunds still standing.  Voids are not counted: a
voided sale simply leaves the debit total.  The result digit is ``0`` in the
request; the host answers ``1`` (对账平, totals agree) or ``2`` (对账不平,
totals differ) per half and the terminal then batch-uploads.  Counts are
reduced modulo 1000 and amounts modulo 10^12 to fit the field, both sides the
same way, so a long-running load test can still settle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

_AMOUNT_MOD = 10**12
_COUNT_MOD = 1000
HALF_LEN = 31
FIELD_LEN = 2 * HALF_LEN


class SettleResult(StrEnum):
    """The reconciliation digit of each half of F48."""

    REQUEST = "0"
    BALANCED = "1"
    NOT_BALANCED = "2"
    ERROR = "3"


@dataclass(frozen=True)
class HalfTotals:
    """Debit and credit totals of one card group (domestic or foreign)."""

    debit_count: int = 0
    debit_amount: int = 0
    credit_count: int = 0
    credit_amount: int = 0

    def add_debit(self, amount: int) -> HalfTotals:
        return HalfTotals(self.debit_count + 1, self.debit_amount + amount,
                          self.credit_count, self.credit_amount)

    def add_credit(self, amount: int) -> HalfTotals:
        return HalfTotals(self.debit_count, self.debit_amount,
                          self.credit_count + 1, self.credit_amount + amount)

    def wire(self) -> str:
        """The 30 digits of this half without the result digit."""
        return (f"{self.debit_amount % _AMOUNT_MOD:012d}{self.debit_count % _COUNT_MOD:03d}"
                f"{self.credit_amount % _AMOUNT_MOD:012d}{self.credit_count % _COUNT_MOD:03d}")

    @classmethod
    def from_wire(cls, digits: str) -> HalfTotals:
        return cls(int(digits[12:15]), int(digits[0:12]), int(digits[27:30]), int(digits[15:27]))


@dataclass(frozen=True)
class SettlementTotals:
    """Terminal or host totals of one batch, split by card group."""

    domestic: HalfTotals = HalfTotals()
    foreign: HalfTotals = HalfTotals()

    def add(self, scheme: str, amount: int, *, credit: bool) -> SettlementTotals:
        """Totals with one more standing sale (debit) or refund (credit) of ``scheme``."""
        half = self.domestic if is_domestic(scheme) else self.foreign
        half = half.add_credit(amount) if credit else half.add_debit(amount)
        if is_domestic(scheme):
            return SettlementTotals(half, self.foreign)
        return SettlementTotals(self.domestic, half)

    def encode(self, domestic: SettleResult = SettleResult.REQUEST,
               foreign: SettleResult = SettleResult.REQUEST) -> str:
        """F48 digits with the given result digits."""
        return f"{self.domestic.wire()}{domestic.value}{self.foreign.wire()}{foreign.value}"

    @classmethod
    def decode(cls, f48: str) -> tuple[SettlementTotals, SettleResult, SettleResult]:
        """Parse F48; ``ValueError`` when it is not 62 digits with valid result digits."""
        if len(f48) != FIELD_LEN or not f48.isdigit():
            raise ValueError("settlement F48 must be 62 digits")
        try:
            dom_res = SettleResult(f48[30])
            for_res = SettleResult(f48[61])
        except ValueError:
            raise ValueError("settlement F48 result digit must be 0-3") from None
        totals = cls(HalfTotals.from_wire(f48[:30]), HalfTotals.from_wire(f48[31:61]))
        return totals, dom_res, for_res

    def agrees_with(self, other: SettlementTotals) -> tuple[bool, bool]:
        """(domestic agrees, foreign agrees) as the wire compares them."""
        return (self.domestic.wire() == other.domestic.wire(),
                self.foreign.wire() == other.foreign.wire())


def is_domestic(scheme: str) -> bool:
    """CUP cards settle in the domestic half, every other organisation in the foreign one."""
    return scheme.strip().upper() == "CUP"
