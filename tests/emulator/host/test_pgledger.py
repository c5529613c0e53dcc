"""PostgreSQL-only details of the ledger session (emulator.host.pgledger): the card
balances' check at commit (pos_move_balances), and BEGIN/COMMIT riding with the
session's statements."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.host.errors import LedgerConflict
from emulator.host.ledger import BalanceRow

_schemas = itertools.count(1)


@pytest.fixture
def stores(pg_dsn: str) -> Iterator[tuple[Any, Any]]:
    """Two processes' stores (two connections) on one fresh ledger."""
    from emulator.host.pgledger import PostgresLedgerStore
    schema = f"pgl{next(_schemas)}"
    a, b = PostgresLedgerStore(pg_dsn, schema=schema), PostgresLedgerStore(pg_dsn, schema=schema)
    yield a, b
    a.close()
    b.close()


def spent(store: Any, pan: str) -> int:
    with store.session() as session:
        return int(session.spent(pan))


def test_moves_are_checked_against_the_balance_locked_at_commit(
        stores: tuple[Any, Any]) -> None:
    a, b = stores
    with a.session() as s:  # first uses: the rows are inserted
        s.write([BalanceRow("p1", 500, 500, 1_000), BalanceRow("p2", 100, 100, None)])
    assert (spent(a, "p1"), spent(a, "p2")) == (500, 100)

    def overtaken() -> None:
        with a.session() as s:
            s.spent("p1")
            # a sale that fits what this session read (900 <= 1,000), then a refund
            s.write([BalanceRow("p1", 900, 400, 1_000), BalanceRow("p1", 800, -100, None)])
            with b.session() as t:  # another process spends the card meanwhile
                t.write([BalanceRow("p1", 700, 200, 1_000)])

    with pytest.raises(LedgerConflict):
        overtaken()
    assert spent(a, "p1") == 700  # the first session booked nothing
    with a.session() as s:  # fits: 700 + 300 <= 1,000 before the refund
        s.write([BalanceRow("p1", 1_000, 300, 1_000), BalanceRow("p1", 500, -500, None)])
    assert spent(b, "p1") == 500


def test_a_new_cards_first_move_is_checked_too(stores: tuple[Any, Any]) -> None:
    a, _ = stores

    def over() -> None:
        with a.session() as s:
            s.write([BalanceRow("p1", 100, 100, 1_000), BalanceRow("p3", 50, 50, 40)])

    with pytest.raises(LedgerConflict):
        over()
    assert (spent(a, "p1"), spent(a, "p3")) == (0, 0)


def test_a_session_that_sends_nothing_sends_no_begin_or_commit(
        stores: tuple[Any, Any]) -> None:
    a, _ = stores
    a.terminal("00000000")  # connected, statements prepared
    db = a._db  # the connection's state is the point here
    with a.session():
        pass
    assert db.pgconn.transaction_status == 0  # IDLE: nothing left open
    with a.session() as s:
        s.terminal("00000000")
        assert db.pgconn.transaction_status == 2  # INTRANS: BEGIN rode with the read
    assert db.pgconn.transaction_status == 0


def _row(stan: str, **changes: Any) -> Any:
    from emulator.host.ledger import TransactionRow
    row = TransactionRow("00000001", "000001", stan, "0200", "sale", "v2:f", "approved", "00",
                         "2026-12-01T20:00:00", '{"mti":"0210","fields":{"4":"000000000100"}}',
                         "622588******0050", "h1", "CUP", 100, f"000000{stan}", "123456",
                         "1201", None, 0, None)
    return dataclasses.replace(row, **changes)


def test_rows_are_stored_as_written(stores: tuple[Any, Any]) -> None:
    """A session's bookings and upserts go out as one JSON parameter (_columns): text that
    needs escaping in JSON or in an array literal, non-ASCII, NULLs and big integers come
    back unchanged."""
    a, b = stores
    odd = _row("000002", response='{"a":"q\\"uo\\\\te, {brace} \u4e2d\u6587\n\t"}',
               fingerprint="NULL", pan_masked=None, pan_hash=None, scheme=None,
               amount=2**62, rrn=None, auth_code="", date=None, original="x/y/z/0200",
               refunded=-(2**62), voided_by="\\N")
    plain = _row("000003")
    with a.session() as s:
        s.book(odd)
        s.book(plain)
    updated = dataclasses.replace(plain, status="voided", voided_by='a"b', refunded=50)
    with a.session() as s:
        s.write([updated])
    with b.session() as s:
        assert s.transaction(odd.key) == odd
        assert s.transaction(plain.key) == updated


@pytest.mark.parametrize("values", [
    [], ["a"], ["a", "b,c", "{d}", " e "], ['q"uote', "back\\slash", ""], [None, "x"],
    [1, None, -2**62], ["\u4e2d\u6587", "NULL"]])
def test_array_literals_read_back_as_the_values(stores: tuple[Any, Any],
                                                values: list[Any]) -> None:
    from emulator.host.pgledger import _array
    a, _ = stores
    a.terminal("00000000")  # connected
    res = a._db.pgconn.exec_params(b"SELECT array_to_json($1::text[])::text", [_array(values)])
    assert json.loads(res.get_value(0, 0)) == [None if v is None else str(v) for v in values]
