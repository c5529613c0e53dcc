"""PostgreSQL-only details of the ledger session (emulator.host.pgledger): the card
balances' check at commit (pos_move_balances), and BEGIN/COMMIT riding with the
session's statements."""

from __future__ import annotations

import itertools
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
