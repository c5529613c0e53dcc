"""PostgreSQL-only details of the ledger session (emulator.host.pgledger): the card
balances' check at commit (pos_move_balances), and BEGIN/COMMIT riding with the
session's statements."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.catalogue import card_by_name
from emulator.host.errors import BalanceMoved, LedgerConflict, LedgerError
from emulator.host.ledger import BalanceRow
from emulator.simterminal import Approved

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

    with pytest.raises(BalanceMoved):  # a LedgerConflict that the server runs again whole
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
    with pytest.raises(LedgerConflict), a.session() as s:  # one card alone: the same check
        s.write([BalanceRow("p3", 50, 50, 40)])
    with a.session() as s:
        s.write([BalanceRow("p3", 40, 40, 40)])
    assert spent(a, "p3") == 40


@pytest.mark.parametrize("count", [3, 6])  # card by card (up to 4), the general case
def test_a_card_overtaken_among_several_keeps_none_of_the_sessions_moves(
        stores: tuple[Any, Any], count: int) -> None:
    a, b = stores
    cards = [f"q{i}" for i in range(count)]
    with a.session() as s:  # first uses: every row inserted
        s.write([BalanceRow(card, 100, 100, None) for card in cards])
    assert [spent(a, card) for card in cards] == [100] * count

    def overtaken() -> None:
        with a.session() as s:
            for card in cards:
                s.spent(card)
            # each fits what this session read (200 <= 200)
            s.write([BalanceRow(card, 200, 100, 200) for card in cards])
            with b.session() as t:  # another process spends the second card meanwhile
                t.write([BalanceRow(cards[1], 150, 50, None)])

    with pytest.raises(BalanceMoved):
        overtaken()
    assert [spent(a, card) for card in cards] == [100, 150] + [100] * (count - 2)
    with a.session() as s:  # run again: fits the new balances
        s.write([BalanceRow(card, 0, 100, 1_000) for card in cards])
    assert [spent(b, card) for card in cards] == [200, 250] + [200] * (count - 2)


@pytest.mark.parametrize("cards", [["p9"], ["p1", "p9"]])
def test_a_cards_first_use_by_two_processes_at_once_is_a_conflict_never_a_lost_move(
        stores: tuple[Any, Any], pg_dsn: str, cards: list[str]) -> None:
    """Another process inserts the card's row first: this session's commit fails (run
    again), and run again it moves the balance the other left. (The insert is never
    skipped for a row found since the UPDATE, which lost the move: that window, between
    two statements of pos_move_balances, cannot be forced from here.)"""
    import psycopg
    from psycopg import sql

    a, _ = stores
    with a.session() as s:
        s.write([BalanceRow("p1", 10, 10, None)])
    schema = a.schema
    with psycopg.connect(pg_dsn) as other:  # a transaction, open until the block ends
        other.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        other.execute("INSERT INTO balances (pan_hash, spent) VALUES ('p9', 500)")
        with pytest.raises(LedgerConflict) as clash, a.session() as s:
            s.write([BalanceRow(card, 30, 30, 1_000) for card in cards])
        assert not isinstance(clash.value, BalanceMoved)  # a unique violation
    with a.session() as s:  # run again, after the other committed
        s.write([BalanceRow(card, 30, 30, 1_000) for card in cards])
    assert spent(a, "p9") == 530
    assert spent(a, "p1") == (40 if "p1" in cards else 10)


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


@pytest.mark.parametrize("others", [0, 5])
def test_rows_are_stored_as_written(stores: tuple[Any, Any], others: int) -> None:
    """A session's bookings and upserts go out as plain VALUES (up to _FEW rows) or as one
    JSON parameter (_columns, more): text that needs escaping in JSON or in an array
    literal, non-ASCII, NULLs and big integers come back unchanged."""
    a, b = stores
    odd = _row("000002", response='{"a":"q\\"uo\\\\te, {brace} \u4e2d\u6587\n\t"}',
               fingerprint="NULL", pan_masked=None, pan_hash=None, scheme=None,
               amount=2**62, rrn=None, auth_code="", date=None, original="x/y/z/0200",
               refunded=-(2**62), voided_by="\\N")
    plain = _row("000003")
    with a.session() as s:
        s.book(odd)
        s.book(plain)
        for i in range(others):
            s.book(_row(f"1{i:05d}"))
    updated = dataclasses.replace(plain, status="voided", voided_by='a"b', refunded=50)
    more = [dataclasses.replace(_row(f"1{i:05d}"), refunded=i) for i in range(others)]
    with a.session() as s:
        s.write([updated, *more])
    with b.session() as s:
        assert s.transaction(odd.key) == odd
        assert s.transaction(plain.key) == updated
        assert [s.transaction(row.key) for row in more] == more


@pytest.mark.parametrize("values", [
    [], ["a"], ["a", "b,c", "{d}", " e "], ['q"uote', "back\\slash", ""], [None, "x"],
    [1, None, -2**62], ["\u4e2d\u6587", "NULL"], [None], [None, None, "a"], [None, 'q"'],
    ["a", None, "\\"]])
def test_array_literals_read_back_as_the_values(stores: tuple[Any, Any],
                                                values: list[Any]) -> None:
    from emulator.host.pgledger import _array
    a, _ = stores
    a.terminal("00000000")  # connected
    res = a._db.pgconn.exec_params(b"SELECT array_to_json($1::text[])::text", [_array(values)])
    assert json.loads(res.get_value(0, 0)) == [None if v is None else str(v) for v in values]


@pytest.mark.parametrize("values", [
    [], ["a"], ['{"mti":"0210","fields":{"39":"00"}}'], ['q"uote', "back\\slash", ""],
    ["\u4e2d\u6587", "NULL", "{d}", " e ", "a,b"], ["x" * 70_000]])
def test_binary_text_arrays_read_back_as_the_values(stores: tuple[Any, Any],
                                                    values: list[str]) -> None:
    from emulator.host.pgledger import _formats, _text_array
    a, _ = stores
    a.terminal("00000000")  # connected
    param = _text_array(values)
    assert _formats([b"x", param, None]) == [0, 1, 0]
    res = a._db.pgconn.exec_params(b"SELECT array_to_json($1::text[])::text", [param],
                                   param_formats=[1])
    assert json.loads(res.get_value(0, 0)) == values


def test_bookings_store_what_the_json_only_statement_stored(stores: tuple[Any, Any]) -> None:
    """_TXN_INSERT_MANY with the responses beside the JSON (a binary text array) stores the
    rows the statement with every column in the JSON stored, value for value."""
    from emulator.host.ledger import TXN_COLUMNS
    from emulator.host.pgledger import _TXN_INSERT_MANY, _columns, _param

    a, _ = stores
    rows = [_row("000002", response='{"a":"q\\"uo\\\\te, {brace} \u4e2d\u6587\n\t"}',
                 pan_masked=None, amount=2**62, rrn=None, refunded=-(2**62), voided_by="\\N"),
            _row("000003"), _row("000004", response="", auth_code="")]
    types = ["bigint" if c in ("amount", "refunded") else "text" for c in TXN_COLUMNS]
    json_only = (f"INSERT INTO json_only ({', '.join(TXN_COLUMNS)}) SELECT "
                 + ", ".join(f"(r->>{i})::{t}" for i, t in enumerate(types))
                 + " FROM jsonb_array_elements(%s::jsonb) AS r")
    db = a._db
    db.execute("CREATE TEMP TABLE json_only (LIKE transactions INCLUDING DEFAULTS)")
    db.execute("CREATE TEMP TABLE beside (LIKE transactions INCLUDING DEFAULTS)")
    db.execute(json_only, [json.dumps([[getattr(r, c) for c in TXN_COLUMNS] for r in rows])])
    values = [_param(p) for p in _columns(rows)]
    res = db.pgconn.exec_params(
        _TXN_INSERT_MANY.replace("INTO transactions", "INTO beside")
        .replace("?", "$1", 1).replace("?", "$2", 1).encode(), values, param_formats=[0, 1])
    assert res.status == 1, res.error_message  # COMMAND_OK
    select = f"SELECT {', '.join(TXN_COLUMNS)} FROM {{}} ORDER BY stan"
    stored = db.execute(select.format("beside")).fetchall()
    assert stored == db.execute(select.format("json_only")).fetchall()
    assert [tuple(r) for r in stored] == [tuple(getattr(r, c) for c in TXN_COLUMNS)
                                          for r in rows]


_LEDGER_TABLES = "transactions|refunds|balances|tombstones|uploads|batches|terminals"


def test_plans_made_on_an_empty_ledger_still_probe_indexes_on_a_full_one(pg_dsn: str) -> None:
    """A connection keeps its plans (the prepare functions' generic ones for good): made
    on a new, empty ledger, every plan a group runs -- one request (pos_prepare_one),
    several (pos_prepare_many), the writes and the balances' move -- must still read the
    ledger through its indexes once it holds thousands of rows (auto_explain: every plan
    run, the functions' statements too)."""
    import psycopg
    from psycopg import sql

    from emulator.host.pgledger import PostgresLedgerStore
    from tests.emulator.host.harness import NOW, TPDU, make_lane
    schema = f"plans{next(_schemas)}"
    store = PostgresLedgerStore(pg_dsn, schema=schema, commit_ahead=False)
    plans: list[str] = []
    db = store._db  # the store's one connection: its plans are the point
    assert db is not None
    db.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_nested_statements = on",
                    "SET client_min_messages = log"):
        db.execute(setting)
    lane = make_lane(store=store)
    card = card_by_name("cup-debit")
    db.execute("ANALYZE")  # as autovacuum may: the ledger is known to be (nearly) empty

    def groups() -> None:
        term, dialect = lane.term, lane.term.dialect
        sales = [term.sale(card, 1_000, pin="123456") for _ in range(3)]
        answers = []
        for group in ([sales[0]], sales[1:]):  # one request, then two
            payloads = [dialect.payload(m, tpdu=TPDU) for m in group]
            with store.session() as session:
                lane.host.prefetch(session, payloads)
                answers += [lane.host.handle(p, NOW, session) for p in payloads]
        approved = []
        for sale, outcome in zip(sales, answers, strict=True):
            assert outcome.reply is not None
            frame = dialect.unpack_payload(outcome.reply)
            result = term.check_response(sale, frame.message, body=frame.body)
            assert isinstance(result, Approved)
            approved.append(result)
        refund = dialect.payload(term.refund(approved[0], 100), tpdu=TPDU)
        with store.session() as session:  # one request naming an original
            lane.host.prefetch(session, [refund])
            assert lane.host.handle(refund, NOW, session).response_code == "00"
        refunds = [dialect.payload(term.refund(a, 100), tpdu=TPDU) for a in approved[1:]]
        with store.session() as session:  # two (the RRNs' lock and branch)
            lane.host.prefetch(session, refunds)
            assert [lane.host.handle(r, NOW, session).response_code
                    for r in refunds] == ["00", "00"]

    for _ in range(6):  # planned on an empty ledger (and, after 5 calls, kept: PostgreSQL's
        groups()        # plan cache then keeps a generic plan that costs no more)
    assert any("pos_prepare_one" in p for p in plans)
    assert any("unnest(p_tid" in p for p in plans)  # pos_prepare_many's
    assert any("ANY(p_rrn)" in p for p in plans)  # ... naming originals
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        other.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        other.execute(
            "INSERT INTO transactions (tid, batch, stan, mti, kind, fingerprint, status, "
            "response_code, received_at, response, pan_hash, amount, rrn, original) "
            "SELECT '9' || lpad(i::text, 7, '0'), '000001', lpad(i::text, 6, '0'), '0200', 'sale', "
            "'f', 'approved', '00', '', '{}', md5(i::text), 100, '8' || lpad(i::text, 11, '0'), "
            "'x/' || i FROM generate_series(1, 5000) AS i")
        for table, values in (
                ("tombstones", "'9' || lpad(i::text, 7, '0'), '000001', "
                               "lpad(i::text, 6, '0'), NULL, NULL"),
                ("batches", "'9' || lpad(i::text, 7, '0'), '000001', false, '', '', NULL"),
                ("balances", "md5(i::text), 0"),
                ("refunds", "'r' || i, 'x/' || i, 1, 'approved'"),
                ("terminals", "'9' || lpad(i::text, 7, '0'), 'm', 't', '', '', '', '000001', "
                              "true, 0, false")):
            other.execute(f"INSERT INTO {table} SELECT {values} "
                          "FROM generate_series(1, 5000) AS i")
    plans.clear()
    groups()  # the same plans (no ANALYZE since) on a full ledger
    assert any("pos_prepare_one" in p for p in plans)
    scans = {p.split("\n")[1] for p in plans  # the query text of a plan with a scan
             if re.search(rf"Seq Scan on ({_LEDGER_TABLES})\b", p)}
    store.close()
    # the terminal read of a request that took no lock with its terminal's (the 2nd of a
    # group on one terminal): a plain prepared SELECT's generic plan scanned terminals
    assert any("pos_terminal" in p for p in plans)
    assert scans == set()


def test_the_plan_settings_live_on_the_connection_not_on_the_functions(pg_dsn: str) -> None:
    """Every connection of the store starts with the plan settings (libpq's options), after
    the DSN's own options; the functions carry no SET clauses of their own (PostgreSQL
    would save, set and restore them on every call)."""
    import psycopg

    from emulator.host.pgledger import PostgresLedgerStore
    schema = f"settings{next(_schemas)}"
    sep = "&" if "?" in pg_dsn else "?"
    store = PostgresLedgerStore(f"{pg_dsn}{sep}options=-c%20work_mem%3D5MB", schema=schema)
    db = store._db  # the store's connection: its settings are the point
    assert db is not None
    shown = {name: db.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
             for name in ("plan_cache_mode", "enable_seqscan", "enable_bitmapscan",
                          "enable_hashjoin", "enable_mergejoin", "enable_memoize", "work_mem")}
    assert shown == {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off",
                     "enable_bitmapscan": "off", "enable_hashjoin": "off",
                     "enable_mergejoin": "off", "enable_memoize": "off", "work_mem": "5MB"}
    store.close()
    with psycopg.connect(pg_dsn) as other:
        configs = other.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = %s", (schema,)).fetchall()
    assert {"pos_prepare_many", "pos_prepare_one", "pos_prepare_many_v2", "pos_prepare_one_v2",
            "pos_terminal", "pos_move_balances"} <= {name for name, _ in configs}
    assert [name for name, config in configs if config is not None] == []


def test_a_connection_whose_set_up_fails_is_closed_not_left_open(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg
    from psycopg import sql

    from emulator.host.pgledger import PostgresLedgerStore
    role = f"pgl_nocreate{next(_schemas)}"
    opened: list[psycopg.Connection[Any]] = []
    connect = psycopg.connect

    def recorded(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(admin.info.dbname)))
        try:
            monkeypatch.setattr(psycopg, "connect", recorded)
            dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=role)
            with pytest.raises(LedgerError, match="permission denied"):  # CREATE SCHEMA
                PostgresLedgerStore(dsn, schema=f"{role}_ledger")
            assert len(opened) == 1
            assert opened[0].closed  # at once, not when the garbage collector gets to it
        finally:
            monkeypatch.undo()
            for db in opened:
                db.close()
            admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO PUBLIC").format(
                sql.Identifier(admin.info.dbname)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_group_naming_no_original_sends_its_rrns_as_null_not_an_array_of_nulls() -> None:
    from emulator.host.pgledger import _PREPARE_MANY, _prepare
    sales = [("t1", "000001", "000001", "p1", None), ("t2", "000001", "000002", "p2", None)]
    query, params = _prepare(sales)
    assert (query, list(params)) == (_PREPARE_MANY, [["t1", "t2"], ["000001", "000001"],
                                                     ["000001", "000002"], ["p1", "p2"], None])
    _, params = _prepare([*sales, ("t3", "000001", "000003", "p1", "000000000007")])
    assert list(params)[4] == [None, None, "000000000007"]


@pytest.mark.parametrize("together", [False, True])
def test_a_requests_other_rows_come_with_its_lock_as_read_alone(
        stores: tuple[Any, Any], together: bool) -> None:
    """pos_prepare_one_v2 / pos_prepare_many_v2 bring a request's terminal, batch, tombstone
    and card balance back as one row (x): each reads as its own statement reads it --
    present, absent, NULL columns too -- for one request and for a group."""
    import psycopg
    from psycopg import sql
    a, b = stores
    with psycopg.connect(a.dsn, autocommit=True) as db:
        db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(a.schema)))
        db.execute("INSERT INTO terminals VALUES ('t1', 'm1', 'k1', 'p', 'm', 'd', '000001', "
                   "true, 7, false), ('t2', 'm2', 'k2', '', '', '', '000009', false, 0, true)")
        db.execute("INSERT INTO batches VALUES ('t1', '000001', false, 'h1', 'x1', NULL), "
                   "('t2', '000002', true, 'h2', 'x2', true)")
        db.execute("INSERT INTO tombstones VALUES ('t1', '000001', '000005', NULL, NULL), "
                   "('t2', '000002', '000006', '000000', 100)")
        db.execute("INSERT INTO balances VALUES ('p1', 500), ('p3', -2)")
    locks = [("t1", "000001", "000005", "p1", None), ("t2", "000002", "000006", "p2", None),
             ("t3", "000003", "000007", None, None), ("t1", "000001", "000008", "p3", None)]

    def rows(session: Any, tid: str, batch: str, stan: str, pan: str | None) -> tuple[Any, ...]:
        return (session.terminal(tid), session.batch(tid, batch),
                session.tombstone(tid, batch, stan), None if pan is None else session.spent(pan))

    with b.session() as s:
        alone = [rows(s, *lock[:4]) for lock in locks]
    got = []
    for group in [locks] if together else [[lock] for lock in locks]:
        with a.session() as s:
            s.lock_requests(group)
            for lock in group:
                s.lock_request(*lock)
                got.append(rows(s, *lock[:4]))
    assert got == alone
    assert alone[0][0] is not None
    assert alone[1][3] == 0
    assert alone[2] == (None, None, None, None)
