"""The acquirer host's ledger: durable records, the store interface, and its SQLite store.

The host's rules keep their state in memory (authoritative while running) and
hand every change to the server as :data:`LedgerRecord` values; the server
commits them through a :class:`LedgerStore` *before* the answer leaves, batching
the records of many answers into one ``commit`` (group commit).  At start,
``load()`` returns a :class:`LedgerSnapshot` from which the host rebuilds the
same state, so a duplicate after a restart gets the same stored answer.

Every record is an idempotent upsert of one row (the row's latest state), so
committing a record twice, or out of a crash-interrupted batch again, is safe.

Security: the full PAN is never stored in a plain column: transactions carry a
masked PAN for people and a keyed hash (HMAC-SHA256 under a per-ledger secret
kept in the ``meta`` table) for matching.  Stored answers are kept without F2.
Terminal keys are stored in the clear: this is an emulator holding test keys.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from emulator.host.errors import LedgerError


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


def key_text(key: TxnKey) -> str:
    return "/".join(key)


def parse_key(text: str) -> TxnKey:
    tid, batch, stan, mti = text.split("/")
    return (tid, batch, stan, mti)


@dataclass(frozen=True)
class BatchRow:
    """A terminal's batch: settled or not, and the totals both sides gave (F48 digits)."""

    tid: str
    batch: str
    settled: bool = False
    host_totals: str = ""
    terminal_totals: str = ""
    balanced: bool | None = None


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


LedgerRecord = TerminalRow | TransactionRow | BatchRow | UploadRow


@dataclass(frozen=True)
class LedgerSnapshot:
    """Everything the host needs to rebuild its state at start."""

    secret: bytes = field(repr=False)
    terminals: tuple[TerminalRow, ...] = ()
    transactions: tuple[TransactionRow, ...] = ()  # in booking order
    batches: tuple[BatchRow, ...] = ()
    uploads: tuple[UploadRow, ...] = ()


class LedgerStore(Protocol):
    """Where the host's records become durable. One ``commit`` is one transaction."""

    def load(self) -> LedgerSnapshot: ...

    def commit(self, records: Sequence[LedgerRecord]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class TerminalSource(Protocol):
    """Where a running host learns of terminals provisioned by another process.

    ``changed_terminals()`` is called before every request: it must be cheap when
    nothing changed (return None) and return every terminal row (removed ones
    included) when something may have.
    """

    def changed_terminals(self) -> Sequence[TerminalRow] | None: ...


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


class MemoryLedgerStore:
    """A non-durable store for tests and throwaway runs (same semantics as SQLite)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._terminals: dict[str, TerminalRow] = {}
        self._txns: dict[TxnKey, TransactionRow] = {}
        self._batches: dict[tuple[str, str], BatchRow] = {}
        self._uploads: dict[tuple[str, str, str], UploadRow] = {}
        self.commits = 0

    def load(self) -> LedgerSnapshot:
        return LedgerSnapshot(self._secret, tuple(self._terminals.values()),
                              tuple(self._txns.values()), tuple(self._batches.values()),
                              tuple(self._uploads.values()))

    def commit(self, records: Sequence[LedgerRecord]) -> None:
        for record in records:
            if isinstance(record, TerminalRow):
                old = self._terminals.get(record.tid)
                if old is None or record.generation >= old.generation:
                    self._terminals[record.tid] = record
            elif isinstance(record, TransactionRow):
                self._txns[record.key] = record
            elif isinstance(record, BatchRow):
                self._batches[(record.tid, record.batch)] = record
            else:
                self._uploads[(record.tid, record.batch, record.stan)] = record
        self.commits += 1

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
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
CREATE INDEX IF NOT EXISTS transactions_original ON transactions (original);
CREATE TABLE IF NOT EXISTS refunds (
    refund_key TEXT PRIMARY KEY,
    original_key TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_original ON refunds (original_key);
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
"""

_TXN_COLUMNS = ("tid", "batch", "stan", "mti", "kind", "fingerprint", "status",
                "response_code", "received_at", "response", "pan_masked", "pan_hash", "scheme",
                "amount", "rrn", "auth_code", "date", "original", "refunded", "voided_by")
_TXN_SELECT = (
    "SELECT tid, batch, stan, mti, kind, fingerprint, status, response_code, received_at, "
    "response, pan_masked, pan_hash, scheme, amount, rrn, auth_code, date, original, "
    "refunded, voided_by FROM transactions ORDER BY seq")
_TXN_UPSERT = (
    "INSERT INTO transactions (tid, batch, stan, mti, kind, fingerprint, status, "
    "response_code, received_at, response, pan_masked, pan_hash, scheme, amount, rrn, "
    "auth_code, date, original, refunded, voided_by) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tid, batch, stan, mti) DO UPDATE SET "
    "kind = excluded.kind, fingerprint = excluded.fingerprint, status = "
    "excluded.status, response_code = excluded.response_code, received_at = "
    "excluded.received_at, response = excluded.response, pan_masked = "
    "excluded.pan_masked, pan_hash = excluded.pan_hash, scheme = excluded.scheme, "
    "amount = excluded.amount, rrn = excluded.rrn, auth_code = excluded.auth_code, "
    "date = excluded.date, original = excluded.original, refunded = "
    "excluded.refunded, voided_by = excluded.voided_by")


class SqliteLedgerStore:
    """The ledger in one SQLite file: WAL journal, ``synchronous=FULL``.

    ``commit`` writes all records in one transaction and returns only when it is
    durable. The server calls it from one writer thread; the connection is
    opened with ``check_same_thread=False`` and a lock guards it, so ``load``
    and read helpers may run on another thread.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(terminals)")}
            for name in ("generation", "removed"):  # ledgers made before live provisioning
                if name not in columns:
                    self._db.execute(
                        f"ALTER TABLE terminals ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
            self._db.executescript(_PROVISIONING_TRIGGERS)
            self._secret = self._load_secret()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        self._data_version = 0
        self._seen_version = 0

    def _load_secret(self) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'pan_key'").fetchone()
        if row is not None:
            return bytes(row[0])
        secret = secrets.token_bytes(32)
        self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('pan_key', ?)",
                         (secret,))
        row = self._db.execute("SELECT value FROM meta WHERE name = 'pan_key'").fetchone()
        return bytes(row[0])

    def load(self) -> LedgerSnapshot:
        with self._lock:
            try:
                db = self._db
                terminals = _terminal_rows(db)
                txns = tuple(
                    TransactionRow(*r) for r in db.execute(_TXN_SELECT))
                batches = tuple(
                    BatchRow(r[0], r[1], bool(r[2]), r[3], r[4],
                             None if r[5] is None else bool(r[5]))
                    for r in db.execute("SELECT tid, batch, settled, host_totals, "
                                        "terminal_totals, balanced FROM batches"))
                uploads = tuple(
                    UploadRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))
                    for r in db.execute("SELECT tid, batch, stan, rrn, item_batch, item_stan, "
                                        "amount, matched FROM uploads"))
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read ledger {self.path}: {exc}") from exc
        return LedgerSnapshot(self._secret, terminals, txns, batches, uploads)

    def commit(self, records: Sequence[LedgerRecord]) -> None:
        if not records:
            return
        # One executemany per statement: each sqlite3 call releases the GIL, and
        # getting it back from a busy event loop can take a whole switch interval.
        # Rows keep their order within a statement, so a later upsert still wins.
        groups: dict[str, list[tuple[object, ...]]] = {}
        for record in records:
            for sql, params in self._statements(record):
                groups.setdefault(sql, []).append(params)
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                for sql, rows in groups.items():
                    db.executemany(sql, rows)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise LedgerError(f"ledger commit failed: {exc}") from exc

    @staticmethod
    def _statements(record: LedgerRecord) -> list[tuple[str, tuple[object, ...]]]:
        """The (SQL, parameters) pairs that store ``record``."""
        out: list[tuple[str, tuple[object, ...]]] = []
        if isinstance(record, TransactionRow):
            out.append((_TXN_UPSERT, tuple(getattr(record, c) for c in _TXN_COLUMNS)))
            if record.kind == "refund" and record.original is not None:
                out.append((
                    "INSERT INTO refunds (refund_key, original_key, amount, status) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (refund_key) DO UPDATE SET "
                    "status = excluded.status",
                    (key_text(record.key), record.original, record.amount or 0, record.status)))
        elif isinstance(record, TerminalRow):
            out.append((_TERMINAL_UPSERT, _terminal_params(record)))
        elif isinstance(record, BatchRow):
            out.append((
                "INSERT INTO batches (tid, batch, settled, host_totals, terminal_totals, "
                "balanced) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tid, batch) DO UPDATE SET "
                "settled = excluded.settled, host_totals = excluded.host_totals, "
                "terminal_totals = excluded.terminal_totals, balanced = excluded.balanced",
                (record.tid, record.batch, int(record.settled), record.host_totals,
                 record.terminal_totals,
                 None if record.balanced is None else int(record.balanced))))
        else:
            out.append((
                "INSERT OR REPLACE INTO uploads (tid, batch, stan, rrn, item_batch, item_stan, "
                "amount, matched) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.tid, record.batch, record.stan, record.rrn, record.item_batch,
                 record.item_stan, record.amount, int(record.matched))))
        return out


    def terminal(self, tid: str) -> TerminalRow | None:
        """One terminal row as stored (removed ones included), or None."""
        with self._lock:
            rows = _terminal_rows(self._db, tid)
        return rows[0] if rows else None

    def changed_terminals(self) -> tuple[TerminalRow, ...] | None:
        """Every terminal row when a terminal was provisioned since the last call, else None.

        Two cheap checks before every request: ``PRAGMA data_version`` on a
        connection of its own (it changes when any other connection, this store's
        writer included, committed; it reads no page), and only then the
        ``terminals_version`` counter that triggers bump whenever a terminal row
        is inserted or its generation changes (add, re-key, remove: sign-ons and
        batches do not count). Only when that moved are the terminal rows read.
        """
        try:
            if self._watch is None:
                self._watch = sqlite3.connect(self.path, isolation_level=None,
                                              check_same_thread=False, timeout=30.0)
                self._data_version = self._pragma_version()
                self._seen_version = self._terminals_version()
                return None
            data_version = self._pragma_version()
            if data_version == self._data_version:
                return None
            self._data_version = data_version
            version = self._terminals_version()
            if version == self._seen_version:
                return None
            self._seen_version = version
            return _terminal_rows(self._watch)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read terminals from {self.path}: {exc}") from exc

    def _pragma_version(self) -> int:
        assert self._watch is not None
        return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def _terminals_version(self) -> int:
        assert self._watch is not None
        row = self._watch.execute(
            "SELECT value FROM meta WHERE name = 'terminals_version'").fetchone()
        return int(row[0]) if row is not None else 0

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
            self._db.close()


_PROVISIONING_TRIGGERS = """
INSERT OR IGNORE INTO meta (name, value) VALUES ('terminals_version', 0);
CREATE TRIGGER IF NOT EXISTS terminals_added AFTER INSERT ON terminals BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'terminals_version';
END;
CREATE TRIGGER IF NOT EXISTS terminals_provisioned AFTER UPDATE OF generation ON terminals
WHEN NEW.generation <> OLD.generation BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'terminals_version';
END;
"""

_TERMINAL_UPSERT = (
    "INSERT INTO terminals (tid, mid, tmk, pik, mak, tdk, batch, signed_on, generation, removed) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tid) DO UPDATE SET "
    "mid = excluded.mid, tmk = excluded.tmk, pik = excluded.pik, "
    "mak = excluded.mak, tdk = excluded.tdk, batch = excluded.batch, "
    "signed_on = excluded.signed_on, generation = excluded.generation, "
    "removed = excluded.removed WHERE excluded.generation >= terminals.generation")


def _terminal_params(record: TerminalRow) -> tuple[object, ...]:
    return (record.tid, record.mid, record.tmk, record.pik, record.mak, record.tdk,
            record.batch, int(record.signed_on), record.generation, int(record.removed))


def _terminal_rows(db: sqlite3.Connection, tid: str | None = None) -> tuple[TerminalRow, ...]:
    sql = ("SELECT tid, mid, tmk, pik, mak, tdk, batch, signed_on, generation, removed "
           "FROM terminals")
    cursor = (db.execute(sql + " WHERE tid = ?", (tid,)) if tid is not None
              else db.execute(sql + " ORDER BY tid"))
    return tuple(TerminalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), int(r[8]),
                             bool(r[9])) for r in cursor)


def response_json(mti: str, fields: dict[int, str | bytes]) -> str:
    """A stored answer: MTI and fields, bytes as hex (so the row is plain text)."""
    return json.dumps({"mti": mti, "fields": {
        str(k): ({"hex": v.hex()} if isinstance(v, bytes) else v) for k, v in fields.items()}},
        separators=(",", ":"))


def response_fields(text: str) -> tuple[str, dict[int, str | bytes]]:
    """The MTI and fields of a stored answer."""
    data = json.loads(text)
    fields: dict[int, str | bytes] = {}
    for k, v in data["fields"].items():
        fields[int(k)] = bytes.fromhex(v["hex"]) if isinstance(v, dict) else str(v)
    return str(data["mti"]), fields
