"""EMV card dialogue for refunds, sales and balance enquiries over any CardTransport.

The kernel here is the part of the terminal that talks to a chip card: it picks
a payment application, runs GET PROCESSING OPTIONS, reads the records the card
lists in its AFL and, depending on the transaction, asks for an application
cryptogram. What comes out is a :class:`CardReadResult`: the card data for
F2/F14/F23/F35 and the tags for F55. It is blocking, does no I/O of its own
(everything goes through :class:`drivers.transport.CardTransport`) and never
approves anything offline.

Dialogue, in EMV Book 1/3 order:

1. **Application selection.** Contactless: SELECT PPSE (``2PAY.SYS.DDF01``) and
   take candidates from its directory (BF0C/61). Contact: SELECT PSE
   (``1PAY.SYS.DDF01``), READ RECORD its directory SFI until 6A83; if the PSE
   is absent (6A82), blocked (6283), answers any other error, or lists nothing
   the terminal supports, fall back to the terminal's AID list (SELECT each AID;
   6A82 -> next AID; partial-name matches followed with SELECT next occurrence).
   Candidates are tried in priority order (tag 87; no priority last). A
   candidate answering 6283 is blocked and skipped; 6A81 to any SELECT means
   the card is blocked (:class:`~drivers.errors.CardBlockedError`). When no
   candidate is left: ``CardBlockedError`` if one was blocked, else
   :class:`~drivers.errors.NoApplicationError`.
2. **GET PROCESSING OPTIONS** with the PDOL (9F38) filled from terminal data.
   6985 removes the application and selection goes on with the next candidate.
   Format 1 (80) and format 2 (77) answers; AFL checked entry by entry.
3. **READ RECORD** every record the AFL lists.
4. **Ending** by transaction type: ``SALE`` (9C=00) and ``BALANCE`` (9C=31)
   ask GENERATE AC for an ARQC; ``REFUND`` (9C=20) stops after the records
   (``refund_ends_with="records"``) or asks for an AAC (``"aac"``). A card
   that answers TC to a refund, or any cryptogram stronger than asked, is an
   error (:class:`CryptogramError`). A contactless card that puts its
   cryptogram in the GPO answer (qPBOC / qVSDC) is not asked again.

**Completion** (:meth:`EmvKernel.complete`), after the host answered an
ARQC, with the card still in the reader: the issuer authentication data (F55
tag 91) goes to the card by EXTERNAL AUTHENTICATE when the AIP says "issuer
authentication supported" and CDOL2 does not ask for tag 91 itself, else
inside the second GENERATE AC's CDOL2 data; the second GENERATE AC asks for a
TC when the host approved and an AAC otherwise, with 8A = the host's response
code (``Z3`` when it never answered). The card decides: a TC only if the ARPC
is the issuer's and approves. An AAC after a host approval means the sale must
be reversed (F39 ``06``/``96`` per the dialect's rules).

Status words: 61xx is followed by GET RESPONSE and 6Cxx by the same command
with Le = xx here in the kernel (so it works over a transport that passes them
up), at most ``TerminalConfig.max_chained`` times per command.

Errors: every malformed card answer becomes a
:class:`~drivers.errors.CardDataError` (or another
:class:`~drivers.errors.CardError`) with a message naming the command and
status word; :class:`~drivers.errors.CardRemovedError` and other
:class:`~drivers.errors.ReaderError`\\ s from the transport propagate unchanged.
No message, log line or ``repr`` carries a full PAN or track 2.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final, Literal

from drivers.errors import (
    CardBlockedError,
    CardDataError,
    CardError,
    NoApplicationError,
)
from drivers.masking import install_masking_filter, mask_pan, mask_track2
from drivers.transport import CardTransport, transmit
from iso8583 import tlv
from iso8583.dialect import DEFAULT_F55_TAGS as _DIALECT_F55_TAGS
from iso8583.errors import Iso8583Error

__all__ = [
    "AID_CUP_CREDIT",
    "AID_CUP_DEBIT",
    "AID_CUP_QUASI_CREDIT",
    "AID_MASTERCARD",
    "AID_VISA",
    "DEFAULT_AIDS",
    "DEFAULT_F55_TAGS",
    "F55_TAGS_WITH_PSN",
    "PPSE_NAME",
    "PSE_NAME",
    "CardReadResult",
    "Cryptogram",
    "CryptogramError",
    "CryptogramType",
    "EmvKernel",
    "RefundEnding",
    "TerminalConfig",
    "TransactionData",
    "TransactionType",
    "read_card",
]

log = install_masking_filter(logging.getLogger(__name__))

PSE_NAME: Final = b"1PAY.SYS.DDF01"
PPSE_NAME: Final = b"2PAY.SYS.DDF01"

AID_CUP_DEBIT: Final = bytes.fromhex("A000000333010101")
AID_CUP_CREDIT: Final = bytes.fromhex("A000000333010102")
AID_CUP_QUASI_CREDIT: Final = bytes.fromhex("A000000333010103")
AID_VISA: Final = bytes.fromhex("A0000000031010")
AID_MASTERCARD: Final = bytes.fromhex("A0000000041010")
DEFAULT_AIDS: Final = (AID_CUP_DEBIT, AID_CUP_CREDIT, AID_CUP_QUASI_CREDIT, AID_VISA,
                       AID_MASTERCARD)

# F55: the kernel's default is the dialect layer's tag list (iso8583.dialect), so the
# terminal reads the same tags from ``dialect.settings.f55_tags``. A dialect that wants
# the PAN sequence number in F55 passes F55_TAGS_WITH_PSN.
DEFAULT_F55_TAGS: Final[tuple[int, ...]] = _DIALECT_F55_TAGS
F55_TAGS_WITH_PSN: Final[tuple[int, ...]] = (*DEFAULT_F55_TAGS, 0x5F34)

_SW_OK: Final = 0x9000
_SW_FILE_NOT_FOUND: Final = 0x6A82
_SW_FUNCTION_NOT_SUPPORTED: Final = 0x6A81  # card or application blocked
_SW_SELECTED_FILE_INVALIDATED: Final = 0x6283  # application blocked
_SW_RECORD_NOT_FOUND: Final = 0x6A83
_SW_CONDITIONS_NOT_SATISFIED: Final = 0x6985

_MAX_AFL_RECORDS: Final = 64  # a hostile AFL could ask for thousands of reads
_MAX_DIRECTORY_RECORDS: Final = 16
_MAX_SELECT_NEXT: Final = 8  # partial-name occurrences followed per terminal AID


class TransactionType(IntEnum):
    """EMV transaction type, tag 9C."""

    SALE = 0x00
    REFUND = 0x20
    BALANCE = 0x31


class CryptogramType(StrEnum):
    """Kind of application cryptogram, from bits 8-7 of the CID (9F27)."""

    AAC = "AAC"  # declined
    TC = "TC"  # approved offline
    ARQC = "ARQC"  # go online

    @property
    def p1(self) -> int:
        """Reference control parameter of GENERATE AC asking for this type."""
        return {"AAC": 0x00, "TC": 0x40, "ARQC": 0x80}[self.value]


RefundEnding = Literal["records", "aac"]


class CryptogramError(CardDataError):
    """The card answered GENERATE AC (or GPO) with a cryptogram it may not give.

    Raised when a card approves a refund offline (TC), or returns a stronger
    cryptogram than the terminal asked for.
    """


@dataclass(frozen=True)
class TerminalConfig:
    """What the terminal tells the card about itself, and how the dialogue ends.

    Byte values are the raw tag values. ``aids`` is the terminal's supported AID
    list in preference order (also the order of the list-of-AIDs fallback).
    """

    aids: tuple[bytes, ...] = DEFAULT_AIDS
    partial_selection: bool = True  # card AIDs longer than a terminal AID match it
    refund_ends_with: RefundEnding = "aac"
    country_code: bytes = b"\x01\x56"  # 9F1A, China
    currency_code: bytes = b"\x01\x56"  # 5F2A, CNY
    currency_exponent: int = 2  # 5F36
    terminal_capabilities: bytes = bytes.fromhex("E068C8")  # 9F33: IC, PIN online, no CVM
    additional_capabilities: bytes = bytes.fromhex("F000F0A001")  # 9F40
    terminal_type: int = 0x22  # 9F35: attended, online with offline capability, merchant
    ttq: bytes = bytes.fromhex("26000080")  # 9F66: qPBOC/qVSDC, online PIN, signature
    tvr: bytes = bytes.fromhex("8000000000")  # 95: offline data authentication not performed
    ifd_serial: str = "00000001"  # 9F1E, an 8
    application_version: bytes = b"\x00\x30"  # 9F09
    terminal_id: str | None = None  # 9F1C when a card asks for it
    merchant_id: str | None = None  # 9F16
    max_chained: int = 8  # 61xx / 6Cxx follow-ups allowed per command

    def __post_init__(self) -> None:
        if not self.aids or any(not 5 <= len(a) <= 16 for a in self.aids):
            raise ValueError("terminal AIDs must be 5..16 bytes each, at least one")
        if self.refund_ends_with not in ("records", "aac"):
            raise ValueError(f"refund_ends_with must be 'records' or 'aac', "
                             f"not {self.refund_ends_with!r}")
        if len(self.country_code) != 2 or len(self.currency_code) != 2:
            raise ValueError("country and currency codes are 2 bytes (n3 BCD)")
        if len(self.terminal_capabilities) != 3 or len(self.additional_capabilities) != 5:
            raise ValueError("9F33 is 3 bytes and 9F40 is 5 bytes")
        if len(self.ttq) != 4 or len(self.tvr) != 5:
            raise ValueError("9F66 is 4 bytes and 95 is 5 bytes")
        if len(self.ifd_serial) != 8 or not self.ifd_serial.isascii():
            raise ValueError("9F1E (IFD serial number) is 8 ASCII characters")
        if self.max_chained < 1:
            raise ValueError("max_chained must be at least 1")


@dataclass(frozen=True)
class TransactionData:
    """The transaction the card is read for: type, amount in fen, date and time.

    ``unpredictable_number`` (9F37) is drawn from :mod:`secrets` when not given;
    pass it explicitly to replay a recorded trace. ``sequence_counter`` (9F41) is
    usually the STAN. ``cvm_results`` is 9F34 (default: no CVM performed yet).
    """

    type: TransactionType
    amount: int
    date: dt.date
    time: dt.time = dt.time(0, 0, 0)
    other_amount: int = 0
    unpredictable_number: bytes | None = None
    sequence_counter: int = 1
    cvm_results: bytes = b"\x3f\x00\x00"

    def __post_init__(self) -> None:
        for name, value in (("amount", self.amount), ("other_amount", self.other_amount)):
            if not 0 <= value <= 999_999_999_999:
                raise ValueError(f"{name} must be 0..999999999999 fen, not {value}")
        if self.unpredictable_number is not None and len(self.unpredictable_number) != 4:
            raise ValueError("unpredictable number (9F37) is 4 bytes")
        if not 0 <= self.sequence_counter <= 99_999_999:
            raise ValueError("sequence counter (9F41) is n8")
        if len(self.cvm_results) != 3:
            raise ValueError("CVM results (9F34) is 3 bytes")

    def to_json(self) -> dict[str, str | int | None]:
        """JSON-safe form, for the ``meta`` line of a trace (so a replay sends the same data)."""
        un = self.unpredictable_number
        return {"type": self.type.name, "amount": self.amount,
                "date": self.date.isoformat(), "time": self.time.isoformat(),
                "other_amount": self.other_amount,
                "unpredictable_number": un.hex().upper() if un is not None else None,
                "sequence_counter": self.sequence_counter,
                "cvm_results": self.cvm_results.hex().upper()}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TransactionData:
        """Inverse of :meth:`to_json`; ``ValueError`` on anything malformed."""
        try:
            un = data.get("unpredictable_number")
            return cls(
                type=TransactionType[str(data["type"])],
                amount=int(str(data["amount"])),
                date=dt.date.fromisoformat(str(data["date"])),
                time=dt.time.fromisoformat(str(data.get("time", "00:00:00"))),
                other_amount=int(str(data.get("other_amount", 0))),
                unpredictable_number=bytes.fromhex(str(un)) if un is not None else None,
                sequence_counter=int(str(data.get("sequence_counter", 1))),
                cvm_results=bytes.fromhex(str(data.get("cvm_results", "3F0000"))),
            )
        except KeyError as exc:
            raise ValueError(f"transaction data without {exc}") from None


@dataclass(frozen=True)
class Cryptogram:
    """An application cryptogram and what came with it (9F27 9F36 9F26 9F10)."""

    type: CryptogramType
    cid: int  # 9F27
    atc: bytes  # 9F36, 2 bytes
    ac: bytes  # 9F26, 8 bytes
    iad: bytes  # 9F10, issuer application data (may be empty)
    requested: CryptogramType | None  # None: the card gave it in the GPO answer unasked


@dataclass(frozen=True, repr=False)
class CardReadResult:
    """Everything the dialogue learned about the card, ready for the message.

    ``pan`` and ``track2`` are the full values, kept in memory only: ``repr`` and
    ``str`` show them masked. ``tags`` holds every primitive tag collected (card
    and terminal, terminal values winning) as raw bytes.
    """

    pan: str
    psn: str | None  # PAN sequence number, 2 digits (5F34); F23 is "0" + psn
    expiry: str  # YYMM
    track2: str  # track-2 equivalent with "D" separator, trailing F stripped (F35)
    aid: bytes
    label: str
    contactless: bool
    transaction_type: TransactionType
    cryptogram: Cryptogram | None
    tags: Mapping[int, bytes] = field(default_factory=lambda: MappingProxyType({}))
    apdu_count: int = 0

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    @property
    def entry_mode(self) -> str:
        """F22 for a terminal that can take a PIN: ``051`` (contact chip), ``071`` (contactless).

        Use :meth:`entry_mode_for` when the last digit must say whether a PIN
        was entered (DESIGN.md section 4: 1 = PIN entered, 2 = no PIN).
        """
        return self.entry_mode_for(pin_entered=True)

    def entry_mode_for(self, *, pin_entered: bool) -> str:
        """F22 entry mode: ``05``/``07`` for chip/contactless plus ``1``/``2`` for PIN."""
        return ("07" if self.contactless else "05") + ("1" if pin_entered else "2")

    @property
    def card_sequence_number(self) -> str | None:
        """F23 (n3, right-aligned) from the PSN, or None when the card has none."""
        return None if self.psn is None else self.psn.rjust(3, "0")

    def f55(self, tags: Iterable[int] = DEFAULT_F55_TAGS) -> bytes:
        """ICC data for F55: the listed tags that were collected, in the order given.

        Tags the dialogue did not collect (for example 9F26 in a refund that
        ended after READ RECORD) are left out.
        """
        return b"".join(tlv.encode_tlv(t, self.tags[t]) for t in tags if t in self.tags)

    def message_fields(self, *, pin_entered: bool,
                       f55_tags: Iterable[int] | None = DEFAULT_F55_TAGS
                       ) -> dict[int, str | bytes]:
        """The card's ISO 8583 fields: F2 PAN, F14 expiry, F22, F23, F35 track 2, F55.

        Values are in the form :class:`iso8583.message.Message` takes (digit
        strings, ``D`` in track 2, bytes for F55). F23 is left out when the card
        has no PSN; F55 when ``f55_tags`` is None (a dialect that sends none).
        """
        fields: dict[int, str | bytes] = {2: self.pan, 14: self.expiry,
                                          22: self.entry_mode_for(pin_entered=pin_entered)}
        if self.card_sequence_number is not None:
            fields[23] = self.card_sequence_number
        fields[35] = self.track2
        if f55_tags is not None:
            fields[55] = self.f55(f55_tags)
        return fields

    def __repr__(self) -> str:
        crypt = self.cryptogram.type.value if self.cryptogram else None
        return (f"CardReadResult(pan={self.masked_pan!r}, psn={self.psn!r}, "
                f"expiry={self.expiry!r}, track2={mask_track2(self.track2)!r}, "
                f"aid={self.aid.hex().upper()!r}, label={self.label!r}, "
                f"contactless={self.contactless}, "
                f"transaction_type={self.transaction_type.name}, cryptogram={crypt!r}, "
                f"tags={len(self.tags)}, apdu_count={self.apdu_count})")

    __str__ = __repr__


class EmvKernel:
    """Runs the card dialogue with one :class:`TerminalConfig` for many cards."""

    def __init__(self, config: TerminalConfig | None = None) -> None:
        self.config = config if config is not None else TerminalConfig()

    def read_card(self, transport: CardTransport, txn: TransactionData) -> CardReadResult:
        """Run the dialogue for ``txn`` on the card in ``transport``.

        Raises :class:`~drivers.errors.CardError` subclasses for card answers the
        dialogue cannot use, and lets transport errors
        (:class:`~drivers.errors.CardRemovedError`, ...) through.
        """
        return _Dialogue(transport, self.config, txn).run()


    def complete(self, transport: CardTransport, read: CardReadResult, *,
                 issuer_auth_data: bytes | None, approved: bool,
                 response_code: str | None = None) -> Cryptogram:
        """Second GENERATE AC after the host's answer to the ARQC of ``read``.

        ``issuer_auth_data`` is the value of tag 91 from the answer's F55 (None
        when the answer had none); ``approved`` whether the host approved;
        ``response_code`` the answer's F39, sent as 8A (default ``00`` when
        ``approved``, else ``Z3`` "unable to go online", for a host that never
        answered: ``approved=False, response_code=None, issuer_auth_data=None``).
        Returns the card's TC or AAC; raises :class:`CryptogramError` for an
        ARQC, or a TC the terminal did not ask for, and
        :class:`~drivers.errors.CardError` for refusals (e.g. the card was reset
        between the two commands: 6985).
        """
        if read.cryptogram is None or read.cryptogram.type is not CryptogramType.ARQC:
            raise ValueError("complete() follows a read that ended with an ARQC")
        if issuer_auth_data is not None and not 8 <= len(issuer_auth_data) <= 16:
            raise CardDataError(f"issuer authentication data (91) of {len(issuer_auth_data)} "
                                "bytes; EMV allows 8 to 16")
        arc = response_code if response_code is not None else ("00" if approved else "Z3")
        if len(arc) != 2 or not arc.isascii():
            raise ValueError(f"response code must be 2 ASCII characters, not {arc!r}")
        return _Dialogue.for_completion(transport, self.config, read).second_generate_ac(
            issuer_auth_data, approved, arc.encode("ascii"))


def read_card(transport: CardTransport, txn: TransactionData,
              config: TerminalConfig | None = None) -> CardReadResult:
    """One-shot form of :meth:`EmvKernel.read_card`."""
    return EmvKernel(config).read_card(transport, txn)


# --- internals ----------------------------------------------------------------


@dataclass(frozen=True)
class _Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = 0  # None: no Le byte; 0: Le = 00 (up to 256)

    def encode(self) -> bytes:
        out = bytes((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out += bytes((len(self.data),)) + self.data
        if self.le is not None:
            out += bytes((self.le & 0xFF,))
        return out

    def with_le(self, le: int) -> _Apdu:
        return _Apdu(self.cla, self.ins, self.p1, self.p2, self.data, le)


@dataclass
class _Candidate:
    aid: bytes
    label: str
    priority: int  # 1 highest .. 15; 0 = no priority (tried last)
    index: int

    def sort_key(self) -> tuple[bool, int, int]:
        return (self.priority == 0, self.priority, self.index)


@dataclass
class _Fci:
    df_name: bytes
    tags: dict[int, bytes]
    entries: list[_Candidate]  # PPSE directory entries; empty for an ADF


def _sw(sw: int) -> str:
    return f"{sw:04X}"


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _decode(data: bytes, what: str) -> list[tlv.Tlv]:
    try:
        return tlv.decode(data, context="card")
    except Iso8583Error as exc:
        raise CardDataError(f"{what}: malformed TLV ({exc})") from None


def _flatten(items: Iterable[tlv.Tlv], out: dict[int, bytes], what: str,
             strict: bool = False) -> None:
    """Collect primitive tags (recursing into templates) into ``out``.

    ``strict``: a tag seen twice with different values is a card data error
    (EMV Book 3 10.2), so a card cannot say two things about itself.
    """
    for item in items:
        if tlv.is_constructed(item.tag):
            _flatten(item.children, out, what, strict)
            continue
        old = out.get(item.tag)
        if strict and old is not None and old != item.value:
            raise CardDataError(f"{what}: tag {tlv.format_tag(item.tag)} given twice "
                                f"with different values")
        out[item.tag] = item.value


def _single_template(data: bytes, what: str, allowed: tuple[int, ...]) -> tlv.Tlv:
    items = _decode(data, what)
    if len(items) != 1 or items[0].tag not in allowed:
        tags = " ".join(tlv.format_tag(i.tag) for i in items) or "nothing"
        want = "/".join(tlv.format_tag(t) for t in allowed)
        raise CardDataError(f"{what}: expected one {want} template, got {tags}")
    return items[0]


def _bcd(value: int, length: int) -> bytes:
    digits = str(value).rjust(length * 2, "0")
    return bytes.fromhex(digits)


def _bcd_digits(value: bytes, what: str) -> str:
    """Decimal digits of a BCD value padded with trailing F nibbles."""
    text = _hex(value).rstrip("F")
    if not text.isdigit():
        raise CardDataError(f"{what} is not BCD digits")
    return text


def _parse_entries(items: Iterable[tlv.Tlv], what: str, start_index: int) -> list[_Candidate]:
    """Directory entries (template 61) among ``items``, recursing into other templates."""
    out: list[_Candidate] = []
    for item in items:
        if item.tag == 0x61:
            entry: dict[int, bytes] = {}
            _flatten(item.children, entry, what)
            aid = entry.get(0x4F)
            if aid is None:
                continue  # a DDF entry (9D) or proprietary data: not an application
            if not 5 <= len(aid) <= 16:
                raise CardDataError(f"{what}: ADF name (4F) of {len(aid)} bytes")
            prio = entry.get(0x87, b"")
            out.append(_Candidate(
                aid=aid,
                label=entry.get(0x50, b"").decode("ascii", errors="replace"),
                priority=prio[0] & 0x0F if len(prio) == 1 else 0,
                index=start_index + len(out),
            ))
        elif tlv.is_constructed(item.tag):
            out.extend(_parse_entries(item.children, what, start_index + len(out)))
    return out


def _parse_fci(data: bytes, what: str) -> _Fci:
    fci = _single_template(data, what, (0x6F,))
    tags: dict[int, bytes] = {}
    _flatten(fci.children, tags, what)
    df_name = tags.get(0x84)
    if df_name is None or not 5 <= len(df_name) <= 16:
        raise CardDataError(f"{what}: FCI without a valid DF name (84)")
    return _Fci(df_name, tags, _parse_entries(fci.children, what, 0))


@dataclass(frozen=True)
class _AflEntry:
    sfi: int
    first: int
    last: int
    offline_auth: int


def _parse_afl(afl: bytes) -> list[_AflEntry]:
    if len(afl) % 4:
        raise CardDataError(f"AFL (94) of {len(afl)} bytes is not a multiple of 4")
    entries: list[_AflEntry] = []
    total = 0
    for i in range(0, len(afl), 4):
        b0, first, last, oda = afl[i:i + 4]
        sfi = b0 >> 3
        n = i // 4 + 1
        if not 1 <= sfi <= 30 or b0 & 0x07:
            raise CardDataError(f"AFL entry {n}: SFI byte {b0:02X} is invalid")
        if first == 0 or last < first:
            raise CardDataError(f"AFL entry {n}: records {first}..{last} are invalid")
        if oda > last - first + 1:
            raise CardDataError(f"AFL entry {n}: {oda} offline-auth records of "
                                f"{last - first + 1}")
        total += last - first + 1
        entries.append(_AflEntry(sfi, first, last, oda))
    if total > _MAX_AFL_RECORDS:
        raise CardDataError(f"AFL lists {total} records (at most {_MAX_AFL_RECORDS} read)")
    return entries


_TRACK2_RE: Final = re.compile(r"([0-9]{12,19})D([0-9]{2})([0-9]{2})([0-9]{3})([0-9]*)")


class _Dialogue:
    """One run of the card dialogue (state of a single card read)."""

    def __init__(self, transport: CardTransport, config: TerminalConfig,
                 txn: TransactionData) -> None:
        self.transport = transport
        self.config = config
        self.txn = txn
        self.contactless = bool(transport.contactless)
        self.apdus = 0
        un = txn.unpredictable_number or secrets.token_bytes(4)
        self.terminal = self._terminal_tags(un)
        self.card_tags: dict[int, bytes] = {}

    @classmethod
    def for_completion(cls, transport: CardTransport, config: TerminalConfig,
                       read: CardReadResult) -> _Dialogue:
        """A dialogue that continues ``read``: the terminal data it sent, the card's tags."""
        un = read.tags.get(0x9F37, bytes(4))
        dialogue = cls(transport, config, TransactionData(
            read.transaction_type, 0, dt.date(2000, 1, 1), unpredictable_number=un))
        dialogue.terminal = dict(read.tags)
        dialogue.card_tags = dict(read.tags)
        return dialogue

    # -- terminal data ---------------------------------------------------------

    def _terminal_tags(self, un: bytes) -> dict[int, bytes]:
        c, t = self.config, self.txn
        ttq = bytearray(c.ttq)
        if t.type != TransactionType.REFUND:
            ttq[1] |= 0x80  # online cryptogram required: a sale or enquiry must go online
        tags = {
            0x9F02: _bcd(t.amount, 6),
            0x9F03: _bcd(t.other_amount, 6),
            0x9F1A: c.country_code,
            0x5F2A: c.currency_code,
            0x5F36: bytes((c.currency_exponent,)),
            0x9A: bytes.fromhex(t.date.strftime("%y%m%d")),
            0x9F21: bytes.fromhex(t.time.strftime("%H%M%S")),
            0x9C: bytes((int(t.type),)),
            0x9F37: un,
            0x95: c.tvr,
            0x9B: b"\x00\x00",
            0x9F33: c.terminal_capabilities,
            0x9F40: c.additional_capabilities,
            0x9F35: bytes((c.terminal_type,)),
            0x9F34: t.cvm_results,
            0x9F1E: c.ifd_serial.encode("ascii"),
            0x9F09: c.application_version,
            0x9F41: _bcd(t.sequence_counter, 4),
        }
        if self.contactless:
            tags[0x9F66] = bytes(ttq)
        if c.terminal_id is not None:
            tags[0x9F1C] = c.terminal_id.encode("ascii")[:8].ljust(8)
        if c.merchant_id is not None:
            tags[0x9F16] = c.merchant_id.encode("ascii")[:15].ljust(15)
        return tags

    def _dol_data(self, dol_value: bytes, card: Mapping[int, bytes], what: str) -> bytes:
        try:
            dol = tlv.decode_dol(dol_value)
            data = tlv.build_dol_data(dol, {**card, **self.terminal})
        except Iso8583Error as exc:
            raise CardDataError(f"{what} is malformed ({exc})") from None
        if len(data) > 252:  # must fit one short APDU, with the 83/len wrapper for GPO
            raise CardDataError(f"{what} asks for {len(data)} bytes of terminal data")
        return data

    # -- APDU exchange ---------------------------------------------------------

    def _exchange(self, apdu: _Apdu, what: str) -> tuple[bytes, int]:
        """Send ``apdu``; follow 61xx with GET RESPONSE and 6Cxx with a corrected Le."""
        collected = b""
        current = apdu
        for _ in range(self.config.max_chained + 1):
            self.apdus += 1
            data, sw = transmit(self.transport, current.encode())
            if not 0 <= sw <= 0xFFFF:
                raise CardError(f"{what}: transport returned status word {sw!r}")
            data = bytes(data)
            sw1, sw2 = sw >> 8, sw & 0xFF
            log.debug("%s -> %d bytes, SW %04X", what, len(data), sw)
            if sw1 == 0x61:
                collected += data
                current = _Apdu(0x00, 0xC0, 0x00, 0x00, b"", sw2)
                continue
            if sw1 == 0x6C:
                current = current.with_le(sw2)
                continue
            return collected + data, sw
        raise CardError(f"{what}: card kept answering 61xx/6Cxx after "
                        f"{self.config.max_chained} follow-ups")

    def _select(self, name: bytes, *, next_occurrence: bool = False) -> tuple[bytes, int]:
        what = f"SELECT {name.decode('ascii') if name.endswith(b'DDF01') else _hex(name)}"
        data, sw = self._exchange(_Apdu(0x00, 0xA4, 0x04, 0x02 if next_occurrence else 0x00,
                                        name), what)
        if sw == _SW_FUNCTION_NOT_SUPPORTED:
            raise CardBlockedError(f"{what}: card blocked (6A81)")
        return data, sw

    # -- application selection ---------------------------------------------------

    def _candidates(self) -> tuple[list[_Candidate], list[bytes]]:
        """Candidate list in priority order, and AIDs found blocked on the way."""
        blocked: list[bytes] = []
        if self.contactless:
            data, sw = self._select(PPSE_NAME)
            if sw == _SW_SELECTED_FILE_INVALIDATED:
                raise CardBlockedError("SELECT PPSE: card blocked (6283)")
            if sw != _SW_OK:
                raise NoApplicationError(f"SELECT PPSE answered {_sw(sw)}: no contactless "
                                         f"payment application; try the chip reader")
            found = self._matching(_parse_fci(data, "SELECT PPSE").entries)
        else:
            found = self._from_pse()
            if not found:
                found, blocked = self._from_aid_list()
        return sorted(found, key=_Candidate.sort_key), blocked

    def _matching(self, entries: Iterable[_Candidate]) -> list[_Candidate]:
        out = []
        for entry in entries:
            for term_aid in self.config.aids:
                if entry.aid == term_aid or (self.config.partial_selection
                                             and entry.aid.startswith(term_aid)):
                    out.append(entry)
                    break
        return out

    def _from_pse(self) -> list[_Candidate]:
        data, sw = self._select(PSE_NAME)
        if sw != _SW_OK:
            log.debug("PSE not usable (SW %04X): list of AIDs", sw)
            return []
        fci = _parse_fci(data, "SELECT PSE")
        sfi_value = fci.tags.get(0x88)
        if sfi_value is None or len(sfi_value) != 1 or not 1 <= sfi_value[0] <= 10:
            raise CardDataError("SELECT PSE: FCI without a valid directory SFI (88)")
        sfi = sfi_value[0]
        entries: list[_Candidate] = []
        for rec in range(1, _MAX_DIRECTORY_RECORDS + 1):
            what = f"READ RECORD PSE SFI {sfi} record {rec}"
            data, sw = self._exchange(_Apdu(0x00, 0xB2, rec, (sfi << 3) | 4), what)
            if sw == _SW_RECORD_NOT_FOUND:
                break
            if sw != _SW_OK:
                raise CardError(f"{what} answered {_sw(sw)}")
            record = _single_template(data, what, (0x70,))
            entries.extend(_parse_entries(record.children, what, len(entries)))
        return self._matching(entries)

    def _from_aid_list(self) -> tuple[list[_Candidate], list[bytes]]:
        found: list[_Candidate] = []
        blocked: list[bytes] = []
        for term_aid in self.config.aids:
            next_occurrence = False
            for _ in range(_MAX_SELECT_NEXT):
                data, sw = self._select(term_aid, next_occurrence=next_occurrence)
                if sw not in (_SW_OK, _SW_SELECTED_FILE_INVALIDATED):
                    break  # 6A82 (not on the card) or any other error: next terminal AID
                if sw == _SW_SELECTED_FILE_INVALIDATED and not data:
                    blocked.append(term_aid)
                    break
                fci = _parse_fci(data, f"SELECT {_hex(term_aid)}")
                exact = fci.df_name == term_aid
                partial = (not exact and self.config.partial_selection
                           and fci.df_name.startswith(term_aid))
                if sw == _SW_SELECTED_FILE_INVALIDATED:
                    blocked.append(fci.df_name)
                elif exact or partial:
                    prio = fci.tags.get(0x87, b"")
                    found.append(_Candidate(
                        aid=fci.df_name,
                        label=fci.tags.get(0x50, b"").decode("ascii", errors="replace"),
                        priority=prio[0] & 0x0F if len(prio) == 1 else 0,
                        index=len(found)))
                if exact or not fci.df_name.startswith(term_aid):
                    break
                next_occurrence = True  # more applications may share this AID prefix
        return found, blocked

    # -- the dialogue ----------------------------------------------------------

    def run(self) -> CardReadResult:
        candidates, blocked = self._candidates()
        tried: set[bytes] = set()
        for cand in candidates:
            if cand.aid in tried:
                continue  # listed twice (two terminal AIDs matched it)
            tried.add(cand.aid)
            data, sw = self._select(cand.aid)
            if sw == _SW_SELECTED_FILE_INVALIDATED:
                blocked.append(cand.aid)
                continue
            if sw != _SW_OK:
                log.debug("final SELECT %s answered %04X: next candidate", _hex(cand.aid), sw)
                continue
            fci = _parse_fci(data, f"SELECT {_hex(cand.aid)}")
            if fci.df_name != cand.aid:
                raise CardDataError(f"SELECT {_hex(cand.aid)}: FCI names another "
                                    f"application ({_hex(fci.df_name)})")
            gpo = self._get_processing_options(fci)
            if gpo is None:
                continue  # 6985: conditions of use not satisfied, next application
            return self._read_application(cand, fci, gpo)
        if blocked:
            raise CardBlockedError(f"application blocked ({_hex(blocked[0])})")
        raise NoApplicationError("no payment application the terminal supports")

    def _get_processing_options(self, fci: _Fci) -> dict[int, bytes] | None:
        pdol = fci.tags.get(0x9F38)
        data = self._dol_data(pdol, fci.tags, "PDOL (9F38)") if pdol is not None else b""
        body = tlv.encode_tlv(0x83, data)
        rdata, sw = self._exchange(_Apdu(0x80, 0xA8, 0x00, 0x00, body), "GPO")
        if sw == _SW_CONDITIONS_NOT_SATISFIED:
            log.debug("GPO 6985 for %s: next candidate", _hex(fci.df_name))
            return None
        if sw != _SW_OK:
            raise CardError(f"GPO answered {_sw(sw)}")
        template = _single_template(rdata, "GPO", (0x80, 0x77))
        out: dict[int, bytes] = {}
        if template.tag == 0x80:
            if len(template.value) < 2:
                raise CardDataError("GPO format 1 answer shorter than the AIP")
            out[0x82] = template.value[:2]
            out[0x94] = template.value[2:]
        else:
            _flatten(template.children, out, "GPO", strict=True)
            if 0x82 not in out or len(out[0x82]) != 2:
                raise CardDataError("GPO format 2 answer without a valid AIP (82)")
            if 0x94 not in out and not self.contactless:
                raise CardDataError("GPO answer without an AFL (94)")
        return out

    def _read_application(self, cand: _Candidate, fci: _Fci,
                          gpo: dict[int, bytes]) -> CardReadResult:
        card: dict[int, bytes] = dict(gpo)
        for entry in _parse_afl(gpo.get(0x94, b"")):
            for rec in range(entry.first, entry.last + 1):
                what = f"READ RECORD SFI {entry.sfi} record {rec}"
                data, sw = self._exchange(
                    _Apdu(0x00, 0xB2, rec, (entry.sfi << 3) | 4), what)
                if sw != _SW_OK:
                    raise CardError(f"{what} answered {_sw(sw)}")
                if entry.sfi <= 10:  # SFIs 11-30 are issuer-proprietary, not TLV-coded by rule
                    record = _single_template(data, what, (0x70,))
                    _flatten(record.children, card, what, strict=True)

        pan, track2, expiry, psn = self._card_data(card)
        cryptogram = self._gpo_cryptogram(card)
        if cryptogram is None:
            cryptogram = self._finish(card)
        elif cryptogram.type is CryptogramType.TC and self.txn.type == TransactionType.REFUND:
            raise CryptogramError("card approved a refund offline (TC in the GPO answer)")
        if cryptogram is not None:
            card.update({0x9F27: bytes((cryptogram.cid,)), 0x9F36: cryptogram.atc,
                         0x9F26: cryptogram.ac})
            if cryptogram.iad:
                card[0x9F10] = cryptogram.iad
        tags = {**fci.tags, **card, **self.terminal}
        tags[0x84] = fci.df_name
        label = fci.tags.get(0x50)
        result = CardReadResult(
            pan=pan, psn=psn, expiry=expiry, track2=track2, aid=fci.df_name,
            label=label.decode("ascii", errors="replace") if label else cand.label,
            contactless=self.contactless, transaction_type=self.txn.type,
            cryptogram=cryptogram, tags=MappingProxyType(tags), apdu_count=self.apdus)
        log.info("card read: %s AID %s %s, %d APDUs, cryptogram %s", result.masked_pan,
                 _hex(result.aid), "contactless" if self.contactless else "contact",
                 self.apdus, cryptogram.type.value if cryptogram else "none")
        return result

    def _card_data(self, card: Mapping[int, bytes]) -> tuple[str, str, str, str | None]:
        """PAN, track 2, expiry YYMM and PSN, checked against each other."""
        raw57 = card.get(0x57)
        if raw57 is None:
            raise CardDataError("card data without track 2 equivalent data (57)")
        track2 = _hex(raw57).rstrip("F")
        m = _TRACK2_RE.fullmatch(track2)
        if m is None or len(track2) > 37:
            raise CardDataError("track 2 equivalent data (57) is malformed")
        t2_pan, t2_yy, t2_mm = m.group(1), m.group(2), m.group(3)

        raw5a = card.get(0x5A)
        if raw5a is None:
            if not self.contactless:
                raise CardDataError("card data without a PAN (5A)")
            pan = t2_pan
        else:
            pan = _bcd_digits(raw5a, "PAN (5A)")
            if not 12 <= len(pan) <= 19:
                raise CardDataError(f"PAN (5A) of {len(pan)} digits")
            if pan != t2_pan:
                raise CardDataError("PAN (5A) and track 2 equivalent data (57) differ")

        raw_exp = card.get(0x5F24)
        if raw_exp is None:
            if not self.contactless:
                raise CardDataError("card data without an expiry date (5F24)")
            yy, mm = t2_yy, t2_mm
        else:
            digits = _hex(raw_exp)
            if len(raw_exp) != 3 or not digits.isdigit():
                raise CardDataError("expiry date (5F24) is not YYMMDD")
            yy, mm = digits[:2], digits[2:4]
        if not 1 <= int(mm) <= 12:
            raise CardDataError("expiry date has month " + mm)

        raw_psn = card.get(0x5F34)
        psn = None
        if raw_psn is not None:
            psn = _hex(raw_psn)
            if len(raw_psn) != 1 or not psn.isdigit():
                raise CardDataError("PAN sequence number (5F34) is not one BCD byte")
        return pan, track2, yy + mm, psn

    # -- cryptograms -------------------------------------------------------------

    def _cryptogram(self, values: Mapping[int, bytes], what: str,
                    requested: CryptogramType | None) -> Cryptogram:
        cid, atc, ac = values.get(0x9F27), values.get(0x9F36), values.get(0x9F26)
        if cid is None or atc is None or ac is None:
            raise CardDataError(f"{what}: cryptogram without 9F27, 9F36 and 9F26")
        if len(cid) != 1 or len(atc) != 2 or len(ac) != 8:
            raise CardDataError(f"{what}: 9F27/9F36/9F26 of wrong length")
        kind_bits = cid[0] >> 6
        if kind_bits == 3:
            raise CardDataError(f"{what}: cryptogram type RFU in CID {cid[0]:02X}")
        kind = (CryptogramType.AAC, CryptogramType.TC, CryptogramType.ARQC)[kind_bits]
        iad = values.get(0x9F10, b"")
        if len(iad) > 32:
            raise CardDataError(f"{what}: issuer application data (9F10) of {len(iad)} bytes")
        return Cryptogram(kind, cid[0], atc, ac, iad, requested)

    def second_generate_ac(self, issuer_auth_data: bytes | None, approved: bool,
                           arc: bytes) -> Cryptogram:
        card = self.card_tags
        cdol2 = card.get(0x8D)
        if cdol2 is None:
            raise CardDataError("card data without CDOL2 (8D): cannot complete the transaction")
        try:
            in_cdol2 = any(tag == 0x91 for tag, _ in tlv.decode_dol(cdol2))
        except Iso8583Error as exc:
            raise CardDataError(f"CDOL2 (8D) is malformed ({exc})") from None
        tvr = bytearray(self.terminal.get(0x95, bytes(5)).ljust(5, b"\x00")[:5])
        aip = card.get(0x82, b"\x00\x00")
        if issuer_auth_data is not None and not in_cdol2 and aip[0] & 0x04:
            _data, sw = self._exchange(_Apdu(0x00, 0x82, 0x00, 0x00, issuer_auth_data),
                                       "EXTERNAL AUTHENTICATE")
            if sw != _SW_OK:
                log.info("EXTERNAL AUTHENTICATE answered %04X: issuer authentication failed", sw)
                tvr[4] |= 0x40  # TVR byte 5 bit 7: issuer authentication failed
        self.terminal[0x95] = bytes(tvr)
        self.terminal[0x8A] = arc
        if in_cdol2:
            self.terminal[0x91] = issuer_auth_data or b""
        want = CryptogramType.TC if approved else CryptogramType.AAC
        data = self._dol_data(cdol2, card, "CDOL2 (8D)")
        crypt = self._generate_ac(want, data)
        if crypt.type is CryptogramType.ARQC:
            raise CryptogramError("card answered ARQC to the second GENERATE AC")
        if want is CryptogramType.AAC and crypt.type is CryptogramType.TC:
            raise CryptogramError("card answered TC when asked for an AAC")
        return crypt

    def _generate_ac(self, want: CryptogramType, data: bytes) -> Cryptogram:
        what = f"GENERATE AC {want.value}"
        rdata, sw = self._exchange(_Apdu(0x80, 0xAE, want.p1, 0x00, data), what)
        if sw != _SW_OK:
            raise CardError(f"{what} answered {_sw(sw)}")
        template = _single_template(rdata, what, (0x80, 0x77))
        values: dict[int, bytes] = {}
        if template.tag == 0x80:
            v = template.value
            if len(v) < 11:
                raise CardDataError(f"{what}: format 1 answer of {len(v)} bytes")
            values = {0x9F27: v[:1], 0x9F36: v[1:3], 0x9F26: v[3:11]}
            if len(v) > 11:
                values[0x9F10] = v[11:]
        else:
            _flatten(template.children, values, what, strict=True)
        return self._cryptogram(values, what, want)

    def _gpo_cryptogram(self, card: Mapping[int, bytes]) -> Cryptogram | None:
        if 0x9F26 not in card:
            return None
        return self._cryptogram(card, "GPO", None)

    def _finish(self, card: Mapping[int, bytes]) -> Cryptogram | None:
        if self.txn.type == TransactionType.REFUND:
            if self.config.refund_ends_with == "records":
                return None
            want = CryptogramType.AAC
        else:
            want = CryptogramType.ARQC
        cdol1 = card.get(0x8C)
        if cdol1 is None:
            raise CardDataError("card data without CDOL1 (8C): cannot ask for a cryptogram")
        data = self._dol_data(cdol1, card, "CDOL1 (8C)")
        crypt = self._generate_ac(want, data)
        if want is CryptogramType.AAC and crypt.type is not CryptogramType.AAC:
            if crypt.type is CryptogramType.TC:
                raise CryptogramError("card approved a refund offline (TC asked AAC)")
            raise CryptogramError(f"card answered {crypt.type.value} when asked for an AAC")
        if want is CryptogramType.ARQC and crypt.type is CryptogramType.TC:
            raise CryptogramError("card answered TC when asked for an ARQC")
        return crypt
