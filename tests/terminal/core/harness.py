"""A terminal core wired to the acquirer host's rules in memory, virtual cards and a PIN pad.

No sockets, no ptys: the host link hands frames to :meth:`AcquirerHost.handle` and
commits its records, with knobs for the faults the core must survive (answer
lost before or after booking, bad MAC, a corrupted ARPC, host down). The card
reader runs the real EMV kernel over a virtual card in-process (a card held for
the second GENERATE AC is powered off by :meth:`VirtualCardSlot.remove`); the PIN
pad builds real ISO 9564 format 0 blocks under the PIK it was loaded with.
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
from emulator.host.faults import corrupt_arpc
from emulator.host.ledger import LedgerStore, MemoryLedgerStore
from iso8583.crypto import pinblock
from iso8583.crypto.des import decrypt_ecb
from iso8583.dialect import Dialect, Frame
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error
from iso8583.message import Message
from terminal.core import crashpoints
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
        crashpoints.crash_point("after_send")
        if fault == "drop_after" or outcome.reply is None:
            raise HostTimeoutError("no answer within 1 s")
        reply = outcome.reply
        if fault == "bad_mac":
            reply = reply[:-1] + bytes([reply[-1] ^ 0x01])
        elif fault == "corrupt_arpc":
            reply = corrupt_arpc(self.host, reply)
        try:
            return self.dialect.unpack_payload(reply)
        except Iso8583Error as exc:  # as terminal.hostlink.TcpHostLink: unreadable = no answer
            raise HostTimeoutError(f"unreadable answer ({exc}); treated as no answer") from None

    def restart_host(self) -> None:
        self.host = AcquirerHost.from_store(self.store, self.dialect,
                                            random_bytes=random.Random(7).randbytes)


class VirtualCardSlot:
    """Where a test presents a test card: the EMV kernel reads it in-process."""

    def __init__(self) -> None:
        self.card: TestCard | None = None
        self.contactless = False
        self._powered: list[VirtualCard] = []  # cards still in the reader (held or reading)

    def present(self, card: TestCard | str, *, contactless: bool = False) -> None:
        self.card = card_by_name(card) if isinstance(card, str) else card
        self.contactless = contactless

    def remove(self) -> None:
        """The card leaves the reader: a card still held answers as removed."""
        self.card = None
        for card in self._powered:
            card.power_off()
        self._powered.clear()

    @contextlib.contextmanager
    def source(self, timeout: float) -> Iterator[CardTransport]:
        del timeout
        if self.card is None:
            raise CardTimeoutError("no card presented")
        card = VirtualCard(self.card)
        transport = InProcessCardTransport(card, contactless=self.contactless)
        self._powered.append(card)
        try:
            yield transport
        finally:
            transport.close()
            if card in self._powered:
                self._powered.remove(card)


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


# --- QA helpers: simulated crashes, snapshots, the money rules of DESIGN.md section 5 ---------

class Crash(BaseException):
    """A simulated power cut at a crash point (a BaseException: no ``except Exception`` eats it)."""


@dataclass
class CrashPlan:
    """Which crash point cuts the power, and on which pass (see :func:`crash_points`)."""

    point: str | None = None
    nth: int = 1
    hits: int = 0
    fired: list[str] = field(default_factory=list)

    def arm(self, point: str, nth: int = 1) -> None:
        self.point, self.nth, self.hits = point, nth, 0

    def disarm(self) -> None:
        self.point = None

    def __call__(self, name: str) -> None:
        if name != self.point:
            return
        self.hits += 1
        if self.hits >= self.nth:
            self.point = None
            self.fired.append(name)
            raise Crash(name)


#: Every module that calls a crash point under its own name.
_CRASH_MODULES = ("terminal.core.till", "terminal.core.journal", "terminal.core.crashpoints")


@contextlib.contextmanager
def crash_points() -> Iterator[CrashPlan]:
    """Route every crash point (till, journal, the memory link's after_send) to a plan."""
    import importlib
    plan = CrashPlan()
    saved = [(m, importlib.import_module(m)) for m in _CRASH_MODULES]
    originals = [getattr(module, "crash_point") for _, module in saved]  # noqa: B009
    for _, module in saved:
        setattr(module, "crash_point", plan)  # noqa: B010
    try:
        yield plan
    finally:
        for (_, module), original in zip(saved, originals, strict=True):
            setattr(module, "crash_point", original)  # noqa: B010


@dataclass(frozen=True)
class Snapshot:
    """What the host booked, what went on the wire and what the journal holds."""

    host: tuple[object, ...]
    sent: int
    txns: tuple[tuple[object, ...], ...]
    pending: tuple[tuple[object, ...], ...]
    next_stan: str
    batch: str


def snapshot(rig: Rig) -> Snapshot:
    conn = rig.till.journal.conn
    return Snapshot(
        host=tuple(rig.host.transactions()), sent=len(rig.link.sent),
        txns=tuple(tuple(r) for r in conn.execute("SELECT * FROM txn ORDER BY id")),
        pending=tuple(tuple(r) for r in conn.execute("SELECT * FROM pending ORDER BY id")),
        next_stan=rig.till.journal.peek_stan(), batch=rig.till.journal.batch)


def check_money_rules(rig: Rig, *, settled: bool = True) -> None:
    """DESIGN.md section 5 over the host's ledger and the terminal's journal.

    Always: no original is over-refunded (host and journal), a voided sale has no
    refunds, nothing is booked twice, every approved journal refund has exactly one
    approved host refund with its RRN. When the journal owes nothing (``settled``
    and no open items): both sides agree row by row, and the open batch's totals
    are the host's.
    """
    from terminal.core.records import TxnKind, TxnStatus  # local: keeps the rig's imports lean

    host = [t for t in rig.host.transactions() if t.tid == TID]
    keys = [t.key for t in host]
    assert len(keys) == len(set(keys)), "a host row is booked twice"
    by_key = {t.key: t for t in host}
    for sale in (t for t in host if t.kind == "sale"):
        refunds = [t for t in host if t.kind == "refund" and t.status == "approved"
                   and t.original == "/".join(sale.key)]
        assert sale.refunded == sum(t.amount or 0 for t in refunds), sale
        assert 0 <= sale.refunded <= (sale.amount or 0), f"over-refunded at the host: {sale}"
        if sale.status == "voided":
            assert sale.refunded == 0, f"voided and refunded at the host: {sale}"
            assert sale.voided_by is not None
            void = by_key.get(tuple(sale.voided_by.split("/")))  # type: ignore[arg-type]
            assert void is not None
            assert void.status == "approved"
    journal = rig.till.journal
    records = journal.records()
    rrns = [t.rrn for t in host if t.kind in ("sale", "refund", "void") and t.rrn]
    assert len(rrns) == len(set(rrns)), "the host gave one RRN twice"
    for record in records:
        if record.kind is TxnKind.SALE:
            kids = journal.children(record.id)
            refunded = sum(k.amount for k in kids
                           if k.kind is TxnKind.REFUND and k.status is TxnStatus.APPROVED)
            assert refunded <= record.amount, f"over-refunded in the journal: {record}"
            voids = [k for k in kids if k.kind is TxnKind.VOID and k.status is TxnStatus.APPROVED]
            assert len(voids) <= 1, f"voided twice in the journal: {record}"
            assert not (voids and refunded), f"voided and refunded in the journal: {record}"
        if record.kind is TxnKind.REFUND and record.status is TxnStatus.APPROVED:
            matches = [t for t in host if t.kind == "refund" and t.rrn == record.rrn
                       and t.status == "approved"]
            assert len(matches) == 1, \
                f"journal refund {record.stan} has {len(matches)} host refunds"
            assert matches[0].amount == record.amount
    if not settled or journal.open_count():
        return
    mine = {(r.batch, r.stan, r.mti): r for r in records
            if r.kind in (TxnKind.SALE, TxnKind.REFUND, TxnKind.VOID)}
    for record in mine.values():
        assert record.status not in (TxnStatus.PENDING, TxnStatus.UNCERTAIN), \
            f"journal row {record.stan} is {record.status} and nothing is owed for it"
    for t in host:
        if t.kind not in ("sale", "refund", "void"):
            continue
        mirror = mine.get((t.batch, t.stan, t.mti))
        if t.status in ("approved", "voided"):
            assert mirror is not None, f"host booked {t.kind} {t.stan} the journal never wrote"
            assert mirror.status is TxnStatus.APPROVED, \
                f"host {t.status} / journal {mirror.status}: {t.kind} {t.stan}"
            assert mirror.amount == t.amount
            assert mirror.rrn == t.rrn
    standing_keys = {(t.batch, t.stan, t.mti) for t in host if t.status in ("approved", "voided")}
    for key, record in mine.items():
        if record.status is TxnStatus.APPROVED:
            assert key in standing_keys, f"journal approved {record.kind} {record.stan}; host not"
    batch = journal.batch
    assert rig.till.batch_totals(batch) == rig.host.batch_totals(TID, batch), \
        "open batch totals differ"
