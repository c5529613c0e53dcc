"""Opening a PostgreSQL ledger whose schema is in place runs no DDL (emulator.host.pgledger).

A restart and each of serve's workers open the store; the schema's DDL (CREATE OR
REPLACE FUNCTION ..., under one advisory lock) ran at every opening. It now runs
when the schema is new, or changed since this code's last run left its mark: by
another version's run, or a table or index dropped.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

_schemas = itertools.count(1)


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    name = f"open{os.getpid()}_{next(_schemas)}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _open(dsn: str, schema: str) -> Any:
    from emulator.host.pgledger import PostgresLedgerStore
    return PostgresLedgerStore(dsn, schema=schema)


def _functions(dsn: str, schema: str) -> dict[str, str]:
    """The schema's functions: name(args) -> xmin (a new one each CREATE OR REPLACE)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        rows = db.execute(
            "SELECT p.oid::regprocedure::text, p.xmin::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
            (schema,)).fetchall()
    return {str(name): str(xmin) for name, xmin in rows}


def _exec(dsn: str, schema: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"SET search_path TO {schema}")
        db.execute(statement)


def test_a_schema_in_place_is_not_made_again(pg_dsn: str, schema: str) -> None:
    first = _open(pg_dsn, schema)
    made = _functions(pg_dsn, schema)
    assert any(name.startswith(f"{schema}.pos_prepare_many(") for name in made)
    second = _open(pg_dsn, schema)
    try:
        assert _functions(pg_dsn, schema) == made  # no CREATE OR REPLACE ran
        assert second.secret == first.secret  # the same PAN key
    finally:
        first.close()
        second.close()


def test_a_function_replaced_by_another_run_is_made_again(pg_dsn: str, schema: str) -> None:
    # another version's opening replaces a function (here: with an empty body)
    _open(pg_dsn, schema).close()
    _exec(pg_dsn, schema,
          "CREATE OR REPLACE FUNCTION pos_move_balances(p_pan TEXT[], p_total BIGINT[], "
          "p_room BIGINT[]) RETURNS VOID AS $$ BEGIN END $$ LANGUAGE plpgsql")
    replaced = _functions(pg_dsn, schema)
    _open(pg_dsn, schema).close()
    again = _functions(pg_dsn, schema)
    assert again != replaced  # this code's DDL ran again
    third = _open(pg_dsn, schema)
    try:
        assert _functions(pg_dsn, schema) == again  # and left its mark
    finally:
        third.close()


def _relation(dsn: str, schema: str, name: str) -> str | None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute("SELECT to_regclass(%s)::text", (f"{schema}.{name}",)).fetchone()
    return None if row is None else row[0]


def test_a_dropped_table_is_made_again(pg_dsn: str, schema: str) -> None:
    _open(pg_dsn, schema).close()
    _exec(pg_dsn, schema, "DROP TABLE uploads")
    _open(pg_dsn, schema).close()
    assert _relation(pg_dsn, schema, "uploads") is not None


def test_the_indexes_an_older_version_made_are_dropped(pg_dsn: str, schema: str) -> None:
    """transactions_original and refunds_original (no statement reads through them) are
    dropped; an older process's run makes them again, and the next opening of this code
    drops them again (its mark no longer matches the catalog)."""
    _open(pg_dsn, schema).close()
    for index, table, column in (("transactions_original", "transactions", "original"),
                                 ("refunds_original", "refunds", "original_key")):
        assert _relation(pg_dsn, schema, index) is None
        _exec(pg_dsn, schema, f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column})")
    assert _relation(pg_dsn, schema, "transactions_original") is not None
    store = _open(pg_dsn, schema)
    try:
        assert _relation(pg_dsn, schema, "transactions_original") is None
        assert _relation(pg_dsn, schema, "refunds_original") is None
        store.commit([])  # and the store works
    finally:
        store.close()


def _statistics_targets(dsn: str, schema: str) -> dict[str, int]:
    """transactions' columns -> their statistics target (-1: the default, 0: none;
    PostgreSQL 17 writes the default as NULL)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        rows = db.execute("SELECT attname, attstattarget FROM pg_attribute "
                          "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                          (f"{schema}.transactions",)).fetchall()
    return {str(name): -1 if target is None else int(target) for name, target in rows}


def test_only_the_keys_of_the_transactions_keep_statistics(pg_dsn: str, schema: str) -> None:
    """ANALYZE (autovacuum's, as the ledger grows) reads no payload column: the answers,
    fingerprints, amounts and states carry no statistics, and the keys statements select
    by keep theirs; a ledger made before (its columns at the default) is brought in line."""
    keys = {"seq", "tid", "batch", "stan", "mti", "rrn", "pan_hash"}
    _open(pg_dsn, schema).close()
    targets = _statistics_targets(pg_dsn, schema)
    assert {c for c, t in targets.items() if t != 0} == keys
    assert all(targets[c] == -1 for c in keys)
    _exec(pg_dsn, schema, "ALTER TABLE transactions ALTER COLUMN response SET STATISTICS -1")
    _exec(pg_dsn, schema, "DELETE FROM meta WHERE name = 'schema_mark'")  # as an older run
    _open(pg_dsn, schema).close()
    assert _statistics_targets(pg_dsn, schema)["response"] == 0


def test_a_connection_is_set_up_in_its_startup_packet(
        pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # UTF-8 and the lock timeout ride in libpq's startup parameters (no SET round trips),
    # over what the DSN itself asks for
    import psycopg
    from psycopg import conninfo

    from emulator.host.pgledger import LOCK_TIMEOUT_MS
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def recorded(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", recorded)
    dsn = conninfo.make_conninfo(pg_dsn, client_encoding="LATIN1",
                                 options="-c lock_timeout=5s")
    store = _open(dsn, schema)
    try:
        assert not [q for q in sent if q.startswith(("SET client_encoding", "SET lock_timeout"))]
        db = store._db
        assert db.execute("SHOW client_encoding").fetchone() == ("UTF8",)
        assert db.execute("SHOW lock_timeout").fetchone() == (f"{LOCK_TIMEOUT_MS}ms",)
        assert db.execute("SHOW jit").fetchone() == ("off",)
    finally:
        store.close()


def test_a_vacuum_of_the_transactions_does_not_hold_up_an_opening(pg_dsn: str,
                                                                   schema: str) -> None:
    """The statistics targets wait for the table's lock at most 200 ms: a VACUUM running
    (here: its lock, held by another connection) leaves them for the next schema run."""
    import time

    import psycopg

    _open(pg_dsn, schema).close()
    _exec(pg_dsn, schema, "ALTER TABLE transactions ALTER COLUMN response SET STATISTICS -1")
    _exec(pg_dsn, schema, "DELETE FROM meta WHERE name = 'schema_mark'")
    with psycopg.connect(pg_dsn) as vacuum:
        vacuum.execute(f"LOCK TABLE {schema}.transactions IN SHARE UPDATE EXCLUSIVE MODE")
        began = time.monotonic()
        store = _open(pg_dsn, schema)
        took = time.monotonic() - began
        store.commit([])  # the store works
        store.close()
        assert _statistics_targets(pg_dsn, schema)["response"] == -1
        vacuum.rollback()
    assert took < 5  # 200 ms of lock wait, not the vacuum's length
    _exec(pg_dsn, schema, "DELETE FROM meta WHERE name = 'schema_mark'")
    _open(pg_dsn, schema).close()
    assert _statistics_targets(pg_dsn, schema)["response"] == 0


def test_a_ledger_an_earlier_version_made_gets_the_functions_this_one_calls(
        pg_dsn: str, schema: str) -> None:
    # as the version before pos_prepare_*_v2 left it: its functions, its mark
    _open(pg_dsn, schema).close()
    _exec(pg_dsn, schema, "DROP FUNCTION pos_prepare_one_v2(TEXT, TEXT, TEXT, TEXT, TEXT); "
          "DROP FUNCTION pos_prepare_many_v2(TEXT[], TEXT[], TEXT[], TEXT[], TEXT[]); "
          "UPDATE meta SET value = 'an earlier mark' WHERE name = 'schema_mark'")
    store = _open(pg_dsn, schema)
    try:
        made = _functions(pg_dsn, schema)
        assert any(name.startswith(f"{schema}.pos_prepare_one_v2(") for name in made)
        assert any(name.startswith(f"{schema}.pos_prepare_many_v2(") for name in made)
        with store.session() as session:  # both forms run
            session.lock_requests([("t1", "000001", "000001", None, None)])
            session.lock_requests([("t1", "000001", "000002", "p", None),
                                   ("t2", "000001", "000003", None, "000000000001")])
    finally:
        store.close()
