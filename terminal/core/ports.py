"""The small interfaces the terminal core drives: host link, card reader, PIN pad, printer.

Adapters implement them over real I/O (``terminal.hostlink``, ``terminal.core.devices``);
tests implement them in memory (the acquirer host's rules called directly,
virtual cards in-process). Every call may block: the UI calls the core from
thread workers, and every adapter has a timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the screens import Step and Purpose before the protocol layer loads
    from iso8583.dialect import Frame
    from iso8583.message import Message
    from iso8583.terminal import CardInput

Clock = Callable[[], datetime]


class Purpose(StrEnum):
    """Why a card is read: decides the EMV transaction type and how the dialogue ends."""

    SALE = "sale"
    REFUND = "refund"
    VOID = "void"
    BALANCE = "balance"


class HostLink(Protocol):
    """One request out, its answer back; raises HostTimeoutError / HostLinkError."""

    def open(self) -> None:
        """Connect (if not connected); HostLinkError when the host cannot be reached."""

    def exchange(self, request: Message) -> Frame: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CardDecision:
    """The card's last word on a chip sale: the second GENERATE AC's cryptogram."""

    cryptogram_type: str  # TC (the card accepts) or AAC (the card declines)
    cryptogram: str  # 9F26 hex

    @property
    def accepted(self) -> bool:
        return self.cryptogram_type == "TC"


class HeldCard(Protocol):
    """A contact chip card left in the reader after it gave an ARQC, until the host answered.

    EMV completion: the host's answer goes back to the card (issuer authentication
    data, tag 91, and the response code), which then accepts (TC) or declines
    (AAC). Either call ends the hold and releases the reader; both are safe to
    call again.
    """

    def complete(self, *, issuer_auth_data: bytes | None, approved: bool,
                 response_code: str | None) -> CardDecision:
        """Second GENERATE AC; :class:`~terminal.core.errors.CardLeftReaderError` when the
        card was removed, DeviceError for any other card failure."""

    def release(self) -> None:
        """Let the card go without completing (nothing was sent for it)."""


@dataclass(frozen=True)
class CardRead:
    """A card as the terminal read it: message fields plus what the screens and receipts show.

    ``held`` is set when the card stays in the reader for the host's answer (a
    contact chip sale that gave an ARQC): the sale completes it, and anything that
    does not send the sale releases it (:meth:`release`).
    """

    card: CardInput
    masked_pan: str
    label: str | None = None
    aid: str | None = None  # hex
    contactless: bool = False
    wants_online_pin: bool = False  # the card's CVM list asks for an online PIN
    cryptogram_type: str | None = None  # ARQC, AAC, TC
    cryptogram: str | None = None  # 9F26 hex (printed on chip receipts)
    held: HeldCard | None = field(default=None, compare=False)

    def release(self) -> None:
        """Let a held card go (a read that will not be sent)."""
        if self.held is not None:
            self.held.release()

    def __repr__(self) -> str:
        return (f"CardRead(pan={self.masked_pan!r}, label={self.label!r}, "
                f"entry={self.card.entry!r}, cryptogram={self.cryptogram_type!r})")


class CardReader(Protocol):
    """Waits for a card, runs the card dialogue, returns the card's data.

    A contact chip read for a sale keeps the card (``CardRead.held``) until the
    sale completes or releases it; the next read releases a card still held.
    """

    def read_card(self, purpose: Purpose, amount: int, now: datetime, stan: str) -> CardRead: ...

    def describe(self) -> str: ...

    def cancel(self) -> None:
        """Stop waiting for a card (from another thread); the waiting read raises DeviceError."""


class PinEntry(Protocol):
    """The PIN pad: holds the PIK, returns encrypted PIN blocks (never a clear PIN)."""

    def load_working_key(self, encrypted_pik: bytes, check_value: bytes) -> None: ...

    def get_pin_block(self, pan: str, amount: int | None) -> bytes: ...

    def describe(self) -> str: ...


class Printer(Protocol):
    """Prints a rendered receipt (ESC/POS bytes for a real printer, text for a virtual one)."""

    def print_text(self, text: str) -> None: ...


class Progress(Protocol):
    """Told about every wait, so the screen can say what the terminal is doing."""

    def __call__(self, step: Step) -> None: ...


class Step(StrEnum):
    """The waits a cashier sees named on screen (zh/en in the UI catalogue)."""

    RESOLVING = "resolving"  # sending owed reversals/advices first
    SIGNING_ON = "signing_on"
    ECHO = "echo"
    READING_CARD = "reading_card"
    WAITING_PIN = "waiting_pin"
    CONNECTING = "connecting"
    SENDING = "sending"
    WAITING_HOST = "waiting_host"
    REVERSING = "reversing"
    RESENDING = "resending"
    UPLOADING = "uploading"
    PRINTING = "printing"


def no_progress(step: Step) -> None:
    """A progress sink that ignores every step (scripts, tests)."""
    del step
