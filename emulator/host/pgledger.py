"""The host's ledger in PostgreSQL (psycopg 3): ``pos-emulator serve --ledger postgresql://...``.

Same tables, records and semantics as :class:`~emulator.host.ledger.SqliteLedgerStore`:
every record is an idempotent upsert of a row's latest state, one ``commit`` is
one transaction, terminal rows only move forward in ``generation``. Terminals
provisioned by another process are announced with ``NOTIFY pos_terminals`` by a
trigger (insert, or a generation change), so the running host learns of them
without a query per request.

What this store does *not* do yet: make the database the source of truth across
several host processes (read and lock the original with ``SELECT ... FOR UPDATE``
in the transaction that books a refund). One host process per ledger, as with
SQLite; see docs/host-emulator.md.

psycopg is optional: importing this module without it raises
:class:`~emulator.host.errors.LedgerError` with an install hint.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from typing import Any

from emulator.host.errors import LedgerError
from emulator.host.ledger import (
    BatchRow,
    LedgerRecord,
    LedgerSnapshot,
    TerminalRow,
    TransactionRow,
    UploadRow,
    key_text,
)

try:
    import psycopg  # type: ignore[import-not-found, unused-ignore]
    from psycopg import sql  # type: ignore[import-not-found, unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise LedgerError("the PostgreSQL ledger needs psycopg 3: "
                      "pip install 'psycopg[binary]>=3.1'") from exc

INSTALL_HINT = ("PostgreSQL ledger: pip install 'psycopg[binary]>=3.1'; server: "
                "apt-get install postgresql (Debian) and a database URL postgresql://...")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('terminals_version', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS terminals (
    tid TEXT PRIMARY KEY,
    mid TEXT NOT NULL,
    tmk TEXT NOT NULL,
    pik TEXT NOT NULL DEFAULT '',
    mak TEXT NOT NULL DEFAULT '',
    tdk TEXT NOT NULL DEFAULT '',
    batch TEXT NOT NULL,
    signed_on BOOLEAN NOT NULL DEFAULT FALSE,
    generation BIGINT NOT NULL DEFAULT 0,
    removed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS transactions (
    seq BIGSERIAL PRIMARY KEY,
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
    amount BIGINT,
    rrn TEXT UNIQUE,
    auth_code TEXT,
    date TEXT,
    original TEXT,
    refunded BIGINT NOT NULL DEFAULT 0,
    voided_by TEXT,
    UNIQUE (tid, batch, stan, mti)
);
CREATE INDEX IF NOT EXISTS transactions_original ON transactions (original);
CREATE TABLE IF NOT EXISTS refunds (
    refund_key TEXT PRIMARY KEY,
    original_key TEXT NOT NULL,
    amount BIGINT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_original ON refunds (original_key);
CREATE TABLE IF NOT EXISTS batches (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    settled BOOLEAN NOT NULL,
    host_totals TEXT NOT NULL,
    terminal_totals TEXT NOT NULL,
    balanced BOOLEAN,
    PRIMARY KEY (tid, batch)
);
CREATE TABLE IF NOT EXISTS uploads (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    rrn TEXT,
    item_batch TEXT NOT NULL,
    item_stan TEXT NOT NULL,
    amount BIGINT NOT NULL,
    matched BOOLEAN NOT NULL,
    PRIMARY KEY (tid, batch, stan)
);
CREATE OR REPLACE FUNCTION pos_terminals_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.generation <> OLD.generation THEN
        UPDATE counters SET value = value + 1 WHERE name = 'terminals_version';
        PERFORM pg_notify('pos_terminals', NEW.tid);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS terminals_changed ON terminals;
CREATE TRIGGER terminals_changed AFTER INSERT OR UPDATE ON terminals
    FOR EACH ROW EXECUTE FUNCTION pos_terminals_changed();
"""

_TXN_COLUMNS = ("tid", "batch", "stan", "mti", "kind", "fingerprint", "status",
                "response_code", "received_at", "response", "pan_masked", "pan_hash", "scheme",
                "amount", "rrn", "auth_code", "date", "original", "refunded", "voided_by")
# the column lists are constants of this module, never input
_TXN_UPSERT = (
    f"INSERT INTO transactions ({', '.join(_TXN_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(_TXN_COLUMNS))}) "
    "ON CONFLICT (tid, batch, stan, mti) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _TXN_COLUMNS[4:]))
_REFUND_UPSERT = (
    "INSERT INTO refunds (refund_key, original_key, amount, status) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (refund_key) DO UPDATE SET status = excluded.status")
_TERMINAL_COLUMNS = ("tid", "mid", "tmk", "pik", "mak", "tdk", "batch", "signed_on",
                     "generation", "removed")
_TERMINAL_UPSERT = (
    f"INSERT INTO terminals ({', '.join(_TERMINAL_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(_TERMINAL_COLUMNS))}) ON CONFLICT (tid) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _TERMINAL_COLUMNS[1:])
    + " WHERE excluded.generation >= terminals.generation")
_BATCH_UPSERT = (
    "INSERT INTO batches (tid, batch, settled, host_totals, terminal_totals, balanced) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tid, batch) DO UPDATE SET "
    "settled = excluded.settled, host_totals = excluded.host_totals, "
    "terminal_totals = excluded.terminal_totals, balanced = excluded.balanced")
_UPLOAD_UPSERT = (
    "INSERT INTO uploads (tid, batch, stan, rrn, item_batch, item_stan, amount, matched) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tid, batch, stan) DO UPDATE SET "
    "rrn = excluded.rrn, item_batch = excluded.item_batch, item_stan = excluded.item_stan, "
    "amount = excluded.amount, matched = excluded.matched")
_TERMINAL_SELECT = f"SELECT {', '.join(_TERMINAL_COLUMNS)} FROM terminals"  # noqa: S608
_TXN_SELECT = f"SELECT {', '.join(_TXN_COLUMNS)} FROM transactions ORDER BY seq"  # noqa: S608


def is_postgres_url(text: str) -> bool:
    """Whether a ``--ledger`` value names a PostgreSQL database rather than a SQLite file."""
    return text.startswith(("postgresql://", "postgres://"))


class PostgresLedgerStore:
    """The ledger in a PostgreSQL database (one writer connection, one watch connection).

    ``schema`` keeps the tables in a schema of their own (tests give each test one).
    """

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(8583)")  # one schema creator
                self._db.execute(_SCHEMA)
            self._secret = self._load_secret()
        except psycopg.Error as exc:
            raise LedgerError(f"cannot open ledger {_safe(dsn)}: {exc}") from exc
        self._watch: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresLedgerStore({_safe(self.dsn)!r}, schema={self.schema!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        db = psycopg.connect(self.dsn, autocommit=True)
        if self.schema is not None:
            db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return db

    def _load_secret(self) -> bytes:
        self._db.execute("INSERT INTO meta (name, value) VALUES ('pan_key', %s) "
                         "ON CONFLICT DO NOTHING", (secrets.token_bytes(32),))
        row = self._db.execute("SELECT value FROM meta WHERE name = 'pan_key'").fetchone()
        assert row is not None
        return bytes(row[0])

    def load(self) -> LedgerSnapshot:
        with self._lock:
            try:
                db = self._db
                terminals = tuple(_terminal(r) for r in db.execute(_TERMINAL_SELECT +
                                                                    " ORDER BY tid"))
                txns = tuple(TransactionRow(*r) for r in db.execute(_TXN_SELECT))
                batches = tuple(BatchRow(*r) for r in db.execute(
                    "SELECT tid, batch, settled, host_totals, terminal_totals, balanced "
                    "FROM batches"))
                uploads = tuple(UploadRow(*r) for r in db.execute(
                    "SELECT tid, batch, stan, rrn, item_batch, item_stan, amount, matched "
                    "FROM uploads"))
            except psycopg.Error as exc:
                raise LedgerError(f"cannot read ledger {_safe(self.dsn)}: {exc}") from exc
        return LedgerSnapshot(self._secret, terminals, txns, batches, uploads)

    def commit(self, records: Sequence[LedgerRecord]) -> None:
        if not records:
            return
        groups: dict[str, list[tuple[object, ...]]] = {}
        for record in records:
            for statement, params in _statements(record):
                groups.setdefault(statement, []).append(params)
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    for statement, rows in groups.items():
                        cur.executemany(statement, rows)
            except psycopg.Error as exc:
                raise LedgerError(f"ledger commit failed: {exc}") from exc

    def terminal(self, tid: str) -> TerminalRow | None:
        with self._lock:
            row = self._db.execute(_TERMINAL_SELECT + " WHERE tid = %s", (tid,)).fetchone()
        return _terminal(row) if row is not None else None

    def changed_terminals(self) -> tuple[TerminalRow, ...] | None:
        """Every terminal row after a ``pos_terminals`` notification, else None (no query)."""
        try:
            if self._watch is None:
                self._watch = self._connect()
                self._watch.execute("LISTEN pos_terminals")
                return None
            if not list(self._watch.notifies(timeout=0)):
                return None
            return tuple(_terminal(r) for r in self._watch.execute(_TERMINAL_SELECT))
        except psycopg.Error as exc:
            raise LedgerError(f"cannot read terminals: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
            self._db.close()


def _terminal(r: Sequence[Any]) -> TerminalRow:
    return TerminalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), int(r[8]),
                       bool(r[9]))


def _statements(record: LedgerRecord) -> list[tuple[str, tuple[object, ...]]]:
    if isinstance(record, TransactionRow):
        out: list[tuple[str, tuple[object, ...]]] = [
            (_TXN_UPSERT, tuple(getattr(record, c) for c in _TXN_COLUMNS))]
        if record.kind == "refund" and record.original is not None:
            out.append((_REFUND_UPSERT, (key_text(record.key), record.original,
                                         record.amount or 0, record.status)))
        return out
    if isinstance(record, TerminalRow):
        return [(_TERMINAL_UPSERT, tuple(getattr(record, c) for c in _TERMINAL_COLUMNS))]
    if isinstance(record, BatchRow):
        return [(_BATCH_UPSERT, (record.tid, record.batch, record.settled, record.host_totals,
                                 record.terminal_totals, record.balanced))]
    return [(_UPLOAD_UPSERT, (record.tid, record.batch, record.stan, record.rrn,
                              record.item_batch, record.item_stan, record.amount,
                              record.matched))]


def _safe(dsn: str) -> str:
    """A DSN without its password, for messages."""
    head, at, tail = dsn.rpartition("@")
    if not at:
        return dsn
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"
