"""Ledger stores for the host's tests: memory, SQLite and (when available) PostgreSQL.

``ledger_store`` is parametrized over the three backends; the PostgreSQL one runs
in a private cluster started once per session (``pg_dsn``, tests/emulator/conftest.py),
each test in a schema of its own, and skips with an install hint where PostgreSQL is missing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.host.ledger import LedgerStore, MemoryLedgerStore, SqliteLedgerStore

_schemas = itertools.count(1)


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> LedgerStore:
    if kind == "memory":
        return MemoryLedgerStore(secret=b"k" * 32)
    if kind == "sqlite":
        return SqliteLedgerStore(tmp_path / "ledger.db")
    dsn = request.getfixturevalue("pg_dsn")
    from emulator.host.pgledger import PostgresLedgerStore
    return PostgresLedgerStore(dsn, schema=f"t{next(_schemas)}")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    store = make_store(request.param, tmp_path, request)
    yield store
    store.close()
