"""What thread workers post back to their screen: past-tense messages, one per event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from terminal.core.ports import Step

if TYPE_CHECKING:  # types only: the login screen comes up before the till loads
    from terminal.core.ports import CardRead as CoreCardRead
    from terminal.core.till import Outcome, SettleOutcome


@dataclass
class StepReached(Message):
    """The core is now waiting on ``step`` (reading the card, waiting for the host...)."""

    step: Step


@dataclass
class CardRead(Message):
    """A card was read."""

    card: CoreCardRead


@dataclass
class SaleSent(Message):
    outcome: Outcome


@dataclass
class RefundSent(Message):
    outcome: Outcome


@dataclass
class VoidSent(Message):
    outcome: Outcome


@dataclass
class SignedOn(Message):
    batch: str


@dataclass
class Settled(Message):
    outcome: SettleOutcome


@dataclass
class Printed(Message):
    printed: bool  # False: no printer, the screen showed a preview only


@dataclass
class CoreFailed(Message):
    """A core call raised: ``error`` carries the cashier's text (or is a fault to log)."""

    error: BaseException
