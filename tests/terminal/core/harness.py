"""A terminal core wired to the acquirer host's rules in memory, virtual cards and a PIN pad.

No sockets, no ptys: the host link hands frames to :meth:`AcquirerHost.handle` and
commits its records, with knobs for the faults the core must survive (answer
lost before or after booking, bad MAC, host down). The card reader runs the
real EMV kernel over a virtual card in-process; the PIN pad builds real ISO 9564
format 0 blocks under the PIK it was loaded with.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from drivers.errors import CardTimeoutError
from drivers.transport import CardTransport
from emulator.card import InProcessCardTransport, VirtualCard
from emulator.catalogue import TestCard, card_by_name
from emulator.host import AcquirerHost
from emulator.host.ledger import LedgerStore, MemoryLedgerStore
from iso8583.crypto import pinblock
from iso8583.crypto.des import decrypt_ecb
from iso8583.dialect import Dialect, Frame
from iso8583.dialects import get_dialect
from iso8583.message import Message
from terminal.core.config import TerminalSettings, init_terminal
from terminal.core.devices import EmvCardReader
from terminal.core.errors import HostLinkError, HostTimeoutError
from terminal.core.journal import Journal
from terminal.core.ports import CardRead, Purpose
from terminal.core.till import Till

TID = "10000001"
MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TPDU = bytes.fromhex("6000010000")
START = datetime(2026, 11, 23, 10, 30, 0)


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class MemoryHostLink:
    """The HostLink port over the host's rules in memory, with fault knobs."""

    host: AcquirerHost
    store: LedgerStore
    dialect: Dialect
    clock: Clock
    down: bool = False
    faults: list[str] = field(default_factory=list)  # consumed one per exchange
    sent: list[Message] = field(default_factory=list)

    def open(self) -> None:
        if self.down:
            raise HostLinkError("cannot connect to 127.0.0.1:1: Connection refused")

    def close(self) -> None:
        pass

    def exchange(self, request: Message) -> Frame:
        if self.down:
            raise HostLinkError("cannot connect to 127.0.0.1:1: Connection refused")
        fault = self.faults.pop(0) if self.faults else "none"
        self.sent.append(request.copy())
        if fault == "drop_before":
            raise HostTimeoutError("no answer within 1 s")
        payload = self.dialect.payload(request, tpdu=TPDU if self.dialect.spec.tpdu else None)
        outcome = self.host.handle(payload, self.clock())
        self.store.commit(outcome.records)
        if fault == "drop_after" or outcome.reply is None:
            raise HostTimeoutError("no answer within 1 s")
        reply = outcome.reply
        if fault == "bad_mac":
            reply = reply[:-1] + bytes([reply[-1] ^ 0x01])
        return self.dialect.unpack_payload(reply)

    def restart_host(self) -> None:
        self.host = AcquirerHost.from_store(self.store, self.dialect,
                                            random_bytes=random.Random(7).randbytes)


class VirtualCardSlot:
    """Where a test presents a test card: the EMV kernel reads it in-process."""

    def __init__(self) -> None:
        self.card: TestCard | None = None
        self.contactless = False

    def present(self, card: TestCard | str, *, contactless: bool = False) -> None:
        self.card = card_by_name(card) if isinstance(card, str) else card
        self.contactless = contactless

    def remove(self) -> None:
        self.card = None

    @contextlib.contextmanager
    def source(self, timeout: float) -> Iterator[CardTransport]:
        del timeout
        if self.card is None:
            raise CardTimeoutError("no card presented")
        transport = InProcessCardTransport(VirtualCard(self.card), contactless=self.contactless)
        try:
            yield transport
        finally:
            transport.close()


class VirtualPinEntry:
    """The PIN-entry port: real format 0 blocks under the PIK loaded at sign-on."""

    def __init__(self, tmk: bytes) -> None:
        self._tmk = tmk
        self._pik: bytes | None = None
        self.pin: str | None = None  # what the cardholder will type; None: cancels
        self.requests = 0

    def describe(self) -> str:
        return "virtual PIN pad (in-process)"

    def load_working_key(self, encrypted_pik: bytes, check_value: bytes) -> None:
        self._pik = decrypt_ecb(self._tmk, encrypted_pik)
        del check_value

    def get_pin_block(self, pan: str, amount: int | None) -> bytes:
        from terminal.core.errors import DeviceError
        self.requests += 1
        if self._pik is None:
            raise DeviceError("PIN pad has no PIN key")
        if self.pin is None:
            raise DeviceError("cardholder cancelled PIN entry", cashier_zh="持卡人取消输入密码",
                              cashier_en="Cardholder cancelled PIN entry")
        return pinblock.encrypt_format0(self._pik, self.pin, pan)


@dataclass
class Rig:
    """A till, its host and its devices."""

    till: Till
    link: MemoryHostLink
    slot: VirtualCardSlot
    pad: VirtualPinEntry
    clock: Clock
    data_dir: Path

    @property
    def host(self) -> AcquirerHost:
        return self.link.host

    def card(self, name: str = "cup-debit", purpose: Purpose = Purpose.SALE,
             amount: int = 0, *, contactless: bool = False) -> CardRead:
        card = card_by_name(name)
        self.slot.present(card, contactless=contactless)
        self.pad.pin = card.pin
        return self.till.read_card(purpose, amount)

    def restart(self) -> None:
        """The terminal process restarts: a new Till over the same data directory."""
        self.till.journal.close()
        self.till = open_till(self.data_dir, self.link, self.slot, self.pad, self.clock)


def open_till(data_dir: Path, link: MemoryHostLink, slot: VirtualCardSlot,
              pad: VirtualPinEntry, clock: Clock) -> Till:
    dialect = link.dialect
    reader = EmvCardReader(slot.source, description="virtual card (in-process)",
                           f55_tags=dialect.settings.f55_tags)
    return Till.open(data_dir, link=link, reader=reader, pinpad=pad, clock=clock)


def make_rig(tmp_path: Path, dialect_name: str = "cup", *, store: LedgerStore | None = None,
             seed: int = 1, settings: TerminalSettings | None = None) -> Rig:
    dialect = get_dialect(dialect_name)
    clock = Clock()
    store = store if store is not None else MemoryLedgerStore(secret=b"k" * 32)
    host = AcquirerHost.from_store(store, dialect, random_bytes=random.Random(seed).randbytes)
    store.commit([host.provision(TID, MID, TMK)])
    link = MemoryHostLink(host, store, dialect, clock)
    data_dir = tmp_path / "terminal"
    journal = Journal.open(data_dir, clock)
    init_terminal(journal, settings or TerminalSettings(tid=TID, mid=MID, dialect=dialect_name),
                  TMK)
    journal.close()
    slot, pad = VirtualCardSlot(), VirtualPinEntry(TMK)
    return Rig(open_till(data_dir, link, slot, pad, clock), link, slot, pad, clock, data_dir)
