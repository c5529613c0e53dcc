"""The terminal's SQLite database: opened crash-safe, schema brought up to date in order.

WAL with ``synchronous=FULL``: a transaction that returned is on disk, so a
request written before it is sent survives a power cut. The schema version is
``PRAGMA user_version``; :data:`terminal.core.schema.MIGRATIONS` lists every step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from terminal.core.errors import JournalError


def open_db(path: Path | str) -> sqlite3.Connection:
    """Open (or create) the database at ``path`` with the pragmas money needs."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic write: BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection,
            migrations: Sequence[tuple[int, str]] | None = None) -> int:
    """Apply every migration newer than the database, each in its own transaction."""
    if migrations is None:
        from terminal.core.schema import MIGRATIONS
        migrations = MIGRATIONS
    current = schema_version(conn)
    newest = max((v for v, _ in migrations), default=0)
    if current > newest:
        raise JournalError(f"journal schema {current} is newer than this program ({newest})")
    for version, script in sorted(migrations):
        if version <= current:
            continue
        with transaction(conn):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(version)}")
        current = version
    return current


def _statements(script: str) -> list[str]:
    """Split a migration script into whole statements (a trigger body keeps its ';')."""
    out: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                out.append(current.strip())
            current = ""
    if current.strip(" \n;"):
        out.append(current.strip())
    return out
