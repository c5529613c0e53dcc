"""The acquirer host's ledger: the source of truth the host's rules read and write.

The host keeps no per-transaction state in memory. Each request (or each group of
requests the server gathered in one turn of its loop) runs inside one
:class:`LedgerSession`, one database transaction: the rules read what they need
(the terminal, the idempotency key, the original a refund names, the card's
balance, the batch) and write what they book, and the session commits before any
answer leaves. Two hosts on one ledger therefore see each other's bookings at
once, and a refund reads and locks its original in the transaction that books it.

Stores (one interface, :class:`LedgerStore`; :func:`open_store` picks one):

* :class:`MemoryLedgerStore` -- dicts, for tests and throwaway runs; a session
  holds the store's lock and undoes its writes on rollback;
* :class:`SqliteLedgerStore` -- one file, WAL, ``synchronous=FULL``; a session is
  ``BEGIN IMMEDIATE`` (the write lock), so several processes on one file serialize;
* ``PostgresLedgerStore`` (:mod:`emulator.host.pgledger`) -- READ COMMITTED, the
  original and the balance row read ``FOR UPDATE``.

A retryable clash with another process (serialization failure, deadlock, a
concurrent duplicate) raises :class:`~emulator.host.errors.LedgerConflict`: the
caller rolls the whole session back and runs it again (no answer has left).

Every record is also an idempotent upsert of one row's latest state
(:meth:`LedgerSession.write`, ``LedgerStore.commit``), so writing a record twice is
safe; a *new* transaction row is inserted with :meth:`LedgerSession.book`, which
refuses a key that exists (the concurrent duplicate above).

Security: the full PAN is never stored in a plain column: transactions carry a
masked PAN for people and a keyed hash (HMAC-SHA256 under a per-ledger secret
kept in the ``meta`` table) for matching.  Stored answers are kept without F2.
Terminal keys are stored in the clear: this is an emulator holding test keys.
"""

from __future__ import annotations

import json
import operator
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from emulator.host.errors import LedgerBusy, LedgerConflict, LedgerError
from iso8583 import composite
from iso8583.bounded import keep
from iso8583.errors import Iso8583Error
from iso8583.quickinit import quick_init
from iso8583.settlement import HalfTotals, SettlementTotals, is_domestic

#: Schema version this code writes (SQLite: counters 'schema'; PostgreSQL the same).
SCHEMA_VERSION = 2


@quick_init  # built per request: see iso8583.quickinit
@dataclass(frozen=True)
class TerminalRow:
    """A provisioned terminal and its current working keys (hex, empty when signed off).

    ``generation`` counts provisioning changes (add, re-key, remove): a write of
    this row only lands when its generation is not older than the stored one,
    so a host committing a sign-on under the old TMK cannot undo a re-key made
    meanwhile with ``pos-emulator terminal``. ``removed`` is a tombstone (a
    removed terminal is answered 03, and a late write cannot bring it back).
    """

    tid: str
    mid: str
    tmk: str = field(repr=False)
    pik: str = field(default="", repr=False)
    mak: str = field(default="", repr=False)
    tdk: str = field(default="", repr=False)
    batch: str = "000001"
    signed_on: bool = False
    generation: int = 0
    removed: bool = False


@quick_init  # built per request: see iso8583.quickinit
@dataclass(frozen=True)
class TransactionRow:
    """One request the host processed after its MAC verified, and the answer it gave.

    ``status``: ``approved``, ``declined``, ``voided`` (a sale a void cancelled),
    ``reversed`` (undone by a reversal) or ``acknowledged`` (reversals,
    settlements, uploads: answered, no money moved by the row itself).
    """

    tid: str
    batch: str
    stan: str
    mti: str
    kind: str
    fingerprint: str
    status: str
    response_code: str
    received_at: str  # ISO 8601 host time
    response: str = field(repr=False)  # JSON of the answer's MTI and fields (F2, F64 left out)
    pan_masked: str | None = None
    pan_hash: str | None = None
    scheme: str | None = None
    amount: int | None = None
    rrn: str | None = None
    auth_code: str | None = None
    date: str | None = None  # request F13 MMDD (the original date a refund names)
    original: str | None = None  # void/refund/reversal: "tid/batch/stan/mti" of the target
    refunded: int = 0  # sales: approved refunds so far
    voided_by: str | None = None  # sales: key of the approved void

    @property
    def key(self) -> TxnKey:
        return (self.tid, self.batch, self.stan, self.mti)


TxnKey = tuple[str, str, str, str]  # (TID, batch, STAN, MTI): the idempotency key
#: lock_request's arguments: (TID, batch, STAN, PAN hash or None, original's RRN or None)
RequestLock = tuple[str, str, str, str | None, str | None]


def key_text(key: TxnKey) -> str:
    return "/".join(key)


def parse_key(text: str) -> TxnKey:
    tid, batch, stan, mti = text.split("/")
    return (tid, batch, stan, mti)


@quick_init  # built per request: see iso8583.quickinit
@dataclass(frozen=True)
class BatchRow:
    """A terminal's batch: settled or not, and the totals both sides gave (F48 digits)."""

    tid: str
    batch: str
    settled: bool = False
    host_totals: str = ""
    terminal_totals: str = ""
    balanced: bool | None = None


@quick_init  # built per request: see iso8583.quickinit
@dataclass(frozen=True)
class UploadRow:
    """One item a terminal batch-uploaded after settlement, and whether the host knows it."""

    tid: str
    batch: str  # the batch the upload is for
    stan: str  # STAN of the 0320 that carried it
    rrn: str | None
    item_batch: str
    item_stan: str
    amount: int
    matched: bool


@quick_init  # built per request: see iso8583.quickinit
@dataclass(frozen=True)
class BalanceRow:
    """What the issuer has taken from one card so far (fen; refunds give back), by PAN hash.

    ``spent`` is the balance after the change as the session saw it; ``delta`` the
    change and ``limit`` the most the card may owe after it (a sale: its opening
    balance; None: no check). SQLite and memory sessions hold the ledger's write
    lock, so they store ``spent``; a PostgreSQL session applies the deltas at
    commit under the rows' locks and checks the limits again (see pgledger).
    """

    pan_hash: str
    spent: int
    delta: int = 0
    limit: int | None = None


@quick_init  # built per request: see iso8583.quickinit
@dataclass(frozen=True)
class TombstoneRow:
    """A reversal acknowledged before (or instead of) the request it names.

    The request (TID, batch, STAN) with processing code ``proc`` and ``amount`` (None:
    any) must not book when it arrives late: the terminal already undid it.
    """

    tid: str
    batch: str
    stan: str
    proc: str | None
    amount: int | None


LedgerRecord = TerminalRow | TransactionRow | BatchRow | UploadRow | BalanceRow | TombstoneRow


@dataclass(frozen=True)
class LedgerSnapshot:
    """The whole ledger, for views and tests (``pos-emulator ledger``); the host never loads it."""

    secret: bytes = field(repr=False)
    terminals: tuple[TerminalRow, ...] = ()
    transactions: tuple[TransactionRow, ...] = ()  # in booking order
    batches: tuple[BatchRow, ...] = ()
    uploads: tuple[UploadRow, ...] = ()


class LedgerSession(Protocol):
    """One store transaction: what the host's rules read and write (see the module docstring)."""

    # True: the host takes a request's lock (when its message names its key) before it
    # reads the terminal, and the store reads the terminal's row along with the lock
    # (PostgreSQL: one round trip for both); False: lock_request costs nothing here
    lock_first: bool

    def terminal(self, tid: str) -> TerminalRow | None: ...

    def terminals(self) -> list[TerminalRow]: ...  # every row, removed ones included, by TID

    def any_terminal(self) -> bool: ...  # one not removed (reads one row at most)

    def transaction(self, key: TxnKey, *, lock: bool = False) -> TransactionRow | None: ...

    def original_by_rrn(self, rrn: str) -> TransactionRow | None: ...  # read and lock

    def transaction_by_rrn(self, rrn: str) -> TransactionRow | None: ...  # read only

    def transactions(self) -> list[TransactionRow]: ...  # all, in booking order (views, tests)

    def tombstone(self, tid: str, batch: str, stan: str) -> TombstoneRow | None: ...

    # Held until commit: orders a request with its reversal across processes. ``pan_hash``:
    # the card whose balance the booking reads next; ``rrn``: the original a void or refund
    # names, which original_by_rrn reads next (a store may fetch and lock both along).
    def lock_request(self, tid: str, batch: str, stan: str,
                     pan_hash: str | None = None, rrn: str | None = None) -> None: ...

    # Every lock_request a group's requests will make, at once, before they run (a store
    # may take them all in one round trip and serve each one's rows to its lock_request
    # later, while nothing written since touched them); nothing to do where lock_request
    # costs nothing.
    def lock_requests(self, locks: Sequence[RequestLock]) -> None: ...

    def spent(self, pan_hash: str) -> int: ...  # read and lock the card's balance

    # Held until commit: a settlement closing (tid, batch) waits for every booking of the
    # batch in flight in another process, and those that come after it wait for it.
    def lock_batch(self, tid: str, batch: str) -> None: ...

    def batch(self, tid: str, batch: str) -> BatchRow | None: ...

    def batch_totals(self, tid: str, batch: str) -> SettlementTotals: ...

    def upload_count(self, tid: str, batch: str) -> int: ...

    def uploads(self, tid: str, batch: str) -> list[UploadRow]: ...

    def next_rrn(self) -> str: ...

    def book(self, row: TransactionRow) -> None: ...  # insert; LedgerConflict if the key exists

    def write(self, records: Sequence[LedgerRecord]) -> None: ...  # idempotent upserts


class LedgerStore(Protocol):
    """Where the ledger lives. One :meth:`session` is one transaction."""

    @property
    def secret(self) -> bytes: ...  # the PAN hash key

    def session(self) -> AbstractContextManager[LedgerSession]: ...

    def commit(self, records: Sequence[LedgerRecord]) -> None: ...  # write() in one session

    def terminal(self, tid: str) -> TerminalRow | None: ...

    def load(self) -> LedgerSnapshot: ...  # everything: views and tests only

    def close(self) -> None: ...


def provisioned(old: TerminalRow | None, tid: str, mid: str, tmk: bytes) -> TerminalRow:
    """The row that adds ``tid`` or replaces its MID/TMK: signed off, batch kept, generation+1."""
    row = TerminalRow(tid, mid, tmk.hex().upper())
    if old is None:
        return replace(row, generation=1)
    return replace(row, batch=old.batch, generation=old.generation + 1)


def removed_row(old: TerminalRow) -> TerminalRow:
    """The tombstone of a removed terminal (keys dropped, generation+1)."""
    return replace(old, pik="", mak="", tdk="", signed_on=False, removed=True,
                   generation=old.generation + 1)


def tombstone_of(txn: TransactionRow) -> TombstoneRow | None:
    """The tombstone a stored reversal leaves when it named no request the host had seen."""
    if txn.kind != "reversal" or txn.status != "acknowledged" or txn.original is not None:
        return None
    _, fields = response_fields(txn.response)
    stan = txn.stan
    f90 = fields.get(90)
    if isinstance(f90, str):
        try:
            stan = composite.F90.decode(f90).stan
        except Iso8583Error:
            return None
    proc = fields.get(3)
    return TombstoneRow(txn.tid, txn.batch, stan, proc if isinstance(proc, str) else None,
                        txn.amount)


def totals_of(groups: Iterable[tuple[str, str, int, int]]) -> SettlementTotals:
    """Batch totals from (kind, scheme, count, amount) groups of standing sales and refunds."""
    halves = {True: [0, 0, 0, 0], False: [0, 0, 0, 0]}
    for kind, scheme, count, amount in groups:
        half = halves[is_domestic(scheme)]
        at = 2 if kind == "refund" else 0
        half[at] += int(count)
        half[at + 1] += int(amount)
    return SettlementTotals(HalfTotals(*halves[True]), HalfTotals(*halves[False]))


def is_postgres_url(text: str) -> bool:
    """Whether a ``--ledger`` value names a PostgreSQL database rather than a SQLite file."""
    return text.startswith(("postgresql://", "postgres://"))


#: ``--ledger`` values that mean a throwaway ledger in memory.
MEMORY_LEDGERS = (":memory:", "memory")


def safe_ledger_name(spec: str | Path) -> str:
    """A ledger spec fit to print: a PostgreSQL URL without its password."""
    text = str(spec)
    if not is_postgres_url(text):
        return text
    head, at, tail = text.rpartition("@")
    if at:
        scheme, _, userinfo = head.partition("://")
        text = f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"
    base, question, query = text.partition("?")
    if question:
        kept = [p for p in query.split("&") if not p.lower().startswith("password=")]
        text = base + ("?" + "&".join(kept) if kept else "")
    return text


def open_store(spec: str | Path, *, processes: int = 1) -> LedgerStore:
    """The ledger a ``--ledger`` value names: ``postgresql://...``, ``:memory:``, or a SQLite file.

    Every entry point (``serve``, each ``--workers`` process, ``pos-emulator terminal``
    and ``ledger``, the benchmarks) opens its ledger here. Raises LedgerError with a
    clear message (never the password) when it cannot be opened. ``processes``: how many
    host processes serve from it at once (``serve --workers N``: N); PostgreSQL commits
    by it (pgledger.commit_modes).
    """
    text = str(spec)
    if text.strip().lower() in MEMORY_LEDGERS:
        return MemoryLedgerStore()
    if is_postgres_url(text):
        from emulator.host.pgledger import PostgresLedgerStore
        return PostgresLedgerStore(text, processes=processes)
    return SqliteLedgerStore(text)


# --- memory ---------------------------------------------------------------------------------
_MISSING: Any = object()


class MemoryLedgerStore:
    """A non-durable store for tests and throwaway runs (same semantics as SQLite).

    A session holds the store's lock (sessions never overlap) and keeps an undo
    log; leaving it with an exception undoes every write it made.
    """

    multi_process = False

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._open = False
        self.terminals: dict[str, TerminalRow] = {}
        self.txns: dict[TxnKey, TransactionRow] = {}
        self.by_rrn: dict[str, TxnKey] = {}
        self.by_batch: dict[tuple[str, str], dict[TxnKey, None]] = {}
        self.batches: dict[tuple[str, str], BatchRow] = {}
        self.uploads: dict[tuple[str, str, str], UploadRow] = {}
        self.uploads_by_batch: dict[tuple[str, str], dict[str, None]] = {}
        self.balances: dict[str, int] = {}
        self.tombstones: dict[tuple[str, str, str], TombstoneRow] = {}
        self.counters: dict[str, int] = {"rrn": 0}
        self.commits = 0

    @property
    def secret(self) -> bytes:
        return self._secret

    @contextmanager
    def session(self) -> Iterator[LedgerSession]:
        with self._lock:
            if self._open:
                raise LedgerError("a ledger session is already open in this thread")
            self._open = True
            session = _MemorySession(self)
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            else:
                self.commits += 1
            finally:
                self._open = False

    def commit(self, records: Sequence[LedgerRecord]) -> None:
        with self.session() as session:
            session.write(records)

    def terminal(self, tid: str) -> TerminalRow | None:
        with self._lock:
            return self.terminals.get(tid)

    def load(self) -> LedgerSnapshot:
        with self._lock:
            return LedgerSnapshot(self._secret,
                                  tuple(self.terminals[t] for t in sorted(self.terminals)),
                                  tuple(self.txns.values()), tuple(self.batches.values()),
                                  tuple(self.uploads.values()))

    def close(self) -> None:
        pass


class _MemorySession:
    lock_first = False

    def __init__(self, store: MemoryLedgerStore) -> None:
        self.s = store
        self._undo: list[tuple[dict[Any, Any], object, object]] = []

    def _put(self, table: dict[Any, Any], key: object, value: object) -> None:
        self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def rollback(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()

    # reads
    def terminal(self, tid: str) -> TerminalRow | None:
        return self.s.terminals.get(tid)

    def terminals(self) -> list[TerminalRow]:
        return [self.s.terminals[t] for t in sorted(self.s.terminals)]

    def any_terminal(self) -> bool:
        return any(not row.removed for row in self.s.terminals.values())

    def transaction(self, key: TxnKey, *, lock: bool = False) -> TransactionRow | None:
        return self.s.txns.get(key)

    def original_by_rrn(self, rrn: str) -> TransactionRow | None:
        return self.transaction_by_rrn(rrn)

    def transaction_by_rrn(self, rrn: str) -> TransactionRow | None:
        key = self.s.by_rrn.get(rrn)
        return self.s.txns.get(key) if key is not None else None

    def transactions(self) -> list[TransactionRow]:
        return list(self.s.txns.values())

    def tombstone(self, tid: str, batch: str, stan: str) -> TombstoneRow | None:
        return self.s.tombstones.get((tid, batch, stan))

    def lock_request(self, tid: str, batch: str, stan: str,
                     pan_hash: str | None = None, rrn: str | None = None) -> None:
        pass  # sessions never overlap

    def lock_requests(self, locks: Sequence[RequestLock]) -> None:
        pass  # sessions never overlap

    def lock_batch(self, tid: str, batch: str) -> None:
        pass  # sessions never overlap

    def spent(self, pan_hash: str) -> int:
        return self.s.balances.get(pan_hash, 0)

    def batch(self, tid: str, batch: str) -> BatchRow | None:
        return self.s.batches.get((tid, batch))

    def batch_totals(self, tid: str, batch: str) -> SettlementTotals:
        groups = []
        for key in self.s.by_batch.get((tid, batch), {}):
            txn = self.s.txns[key]
            if txn.status == "approved" and txn.kind in ("sale", "refund") \
                    and txn.amount is not None and txn.scheme is not None:
                groups.append((txn.kind, txn.scheme, 1, txn.amount))
        return totals_of(groups)

    def upload_count(self, tid: str, batch: str) -> int:
        return len(self.s.uploads_by_batch.get((tid, batch), {}))

    def uploads(self, tid: str, batch: str) -> list[UploadRow]:
        return [self.s.uploads[(tid, batch, stan)]
                for stan in self.s.uploads_by_batch.get((tid, batch), {})]

    def next_rrn(self) -> str:
        value = self.s.counters["rrn"] + 1
        self._put(self.s.counters, "rrn", value)
        return f"{value:012d}"

    # writes
    def book(self, row: TransactionRow) -> None:
        if row.key in self.s.txns:
            raise LedgerConflict(f"transaction {key_text(row.key)} is booked already")
        self._put_txn(row)

    def write(self, records: Sequence[LedgerRecord]) -> None:
        s = self.s
        for record in records:
            if isinstance(record, TransactionRow):
                self._put_txn(record)
            elif isinstance(record, TerminalRow):
                old = s.terminals.get(record.tid)
                if old is None or record.generation >= old.generation:
                    self._put(s.terminals, record.tid, record)
            elif isinstance(record, BatchRow):
                self._put(s.batches, (record.tid, record.batch), record)
            elif isinstance(record, UploadRow):
                self._put(s.uploads, (record.tid, record.batch, record.stan), record)
                index = s.uploads_by_batch.setdefault((record.tid, record.batch), {})
                self._put(index, record.stan, None)
            elif isinstance(record, BalanceRow):
                self._put(s.balances, record.pan_hash, record.spent)
            else:
                self._put(s.tombstones, (record.tid, record.batch, record.stan), record)

    def _put_txn(self, row: TransactionRow) -> None:
        s = self.s
        old = s.txns.get(row.key)
        self._put(s.txns, row.key, row)
        if old is not None and old.rrn is not None and old.rrn != row.rrn:
            self._undo.append((s.by_rrn, old.rrn, s.by_rrn.get(old.rrn, _MISSING)))
            s.by_rrn.pop(old.rrn, None)
        if row.rrn is not None:
            self._put(s.by_rrn, row.rrn, row.key)
        self._put(s.by_batch.setdefault((row.tid, row.batch), {}), row.key, None)


# --- SQL stores (SQLite here, PostgreSQL in emulator.host.pgledger) ----------------------------
TXN_COLUMNS = ("tid", "batch", "stan", "mti", "kind", "fingerprint", "status",
               "response_code", "received_at", "response", "pan_masked", "pan_hash", "scheme",
               "amount", "rrn", "auth_code", "date", "original", "refunded", "voided_by")
#: a transaction row's values in TXN_COLUMNS order (one C call, not a getattr loop)
txn_values: Callable[[TransactionRow], tuple[Any, ...]] = operator.attrgetter(*TXN_COLUMNS)
TERMINAL_COLUMNS = ("tid", "mid", "tmk", "pik", "mak", "tdk", "batch", "signed_on",
                    "generation", "removed")
# the column lists are constants of this module, never input; "?" marks a parameter
# (the PostgreSQL store turns it into %s)
TXN_SELECT = f"SELECT {', '.join(TXN_COLUMNS)} FROM transactions"  # noqa: S608
TXN_INSERT = (f"INSERT INTO transactions ({', '.join(TXN_COLUMNS)}) "  # noqa: S608
               f"VALUES ({', '.join(['?'] * len(TXN_COLUMNS))})")
#: what an upsert of a transaction row replaces when its key (the first four columns) exists
TXN_ON_CONFLICT = (" ON CONFLICT (tid, batch, stan, mti) DO UPDATE SET "
                   + ", ".join(f"{c} = excluded.{c}" for c in TXN_COLUMNS[4:]))
_TXN_UPSERT = TXN_INSERT + TXN_ON_CONFLICT
_REFUND_UPSERT = (
    "INSERT INTO refunds (refund_key, original_key, amount, status) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (refund_key) DO UPDATE SET status = excluded.status")
TERMINAL_SELECT = f"SELECT {', '.join(TERMINAL_COLUMNS)} FROM terminals"  # noqa: S608
_TERMINAL_UPSERT = (
    f"INSERT INTO terminals ({', '.join(TERMINAL_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['?'] * len(TERMINAL_COLUMNS))}) ON CONFLICT (tid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TERMINAL_COLUMNS[1:])
    + " WHERE excluded.generation >= terminals.generation")
BATCH_SELECT = ("SELECT tid, batch, settled, host_totals, terminal_totals, balanced "
                 "FROM batches")
_BATCH_UPSERT = (
    "INSERT INTO batches (tid, batch, settled, host_totals, terminal_totals, balanced) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tid, batch) DO UPDATE SET "
    "settled = excluded.settled, host_totals = excluded.host_totals, "
    "terminal_totals = excluded.terminal_totals, balanced = excluded.balanced")
UPLOAD_SELECT = ("SELECT tid, batch, stan, rrn, item_batch, item_stan, amount, matched "
                  "FROM uploads")
_UPLOAD_UPSERT = (
    "INSERT INTO uploads (tid, batch, stan, rrn, item_batch, item_stan, amount, matched) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tid, batch, stan) DO UPDATE SET "
    "rrn = excluded.rrn, item_batch = excluded.item_batch, item_stan = excluded.item_stan, "
    "amount = excluded.amount, matched = excluded.matched")
_BALANCE_UPSERT = ("INSERT INTO balances (pan_hash, spent) VALUES (?, ?) "
                   "ON CONFLICT (pan_hash) DO UPDATE SET spent = excluded.spent")
TOMBSTONE_UPSERT = (
    "INSERT INTO tombstones (tid, batch, stan, proc, amount) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (tid, batch, stan) DO UPDATE SET proc = excluded.proc, "
    "amount = excluded.amount")
_TOTALS = ("SELECT kind, scheme, count(*), sum(amount) FROM transactions "
           "WHERE tid = ? AND batch = ? AND status = 'approved' AND kind IN ('sale', 'refund') "
           "AND amount IS NOT NULL AND scheme IS NOT NULL GROUP BY kind, scheme")
#: one-time migration to schema 2: the balances a ledger of schema 1 implied
BALANCES_FROM_TRANSACTIONS = (
    "INSERT INTO balances (pan_hash, spent) "
    "SELECT pan_hash, sum(CASE WHEN kind = 'sale' THEN amount ELSE -amount END) "
    "FROM transactions WHERE status = 'approved' AND kind IN ('sale', 'refund') "
    "AND pan_hash IS NOT NULL AND amount IS NOT NULL GROUP BY pan_hash "
    "ON CONFLICT (pan_hash) DO NOTHING")
#: one-time migration to schema 2: reversals whose tombstones a ledger of schema 1 implied
TOMBSTONE_SOURCES = (TXN_SELECT + " WHERE kind = 'reversal' AND original IS NULL "
                     "AND status = 'acknowledged'")


def terminal_of(r: Sequence[Any]) -> TerminalRow:
    return TerminalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), int(r[8]),
                       bool(r[9]))


def transaction_of(r: Sequence[Any]) -> TransactionRow:
    return TransactionRow(*r)


def batch_of(r: Sequence[Any]) -> BatchRow:
    return BatchRow(r[0], r[1], bool(r[2]), r[3], r[4], None if r[5] is None else bool(r[5]))


def upload_of(r: Sequence[Any]) -> UploadRow:
    return UploadRow(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), bool(r[7]))


class SqlSession:
    """A :class:`LedgerSession` over a DB-API connection (SQLite; PostgreSQL subclasses it).

    ``run(sql, params)`` executes one statement and turns the driver's errors into
    LedgerConflict/LedgerError. Subclasses say how a row is locked and how the
    next RRN and a card's balance are read.
    """

    lock_suffix = ""  # appended to a SELECT that must lock what it reads
    lock_first = False  # see LedgerSession

    def __init__(self, run: Callable[[str, Sequence[object]], Any]) -> None:
        self.run = run
        self._rrn: int | None = None  # the RRN counter as this session moved it
        self._rrn_read: int | None = None

    def _one(self, sql: str, params: Sequence[object]) -> Any:
        return self.run(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        return list(self.run(sql, params).fetchall())

    # reads
    def terminal(self, tid: str) -> TerminalRow | None:
        row = self._one(TERMINAL_SELECT + " WHERE tid = ?", (tid,))
        return terminal_of(row) if row is not None else None

    def terminals(self) -> list[TerminalRow]:
        return [terminal_of(r) for r in self._all(TERMINAL_SELECT + " ORDER BY tid")]

    def any_terminal(self) -> bool:
        # ORDER BY tid: the key's index, first row kept (PostgreSQL with seq scans off gave
        # the plain LIMIT 1 a seq scan costed past jit_above_cost: JIT-compiled, ~200 ms)
        return self._one("SELECT 1 FROM terminals WHERE removed = ? ORDER BY tid LIMIT 1",
                         (self.flag(False),)) is not None

    def transaction(self, key: TxnKey, *, lock: bool = False) -> TransactionRow | None:
        row = self._one(TXN_SELECT + " WHERE tid = ? AND batch = ? AND stan = ? AND mti = ?"
                        + (self.lock_suffix if lock else ""), key)
        return transaction_of(row) if row is not None else None

    def original_by_rrn(self, rrn: str) -> TransactionRow | None:
        row = self._one(TXN_SELECT + " WHERE rrn = ?" + self.lock_suffix, (rrn,))
        return transaction_of(row) if row is not None else None

    def transaction_by_rrn(self, rrn: str) -> TransactionRow | None:
        row = self._one(TXN_SELECT + " WHERE rrn = ?", (rrn,))
        return transaction_of(row) if row is not None else None

    def transactions(self) -> list[TransactionRow]:
        return [transaction_of(r) for r in self._all(TXN_SELECT + " ORDER BY seq")]

    def tombstone(self, tid: str, batch: str, stan: str) -> TombstoneRow | None:
        row = self._one("SELECT proc, amount FROM tombstones WHERE tid = ? AND batch = ? "
                        "AND stan = ?", (tid, batch, stan))
        return None if row is None else TombstoneRow(tid, batch, stan, row[0], row[1])

    def lock_request(self, tid: str, batch: str, stan: str,
                     pan_hash: str | None = None, rrn: str | None = None) -> None:
        """Serialize this session with any other that books or reverses (tid, batch, stan).

        SQLite: nothing to do (a session holds the file's write lock).
        """

    def lock_requests(self, locks: Sequence[RequestLock]) -> None:
        """Every lock_request of a group at once (SQLite: nothing to do, as lock_request)."""

    def lock_batch(self, tid: str, batch: str) -> None:
        """Serialize a settlement of (tid, batch) with the bookings of that batch.

        SQLite: nothing to do (a session holds the file's write lock).
        """

    def spent(self, pan_hash: str) -> int:
        row = self._one("SELECT spent FROM balances WHERE pan_hash = ?", (pan_hash,))
        return int(row[0]) if row is not None else 0

    def batch(self, tid: str, batch: str) -> BatchRow | None:
        row = self._one(BATCH_SELECT + " WHERE tid = ? AND batch = ?", (tid, batch))
        return batch_of(row) if row is not None else None

    def batch_totals(self, tid: str, batch: str) -> SettlementTotals:
        return totals_of(self._all(_TOTALS, (tid, batch)))

    def upload_count(self, tid: str, batch: str) -> int:
        row = self._one("SELECT count(*) FROM uploads WHERE tid = ? AND batch = ?", (tid, batch))
        return int(row[0])

    def uploads(self, tid: str, batch: str) -> list[UploadRow]:
        return [upload_of(r) for r in self._all(
            UPLOAD_SELECT + " WHERE tid = ? AND batch = ? ORDER BY stan", (tid, batch))]

    def next_rrn(self) -> str:
        # read once a session, written back once (finish): the session holds the write lock
        if self._rrn is None:
            row = self._one("SELECT value FROM counters WHERE name = 'rrn'", ())
            if row is None:
                raise LedgerError("the ledger has no RRN counter")
            self._rrn = self._rrn_read = int(row[0])
        self._rrn += 1
        return str(self._rrn).zfill(12)  # f"{:012d}" of a count, without a format spec

    def finish(self) -> None:
        """Before COMMIT: write back what the session kept to itself (the RRN counter)."""
        if self._rrn is not None and self._rrn != self._rrn_read:
            self.run("UPDATE counters SET value = ? WHERE name = 'rrn'", (self._rrn,))
            self._rrn_read = self._rrn

    # writes
    def book(self, row: TransactionRow) -> None:
        self.run(TXN_INSERT, txn_values(row))
        self._refund_row(row)

    def write(self, records: Sequence[LedgerRecord]) -> None:
        for record in records:
            for sql, params in self.statements(record):
                self.run(sql, params)

    def _refund_row(self, row: TransactionRow) -> None:
        if row.kind == "refund" and row.original is not None:
            self.run(_REFUND_UPSERT, (key_text(row.key), row.original, row.amount or 0,
                                      row.status))

    def statements(self, record: LedgerRecord) -> list[tuple[str, tuple[object, ...]]]:
        """The (SQL, parameters) pairs that upsert ``record``."""
        if isinstance(record, TransactionRow):
            out: list[tuple[str, tuple[object, ...]]] = [
                (_TXN_UPSERT, txn_values(record))]
            if record.kind == "refund" and record.original is not None:
                out.append((_REFUND_UPSERT, (key_text(record.key), record.original,
                                             record.amount or 0, record.status)))
            return out
        if isinstance(record, TerminalRow):
            return [(_TERMINAL_UPSERT, self.terminal_params(record))]
        if isinstance(record, BatchRow):
            return [(_BATCH_UPSERT, (record.tid, record.batch, self.flag(record.settled),
                                     record.host_totals, record.terminal_totals,
                                     None if record.balanced is None
                                     else self.flag(record.balanced)))]
        if isinstance(record, UploadRow):
            return [(_UPLOAD_UPSERT, (record.tid, record.batch, record.stan, record.rrn,
                                      record.item_batch, record.item_stan, record.amount,
                                      self.flag(record.matched)))]
        if isinstance(record, BalanceRow):
            return [(_BALANCE_UPSERT, (record.pan_hash, record.spent))]
        return [(TOMBSTONE_UPSERT, (record.tid, record.batch, record.stan, record.proc,
                                     record.amount))]

    def terminal_params(self, record: TerminalRow) -> tuple[object, ...]:
        return (record.tid, record.mid, record.tmk, record.pik, record.mak, record.tdk,
                record.batch, self.flag(record.signed_on), record.generation,
                self.flag(record.removed))

    @staticmethod
    def flag(value: bool) -> object:
        return int(value)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS terminals (
    tid TEXT PRIMARY KEY,
    mid TEXT NOT NULL,
    tmk TEXT NOT NULL,
    pik TEXT NOT NULL DEFAULT '',
    mak TEXT NOT NULL DEFAULT '',
    tdk TEXT NOT NULL DEFAULT '',
    batch TEXT NOT NULL,
    signed_on INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    mti TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    response_code TEXT NOT NULL,
    received_at TEXT NOT NULL,
    response TEXT NOT NULL,
    pan_masked TEXT,
    pan_hash TEXT,
    scheme TEXT,
    amount INTEGER,
    rrn TEXT UNIQUE,
    auth_code TEXT,
    date TEXT,
    original TEXT,
    refunded INTEGER NOT NULL DEFAULT 0,
    voided_by TEXT,
    UNIQUE (tid, batch, stan, mti)
);
-- Dropped (made by earlier versions): transactions_original and refunds_original, indexes
-- no statement reads through (refunds per original come from transactions.original, read
-- with a whole ledger; the one reader of original, schema 2's migration, runs once). Each
-- cost every booking an index insert, and every commit a page of each in the WAL (a
-- group of 4 wrote 12-15 pages, 2 of them these). Dropped at every opening (nothing to do
-- once gone): an older process's opening makes them again, harmlessly.
DROP INDEX IF EXISTS transactions_original;
CREATE TABLE IF NOT EXISTS refunds (
    refund_key TEXT PRIMARY KEY,
    original_key TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL
);
DROP INDEX IF EXISTS refunds_original;
CREATE TABLE IF NOT EXISTS batches (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    settled INTEGER NOT NULL,
    host_totals TEXT NOT NULL,
    terminal_totals TEXT NOT NULL,
    balanced INTEGER,
    PRIMARY KEY (tid, batch)
);
CREATE TABLE IF NOT EXISTS uploads (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    rrn TEXT,
    item_batch TEXT NOT NULL,
    item_stan TEXT NOT NULL,
    amount INTEGER NOT NULL,
    matched INTEGER NOT NULL,
    PRIMARY KEY (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS balances (
    pan_hash TEXT PRIMARY KEY,
    spent INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    proc TEXT,
    amount INTEGER,
    PRIMARY KEY (tid, batch, stan)
);
"""
# Batch totals read (tid, batch) through the UNIQUE (tid, batch, stan, mti) index
# (its leading columns); the RRN lookups through UNIQUE (rrn).


#: Seconds a SQLite statement waits for another connection's lock (its busy timeout),
#: unless the store yields instead (SqliteLedgerStore.yield_on_busy).
SQLITE_BUSY_TIMEOUT = 30.0
#: Bound of each SqliteSession cache (entries; cleared when full).
_SQLITE_CACHE = 65_536
#: Bound of the SqliteSession cache of transaction rows by RRN (rows; cleared when full).
_SQLITE_ROWS = 4_096
#: Whether a transaction key is booked (SqliteSession.transaction), from the key's index.
_TXN_PROBE = "SELECT 1 FROM transactions WHERE tid = ? AND batch = ? AND stan = ? AND mti = ?"
#: SqliteSession.book's INSERT of a row naming no original and no void (both NULL).
_NEW_COLUMNS = tuple(c for c in TXN_COLUMNS if c not in ("original", "voided_by"))
_TXN_INSERT_NEW = (f"INSERT INTO transactions ({', '.join(_NEW_COLUMNS)}) "  # noqa: S608
                   f"VALUES ({', '.join(['?'] * len(_NEW_COLUMNS))})")
_new_values: Callable[[TransactionRow], tuple[Any, ...]] = operator.attrgetter(*_NEW_COLUMNS)
#: Whether a terminal's batch has any tombstone (SqliteSession.tombstone), from the key's index.
_STONED = "SELECT 1 FROM tombstones WHERE tid = ? AND batch = ? LIMIT 1"


@dataclass
class _SqliteCache:
    """Rows as the file holds them, kept by one connection between its sessions."""

    data_version: int | None = None  # PRAGMA data_version when last checked
    terminals: dict[str, TerminalRow | None] = field(default_factory=dict)
    batches: dict[tuple[str, str], BatchRow | None] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    # (TID, batch): whether the tombstones table holds a row of that batch
    stoned: dict[tuple[str, str], bool] = field(default_factory=dict)
    rrn: int | None = None  # the RRN counter as the file holds it (None: not known)
    # transaction rows by RRN: approved sales this connection booked, rows it read by RRN
    by_rrn: dict[str, TransactionRow] = field(default_factory=dict)

    def clear(self) -> None:
        self.data_version = None
        self.terminals.clear()
        self.batches.clear()
        self.spent.clear()
        self.stoned.clear()
        self.rrn = None
        self.by_rrn.clear()


class SqliteSession(SqlSession):
    """SQLite's session: terminals, batches and card balances served from memory.

    A session holds the file's write lock from BEGIN to COMMIT, and ``PRAGMA
    data_version`` (read once a session, under that lock) tells whether another
    connection committed since this one last looked. Until one does, nothing but
    this connection's own sessions changes the file, so a row they read or wrote is
    still what the file holds: the three rows every booking reads are kept between
    sessions (a balance as written; a terminal or batch row written is read again),
    and so are the RRN counter every group reads, whether a terminal's batch has
    any tombstone (every sale, void and refund asks for its own; nearly none exist),
    and transaction rows by RRN: the sales this connection booked and the rows it read
    by RRN, as written since (a refund or void reads its original by RRN: a whole row,
    ~3.5x the instructions of the key's probe).
    The store drops them all when another connection commits or a session of this
    one rolls back.
    """

    def __init__(self, run: Callable[[str, Sequence[object]], Any], cache: _SqliteCache) -> None:
        super().__init__(run)
        self._cache = cache

    def terminal(self, tid: str) -> TerminalRow | None:
        known = self._cache.terminals
        if tid in known:
            return known[tid]
        row = super().terminal(tid)
        if len(known) >= _SQLITE_CACHE:
            known.clear()
        known[tid] = row
        return row

    def batch(self, tid: str, batch: str) -> BatchRow | None:
        known = self._cache.batches
        if (tid, batch) in known:
            return known[(tid, batch)]
        row = super().batch(tid, batch)
        if len(known) >= _SQLITE_CACHE:
            known.clear()
        known[(tid, batch)] = row
        return row

    def spent(self, pan_hash: str) -> int:
        known = self._cache.spent
        value = known.get(pan_hash)
        if value is None:
            value = super().spent(pan_hash)
            if len(known) >= _SQLITE_CACHE:
                known.clear()
            known[pan_hash] = value
        return value

    def tombstone(self, tid: str, batch: str, stan: str) -> TombstoneRow | None:
        known = self._cache.stoned
        stoned = known.get((tid, batch))
        if stoned is None:
            stoned = self.run(_STONED, (tid, batch)).fetchone() is not None
            if len(known) >= _SQLITE_CACHE:
                known.clear()
            known[(tid, batch)] = stoned
        return super().tombstone(tid, batch, stan) if stoned else None

    def next_rrn(self) -> str:
        if self._rrn is None and self._cache.rrn is not None:
            self._rrn = self._rrn_read = self._cache.rrn
        rrn = super().next_rrn()
        self._cache.rrn = self._rrn_read  # as read; finish() moves it with the file's
        return rrn

    def finish(self) -> None:
        super().finish()
        if self._rrn is not None:
            self._cache.rrn = self._rrn  # written back (a failed COMMIT clears the cache)

    def transaction(self, key: TxnKey, *, lock: bool = False) -> TransactionRow | None:
        # Most keys a request asks for are new: a one-column probe first, the row only
        # when it exists (the sqlite3 module builds a description of every column of
        # every SELECT it runs: ~10k instructions for a whole transaction row).
        if self.run(_TXN_PROBE, key).fetchone() is None:
            return None
        return super().transaction(key, lock=lock)

    def original_by_rrn(self, rrn: str) -> TransactionRow | None:
        row = self._cache.by_rrn.get(rrn)
        if row is None:
            row = self._by_rrn(super().original_by_rrn(rrn))
        return row

    def transaction_by_rrn(self, rrn: str) -> TransactionRow | None:
        row = self._cache.by_rrn.get(rrn)
        if row is None:
            row = self._by_rrn(super().transaction_by_rrn(rrn))
        return row

    def _by_rrn(self, row: TransactionRow | None) -> TransactionRow | None:
        if row is not None and row.rrn is not None:
            keep(self._cache.by_rrn, row.rrn, row, _SQLITE_ROWS)
        return row

    def book(self, row: TransactionRow) -> None:
        # A new sale names no original and no void: its row goes in without the two
        # columns (NULL by default), whose None parameters the sqlite3 module would
        # adapt one by one (~2.6k instructions each: None is not a type it binds as is)
        if row.original is None and row.voided_by is None:
            self.run(_TXN_INSERT_NEW, _new_values(row))
        else:
            self.run(TXN_INSERT, txn_values(row))
        self._refund_row(row)
        if row.kind == "sale" and row.status == "approved":  # what refunds and voids name
            self._by_rrn(row)

    def write(self, records: Sequence[LedgerRecord]) -> None:
        super().write(records)
        cache = self._cache
        for record in records:
            if isinstance(record, TransactionRow):
                known, rrn = cache.by_rrn, record.rrn
                old = known.get(rrn) if rrn is not None else None
                if rrn is not None and old is not None and old.key == record.key:
                    known[rrn] = record
                elif known:  # its key may be kept under another RRN: nothing kept is sure
                    known.clear()
            elif isinstance(record, BalanceRow):
                cache.spent[record.pan_hash] = record.spent  # stored as given
            elif isinstance(record, TerminalRow):  # the upsert may keep a newer generation
                cache.terminals.pop(record.tid, None)
            elif isinstance(record, BatchRow):
                cache.batches.pop((record.tid, record.batch), None)
            elif isinstance(record, TombstoneRow):
                cache.stoned[(record.tid, record.batch)] = True


def _wal(db: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode (persistent: a no-op once it is), waiting up to ``timeout``.

    Turning a new file to WAL takes its exclusive lock, and SQLite answers SQLITE_BUSY at
    once when another connection holds a lock, without the busy handler: two processes
    opening one new ledger at once (``serve --workers 2`` over a fresh file) failed in 15
    of 160 opens ("database is locked")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


class SqliteLedgerStore:
    """The ledger in one SQLite file: WAL journal, ``synchronous=FULL``.

    A session is ``BEGIN IMMEDIATE`` on this store's one connection (a lock keeps
    sessions of one process apart; the file's write lock keeps processes apart),
    and its COMMIT returns once the transaction is durable. A session waits for another
    process's write lock up to :data:`SQLITE_BUSY_TIMEOUT` (then LedgerConflict), unless
    :attr:`yield_on_busy` is set: then it does not wait at all (LedgerBusy, nothing ran),
    and the caller waits without blocking its thread (the server's committer: yielding to
    its event loop, which goes on serving). Opening migrates a
    ledger of an older schema in place (once: the one-time cost of deriving the
    balances and tombstones from the transactions); after that nothing at start
    reads the transactions.
    """

    multi_process = True  # several processes on one file serialize on its write lock

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False,
                                       timeout=SQLITE_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc
        try:
            _wal(self._db, SQLITE_BUSY_TIMEOUT)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._secret = self._load_secret()
        except sqlite3.Error as exc:
            self._db.close()
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        # one cursor for every statement (under the lock; each result is fetched before
        # the next statement): Connection.execute would make a new cursor per statement
        self._cursor = self._db.cursor()
        self._cache = _SqliteCache()  # see SqliteSession
        self._yield = False

    def __repr__(self) -> str:
        return f"SqliteLedgerStore({str(self.path)!r})"

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def yield_on_busy(self) -> bool:
        """Whether a session refuses to wait for another process's write lock: its BEGIN
        raises LedgerBusy at once (nothing ran) instead of waiting up to the busy timeout.

        The server's committer sets it (GroupCommitter): it then waits for the lock
        yielding to its event loop, so a worker whose ledger another process holds goes
        on answering its supervisor's heartbeats and reading its connections. Every
        statement of the connection then has no busy timeout (one connection-wide
        setting: a PRAGMA per session would cost more than the session's own BEGIN); in
        WAL only BEGIN IMMEDIATE waits for another writer, and a rare busy later in a
        session (a reader meeting a wal-index being rebuilt) is a LedgerConflict: the
        session runs again.
        """
        return self._yield

    @yield_on_busy.setter
    def yield_on_busy(self, on: bool) -> None:
        with self._lock:
            millis = 0 if on else int(SQLITE_BUSY_TIMEOUT * 1000)
            self._db.execute(f"PRAGMA busy_timeout = {millis}")
            self._yield = on

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in db.execute("PRAGMA table_info(terminals)")}
            for name in ("generation", "removed"):  # ledgers made before live provisioning
                if name not in columns:
                    db.execute(
                        f"ALTER TABLE terminals ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
            row = db.execute("SELECT value FROM counters WHERE name = 'schema'").fetchone()
            if row is None or int(row[0]) < SCHEMA_VERSION:
                # schema 1 kept balances and tombstones only in the host's memory
                db.execute("DROP TRIGGER IF EXISTS terminals_added")
                db.execute("DROP TRIGGER IF EXISTS terminals_provisioned")
                db.execute("DELETE FROM meta WHERE name = 'terminals_version'")
                db.execute(BALANCES_FROM_TRANSACTIONS)
                session = SqlSession(db.execute)
                for r in db.execute(TOMBSTONE_SOURCES).fetchall():
                    stone = tombstone_of(transaction_of(r))
                    if stone is not None:
                        session.write([stone])
                top = db.execute("SELECT max(rrn) FROM transactions").fetchone()[0]
                last = int(top) if isinstance(top, str) and top.isdigit() else 0
                db.execute("INSERT INTO counters (name, value) VALUES ('rrn', ?) "
                           "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                           (last,))
                db.execute("INSERT INTO counters (name, value) VALUES ('schema', ?) "
                           "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                           (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _load_secret(self) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'pan_key'").fetchone()
        if row is not None:
            return bytes(row[0])
        secret = secrets.token_bytes(32)
        self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('pan_key', ?)",
                         (secret,))
        row = self._db.execute("SELECT value FROM meta WHERE name = 'pan_key'").fetchone()
        return bytes(row[0])

    def _run(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        try:
            return self._cursor.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise LedgerConflict(f"ledger {self.path}: {exc}") from exc
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerConflict(f"ledger {self.path}: {exc}") from exc
            raise LedgerError(f"ledger {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from exc

    def _begin(self) -> None:
        """BEGIN IMMEDIATE: this connection takes the file's write lock (see yield_on_busy)."""
        try:
            self._run("BEGIN IMMEDIATE")
        except LedgerConflict as exc:  # the lock is another connection's (busy)
            if self._yield:
                raise LedgerBusy(str(exc)) from exc
            raise

    @contextmanager
    def session(self) -> Iterator[SqlSession]:
        with self._lock:
            db = self._db
            self._begin()
            cache = self._cache
            try:
                version = self._run("PRAGMA data_version").fetchone()[0]
                if version != cache.data_version:  # another connection committed
                    cache.clear()
                    cache.data_version = version
                session = SqliteSession(self._run, cache)
                yield session
                session.finish()
            except BaseException:
                cache.clear()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            try:
                self._cursor.execute("COMMIT")  # the one cursor (see __init__)
            except sqlite3.Error as exc:
                cache.clear()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise LedgerError(f"ledger commit failed: {exc}") from exc

    def commit(self, records: Sequence[LedgerRecord]) -> None:
        with self.session() as session:
            session.write(records)

    def terminal(self, tid: str) -> TerminalRow | None:
        """One terminal row as stored (removed ones included), or None."""
        with self._lock:
            return SqlSession(self._run).terminal(tid)

    def load(self) -> LedgerSnapshot:
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN")
                try:
                    terminals = tuple(terminal_of(r) for r in db.execute(
                        TERMINAL_SELECT + " ORDER BY tid"))
                    txns = tuple(transaction_of(r) for r in db.execute(
                        TXN_SELECT + " ORDER BY seq"))
                    batches = tuple(batch_of(r) for r in db.execute(BATCH_SELECT))
                    uploads = tuple(upload_of(r) for r in db.execute(UPLOAD_SELECT))
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read ledger {self.path}: {exc}") from exc
        return LedgerSnapshot(self._secret, terminals, txns, batches, uploads)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def response_json(mti: str, fields: dict[int, str | bytes]) -> str:
    """A stored answer: MTI and fields, bytes as hex (so the row is plain text).

    The text ``json.dumps({"mti": mti, "fields": {"3": "000000", "55": {"hex": ...}}},
    separators=(",", ":"))`` gives, written directly. An answer's fields are digits and
    plain text, which JSON quotes as they are: then the text is its shape's template
    (see _template) filled in at once; otherwise each string is quoted and escaped by
    json's own encoder.
    """
    values: list[object] = [mti, *fields.values()]
    shape = (tuple(fields), tuple(map(type, values)))
    template = _TEMPLATES.get(shape)
    if template is None:
        template = _template(shape)
    text, hexed = template
    if text:
        for at in hexed:
            values[at] = values[at].hex()  # type: ignore[attr-defined]  # bytes, by the shape
        plain = "".join(values)  # type: ignore[arg-type]  # all str now, by the shape
        if plain.isascii() and not plain.encode().translate(None, _AS_IS):
            return text % tuple(values)
    items = ",".join([  # a list, not a generator: join makes one of it anyway
        _FIELD_KEYS[k] + ('{"hex":"' + v.hex() + '"}' if isinstance(v, bytes) else _quote(v))
        for k, v in fields.items()])
    return f'{{"mti":{_quote(mti)},"fields":{{{items}}}}}'


_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii

#: response_json's templates by shape (field numbers; the MTI's and the fields' types).
#: Bounded, cleared when full.
_TEMPLATES: dict[tuple[tuple[int, ...], tuple[type, ...]], tuple[str, tuple[int, ...]]] = {}
_TEMPLATES_MAX = 256
#: What encode_basestring_ascii leaves as it is: ' ' to '~' but the quote and backslash.
_AS_IS = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


def _template(shape: tuple[tuple[int, ...], tuple[type, ...]]) -> tuple[str, tuple[int, ...]]:
    """The text of an answer of ``shape`` with a %s for the MTI and each field's value,
    and where the values that are bytes (written as hex) are; a shape of other types
    has the empty text (its answers are quoted field by field)."""
    numbers, kinds = shape
    template: tuple[str, tuple[int, ...]] = ("", ())
    if kinds[0] is str and all(kind is str or kind is bytes for kind in kinds):
        items = ",".join(f'"{n}":{{"hex":"%s"}}' if kind is bytes else f'"{n}":"%s"'
                         for n, kind in zip(numbers, kinds[1:], strict=True))
        hexed = tuple(at for at, kind in enumerate(kinds) if kind is bytes)
        template = ('{"mti":"%s","fields":{' + items + "}}", hexed)
    return keep(_TEMPLATES, shape, template, _TEMPLATES_MAX)


class _Keys(dict[int, str]):
    def __missing__(self, number: int) -> str:
        return f'"{number}":'


#: '"3":' of each field number (formatting an int in an f-string costs more than a look-up)
_FIELD_KEYS = _Keys({n: f'"{n}":' for n in range(129)})


def response_fields(text: str) -> tuple[str, dict[int, str | bytes]]:
    """The MTI and fields of a stored answer."""
    data = json.loads(text)
    fields: dict[int, str | bytes] = {}
    for k, v in data["fields"].items():
        fields[int(k)] = bytes.fromhex(v["hex"]) if isinstance(v, dict) else str(v)
    return str(data["mti"]), fields
