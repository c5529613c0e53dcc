"""Several hosts on one ledger: the ledger is the source of truth.

Two :class:`AcquirerHost` instances, each with its own store connection (as two
``serve --workers`` processes have), share one SQLite file or one PostgreSQL
schema (and, for the rules alone, one memory store). Requests race through both
at once from threads; the money rules must hold as if one host had answered them
in some order. (The real multi-process race is tests/emulator/test_workers.py.)
Also here: the start-up and the requests read no ledger-sized data, and an older
SQLite ledger is migrated in place.
"""

from __future__ import annotations

import itertools
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from emulator.catalogue import card_by_name
from emulator.host import (
    AcquirerHost,
    HostOutcome,
    LedgerError,
    LedgerStore,
    MemoryLedgerStore,
    SqliteLedgerStore,
    open_store,
    safe_ledger_name,
)
from emulator.host.cli import ledger_main
from emulator.host.ledger import TransactionRow
from emulator.simterminal import Approved, SimTerminal
from iso8583.message import Message
from tests.emulator.host.harness import NOW, TID, TPDU, Lane, make_lane
from tests.emulator.host.test_ledger import run_day
from tests.emulator.host.test_rules import remac

DEBIT = card_by_name("cup-debit")
PIN = "123456"
_schemas = itertools.count(1)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def two_stores(request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[tuple[LedgerStore, LedgerStore]]:
    """Two stores (connections) on one ledger."""
    a: LedgerStore
    b: LedgerStore
    if request.param == "memory":
        a = b = MemoryLedgerStore(secret=b"k" * 32)
    elif request.param == "sqlite":
        a, b = SqliteLedgerStore(tmp_path / "l.db"), SqliteLedgerStore(tmp_path / "l.db")
    else:
        from emulator.host.pgledger import PostgresLedgerStore
        dsn: str = request.getfixturevalue("pg_dsn")
        schema = f"shared{next(_schemas)}"
        a, b = PostgresLedgerStore(dsn, schema=schema), PostgresLedgerStore(dsn, schema=schema)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def hosts(two_stores: tuple[LedgerStore, LedgerStore]) -> tuple[Lane, AcquirerHost]:
    """A signed-on terminal on host A, and host B on the same ledger."""
    a, b = two_stores
    lane = make_lane(store=a)
    return lane, AcquirerHost.from_store(b, random_bytes=random.Random(9).randbytes)


def payload(lane: Lane, msg: Message) -> bytes:
    return lane.term.dialect.payload(msg, tpdu=TPDU)


def at_once(*sends: tuple[AcquirerHost, bytes]) -> list[HostOutcome]:
    """Each (host, payload) handled in a thread of its own, all released together;
    the outcomes in the order given."""
    barrier = threading.Barrier(len(sends))
    out: list[HostOutcome | BaseException | None] = [None] * len(sends)

    def go(i: int, host: AcquirerHost, sent: bytes) -> None:
        barrier.wait()
        try:
            out[i] = host.handle(sent, NOW)
        except BaseException as exc:  # re-raised below, in the test's thread
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i, h, p)) for i, (h, p) in enumerate(sends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done: list[HostOutcome] = []
    for result in out:
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        done.append(result)
    return done


def approved(lane: Lane, amount: int) -> Approved:
    result = lane.exchange(lane.term.sale(DEBIT, amount, pin=PIN))
    assert isinstance(result, Approved)
    return result


def sale_row(lane: Lane, sale: Approved) -> TransactionRow:
    assert sale.rrn is not None
    row = lane.host.by_rrn(sale.rrn)
    assert row is not None
    return row


# --- idempotency and STAN reuse across hosts ---------------------------------------------
def test_the_same_request_to_two_hosts_gets_one_answer_byte_for_byte(
        hosts: tuple[Lane, AcquirerHost]) -> None:
    lane, other = hosts
    for amount in (1_000, 2_000, 3_000):
        sent = payload(lane, lane.term.sale(DEBIT, amount, pin=PIN))
        first, second = at_once((lane.host, sent), (other, sent))
        assert first.response_code == "00"
        assert first.reply == second.reply
        assert (first.records == ()) != (second.records == ())  # exactly one booked
    assert len([t for t in other.transactions() if t.kind == "sale"]) == 3
    assert other.available(DEBIT) == lane.host.available(DEBIT) == DEBIT.opening_balance - 6_000


def test_a_stan_reused_on_the_other_host_gets_94(hosts: tuple[Lane, AcquirerHost]) -> None:
    lane, other = hosts
    sale = lane.term.sale(DEBIT, 1_000, pin=PIN)
    assert lane.send(sale).response_code == "00"
    reused = lane.term.sale(DEBIT, 1_500, pin=PIN)
    reused[11] = sale[11]  # the terminal reuses the STAN for another sale
    reused = remac(lane, reused)
    assert other.handle(payload(lane, reused), NOW).response_code == "94"
    assert other.handle(payload(lane, sale), NOW).reply == lane.send(sale).reply


def test_one_reversal_sent_to_both_hosts_books_once(hosts: tuple[Lane, AcquirerHost]) -> None:
    lane, other = hosts
    sale = lane.term.sale(DEBIT, 4_000, pin=PIN)
    assert lane.send(sale).response_code == "00"
    reversal = payload(lane, lane.term.reversal(sale, "98"))
    first, second = at_once((lane.host, reversal), (other, reversal))
    assert first.reply == second.reply
    kinds = sorted((t.kind, t.status) for t in other.transactions())
    assert kinds == [("reversal", "acknowledged"), ("sale", "reversed")]
    assert other.available(DEBIT) == DEBIT.opening_balance


# --- one original, two hosts ----------------------------------------------------------------
def test_two_refunds_of_one_sale_at_once_never_exceed_it(
        hosts: tuple[Lane, AcquirerHost]) -> None:
    lane, other = hosts
    for _ in range(6):
        sale = approved(lane, 10_000)
        one = payload(lane, lane.term.refund(sale, 7_000))
        two = payload(lane, lane.term.refund(sale, 7_000))
        first, second = at_once((lane.host, one), (other, two))
        assert sorted([str(first.response_code), str(second.response_code)]) == ["00", "64"]
        assert sale_row(lane, sale).refunded == 7_000
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 6 * 3_000


def test_a_void_and_a_refund_of_one_sale_at_once_cannot_both_pass(
        hosts: tuple[Lane, AcquirerHost]) -> None:
    lane, other = hosts
    for _ in range(6):
        sale = approved(lane, 5_000)
        void = payload(lane, lane.term.void(sale))
        refund = payload(lane, lane.term.refund(sale, 1_000))
        first, second = at_once((lane.host, void), (other, refund))
        codes = [first.response_code, second.response_code]
        assert codes.count("00") == 1, codes
        row = sale_row(lane, sale)
        assert (row.status, row.refunded) in (("voided", 0), ("approved", 1_000))
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - sum(
        (0 if t.status == "voided" else 4_000) for t in lane.host.transactions()
        if t.kind == "sale")


def test_originals_read_apart_from_the_requests_lock_are_locked_too(
        hosts: tuple[Lane, AcquirerHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two refunds of one sale at once with PostgreSQL's lock_first off: the host then locks
    the request after the terminal read and reads the original with original_by_rrn (FOR
    UPDATE of its own) rather than with the lock (as for a message without its key)."""
    if type(hosts[0].host.store).__name__ == "PostgresLedgerStore":
        from emulator.host.pgledger import PgSession
        monkeypatch.setattr(PgSession, "lock_first", False)
    test_two_refunds_of_one_sale_at_once_never_exceed_it(hosts)


def test_two_sales_at_once_never_overdraw_the_card(hosts: tuple[Lane, AcquirerHost]) -> None:
    """Each fits the card alone, not both: one is approved, the other declined 51."""
    lane, other = hosts
    approved(lane, 1_000)  # the card's balance row exists: both sales update it
    left = lane.host.available(DEBIT)
    half = (left // 2 + 100_000) // 100 * 100  # a little more than half, whole yuan
    first = payload(lane, lane.term.sale(DEBIT, half, pin=PIN))
    second = payload(lane, lane.term.sale(DEBIT, half, pin=PIN))
    one, two = at_once((lane.host, first), (other, second))
    assert sorted([str(one.response_code), str(two.response_code)]) == ["00", "51"]
    assert other.available(DEBIT) == left - half >= 0


def test_a_sale_and_its_reversal_on_two_hosts_at_once_never_both_stand(
        hosts: tuple[Lane, AcquirerHost]) -> None:
    """The reversal either undoes the booked sale or leaves a tombstone the sale sees."""
    lane, other = hosts
    for i in range(6):
        sale = lane.term.sale(DEBIT, 1_000 + i, pin=PIN)
        reversal = payload(lane, lane.term.reversal(sale, "98"))
        at_once((lane.host, payload(lane, sale)), (other, reversal))
    assert [t.status for t in lane.host.transactions() if t.kind == "sale"
            and t.status == "approved"] == []
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_a_lost_postgresql_connection_is_replaced(pg_dsn: str) -> None:
    import psycopg

    from emulator.host.pgledger import PostgresLedgerStore
    store = PostgresLedgerStore(pg_dsn, schema=f"lost{next(_schemas)}")
    lane = make_lane(store=store)
    approved(lane, 1_000)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # as a server restart does
        admin.execute("SELECT pg_terminate_backend(%s)", (store.backend_pid(),))
    approved(lane, 2_000)
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000
    store.close()


def test_a_rolled_back_postgresql_session_keeps_the_statements_prepared(pg_dsn: str) -> None:
    """psycopg's own prepared statements would make its ROLLBACK send DEALLOCATE ALL, which
    dropped the store's too: the next request failed ('prepared statement ... does not
    exist') and a worker stopped (found by test_kill)."""
    from emulator.host.pgledger import PostgresLedgerStore
    store = PostgresLedgerStore(pg_dsn, schema=f"prepared{next(_schemas)}")
    lane = make_lane(store=store)
    approved(lane, 1_000)

    def rolled_back() -> None:
        with store.session() as session:
            for _ in range(8):  # often enough for psycopg to prepare it (prepare_threshold 5)
                session.batch_totals(TID, lane.term.batch)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    with store.session() as session:  # no LedgerConflict: the statements are still prepared
        assert session.terminal(TID) is not None
    approved(lane, 2_000)
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000
    store.close()


# --- provisioning -----------------------------------------------------------------------------
def test_a_terminal_provisioned_through_one_host_is_served_by_the_other(
        hosts: tuple[Lane, AcquirerHost]) -> None:
    lane, other = hosts
    newcomer = SimTerminal("cup", "30000003", lane.term.mid, bytes(range(16)), lambda: NOW,
                           rng=random.Random(4))
    sign_on = payload(lane, newcomer.sign_on_request())
    assert other.handle(sign_on, NOW).response_code == "03"
    lane.host.provision("30000003", lane.term.mid, bytes(range(16)))
    answer = other.handle(sign_on, NOW)
    assert answer.response_code == "00"
    assert answer.reply is not None
    newcomer.accept_sign_on(newcomer.dialect.unpack_payload(answer.reply).message)
    sale = payload(lane, newcomer.sale(DEBIT, 1_000, pin=PIN))
    assert lane.host.handle(sale, NOW).response_code == "00"  # keys from the ledger
    assert lane.host.remove("30000003") is not None
    assert other.handle(sale, NOW).close


# --- nothing ledger-sized at start or per request -----------------------------------------------
def test_start_and_requests_read_the_ledger_only_through_indexes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement the SQLite store runs (open, a whole day of requests, restart) is
    planned without a full scan of a ledger-sized table."""
    path = tmp_path / "ledger.db"
    lane = make_lane(store=SqliteLedgerStore(path))
    run_day(lane)  # the tables exist and hold rows
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = real_connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    lane.store = SqliteLedgerStore(path)
    lane.restart()
    lane.term.accept_sign_on(lane.answer(lane.term.sign_on_request()))
    run_day(lane)
    lane.exchange(lane.term.settlement())
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert statements
    plan_db = sqlite3.connect(path)
    scans: list[str] = []
    for statement in set(statements):
        if not re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE)", statement, re.IGNORECASE):
            continue
        for row in plan_db.execute("EXPLAIN QUERY PLAN " + statement):
            detail = str(row[3])
            if re.match(r"SCAN (transactions|refunds|balances|tombstones|uploads|batches)\b",
                        detail):
                scans.append(f"{detail}: {statement[:120]}")
    plan_db.close()
    lane.store.close()
    assert scans == []


@pytest.mark.slow
def test_start_up_does_not_depend_on_the_ledger_size(tmp_path: Path) -> None:
    """200,000 rows: the first open migrates once; after that opening and the first answer
    take the same few milliseconds as with an empty ledger."""
    path = tmp_path / "big.db"
    lane = make_lane(store=SqliteLedgerStore(path))
    template = sale_row(lane, approved(lane, 1_000))
    lane.store.close()
    db = sqlite3.connect(path)
    columns = ("tid", "batch", "stan", "mti", "kind", "fingerprint", "status", "response_code",
               "received_at", "response", "pan_masked", "pan_hash", "scheme", "amount", "rrn",
               "auth_code", "date")
    rows = ((f"9{i // 999_999:07d}", "000001", f"{i % 999_999 + 1:06d}", "0200", "sale", "f",
             "approved", "00", template.received_at, template.response, template.pan_masked,
             f"h{i % 5000}", "CUP", 100, f"{100_000_000 + i:012d}", "000001", "1123")
            for i in range(200_000))
    with db:
        db.executemany(f"INSERT INTO transactions ({', '.join(columns)}) VALUES "
                       f"({', '.join('?' * len(columns))})", rows)
        db.execute("DELETE FROM counters")  # as a ledger written before schema 2
    db.close()

    started = time.perf_counter()
    SqliteLedgerStore(path).close()
    migrated = time.perf_counter() - started
    started = time.perf_counter()
    lane.store = SqliteLedgerStore(path)
    lane.restart()
    lane.term.accept_sign_on(lane.answer(lane.term.sign_on_request()))
    sale = approved(lane, 1_000)
    ready = time.perf_counter() - started
    print(f"200k rows: one-time migration {migrated:.2f} s; open + sign-on + sale {ready:.3f} s")
    assert sale.rrn is not None
    assert int(sale.rrn) > 100_000_000 + 199_999  # the RRN counter came from the index
    assert ready < 1.0
    lane.store.close()


# --- an older ledger file -----------------------------------------------------------------------
def test_a_schema_1_ledger_is_migrated_in_place(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.db"
    lane = make_lane(store=SqliteLedgerStore(path))
    run_day(lane)
    early = lane.term.sale(DEBIT, 2_500, pin=PIN)
    lane.send(lane.term.reversal(early, "98"))  # acknowledged before its sale arrives
    available = lane.host.available(DEBIT)
    last_rrn = max(int(t.rrn) for t in lane.host.transactions() if t.rrn)
    lane.store.close()
    db = sqlite3.connect(path)  # what a ledger of schema 1 holds: none of these
    with db:
        for table in ("balances", "tombstones", "counters"):
            db.execute(f"DELETE FROM {table}")
    db.close()
    lane.store = SqliteLedgerStore(path)
    lane.restart()
    assert lane.host.available(DEBIT) == available
    assert lane.send(early).response_code == "12"  # the tombstone came back
    later = approved(lane, 1_000)
    assert later.rrn is not None
    assert int(later.rrn) > last_rrn
    lane.store.close()
    assert ledger_main(["--ledger", str(path)]) == 0
    assert "Refunds against originals" in capsys.readouterr().out


# --- the seam ---------------------------------------------------------------------------------
def test_open_store_picks_the_backend_and_never_shows_a_password(
        tmp_path: Path, pg_dsn_or_none: str | None) -> None:
    assert isinstance(open_store(":memory:"), MemoryLedgerStore)
    store = open_store(str(tmp_path / "x.db"))
    assert isinstance(store, SqliteLedgerStore)
    store.close()
    assert safe_ledger_name("postgresql://app:s3cret@db.example/pos") == \
        "postgresql://app@db.example/pos"
    assert "s3cret" not in safe_ledger_name("postgresql://app@/pos?host=/run&password=s3cret")
    with pytest.raises(LedgerError) as caught:
        open_store("postgresql://app:s3cret@127.0.0.1:1/nowhere?connect_timeout=2")
    assert "s3cret" not in str(caught.value)
    if pg_dsn_or_none is not None:
        from emulator.host.pgledger import PostgresLedgerStore
        pg = open_store(pg_dsn_or_none)
        assert isinstance(pg, PostgresLedgerStore)
        pg.close()


@pytest.fixture
def pg_dsn_or_none(request: pytest.FixtureRequest) -> str | None:
    from tests import pgcluster
    if not pgcluster.available():
        return None
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


def test_a_session_that_fails_writes_nothing(ledger_store: LedgerStore) -> None:
    host = AcquirerHost.from_store(ledger_store)
    host.provision(TID, "123456789012345", bytes(16))

    def failing_rule() -> None:
        with ledger_store.session() as session:
            row = session.terminal(TID)
            assert row is not None
            session.write([replace(row, batch="000009")])
            session.next_rrn()
            raise RuntimeError("rule failed")

    with pytest.raises(RuntimeError):
        failing_rule()
    stored = host.terminal(TID)
    assert stored is not None
    assert stored.batch == "000001"


def test_a_sale_racing_its_batchs_settlement_is_in_the_totals_or_refused(
        hosts: tuple[Lane, AcquirerHost]) -> None:
    """A settlement on one host and a sale of the same batch on the other, at once: the
    sale is either counted in the settled totals or refused (12, batch settled), never
    booked into a settled batch behind the totals' back."""
    from iso8583.settlement import SettlementTotals

    lane, other = hosts
    store = other.store
    for i in range(8):
        batch = lane.term.batch
        approved(lane, 1_000)  # the batch is open and has money in it
        sale = payload(lane, lane.term.sale(DEBIT, 2_000 + i * 100, pin=PIN))
        settle = payload(lane, lane.term.settlement())
        sold, settled = at_once((lane.host, sale), (other, settle))
        assert settled.response_code == "00"
        assert sold.response_code in ("00", "12"), sold.response_code
        with store.session() as s:
            row = s.batch(TID, batch)
            assert row is not None
            assert row.settled
            now = s.batch_totals(TID, batch)
        recorded, _, _ = SettlementTotals.decode(row.host_totals)
        assert recorded == now, f"round {i}: the sale ({sold.response_code}) is in the " \
                                "batch but not in its settled totals"
        lane.term.close_batch()


# --- another process holding SQLite's write lock -----------------------------------------
def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection (as another process would) holding the file's write lock."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # released by a timer's thread
    return other


def test_a_sqlite_session_yielding_on_busy_does_not_wait_for_another_writer(
        tmp_path: Path) -> None:
    """yield_on_busy: BEGIN refuses at once (LedgerBusy, nothing ran) while another
    connection holds the write lock; the next session, once it is free, runs. Without it,
    a session waits for the lock (up to the busy timeout)."""
    from emulator.host.errors import LedgerBusy, LedgerConflict

    store = SqliteLedgerStore(tmp_path / "l.db")
    try:
        store.yield_on_busy = True
        other = _hold_write_lock(tmp_path / "l.db")
        started = time.monotonic()
        with pytest.raises(LedgerBusy), store.session():
            raise AssertionError("the session ran without the lock")
        assert time.monotonic() - started < 0.5
        assert issubclass(LedgerBusy, LedgerConflict)  # a retry elsewhere runs it again
        other.execute("ROLLBACK")
        with store.session() as s:
            first = s.next_rrn()
        store.yield_on_busy = False
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, other.execute, ("ROLLBACK",)).start()
        started = time.monotonic()
        with store.session() as s:  # waits for the other connection
            assert s.next_rrn() != first
        assert time.monotonic() - started >= 0.25
        other.close()
    finally:
        store.close()


async def test_a_group_waiting_for_another_process_s_write_lock_lets_the_loop_run(
        tmp_path: Path) -> None:
    """The server's committer on SQLite, another connection holding the write lock for
    0.6 s: the event loop goes on running meanwhile (before: blocked in SQLite's busy
    wait on its thread), no session counts as running (a supervisor must not take the
    worker for hung), what queued during the wait runs after the waiting group (FIFO),
    and each work runs once."""
    import asyncio

    from emulator.server import GroupCommitter

    path = tmp_path / "l.db"
    store = SqliteLedgerStore(path)
    committer: GroupCommitter[Any] = GroupCommitter(store)
    assert store.yield_on_busy  # the committer asked for it: groups run on the loop
    task = asyncio.create_task(committer.run())
    ran: list[str] = []

    def work(name: str) -> Any:
        def run(session: Any, stopped: set[object]) -> str:
            ran.append(name)
            return str(session.next_rrn())
        return run

    other = _hold_write_lock(path)
    threading.Timer(0.6, other.execute, ("ROLLBACK",)).start()
    first = asyncio.ensure_future(committer.submit(work("first")))
    gaps: list[float] = []
    sessions: list[float] = []
    last = time.monotonic()
    second: asyncio.Future[Any] | None = None
    while not first.done():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
        sessions.append(committer.session_seconds())
        if second is None and len(gaps) == 10:
            second = asyncio.ensure_future(committer.submit(work("second")))
    assert max(gaps) < 0.2, f"the loop was blocked {max(gaps):.2f} s"
    assert second is not None
    rrns = [await first, await second]
    committer.close()
    await task
    other.close()
    store.close()
    assert sum(gaps) >= 0.5  # it did wait for the other connection
    assert max(sessions) < 0.2  # waiting for the lock is not a session running
    assert ran == ["first", "second"]
    assert rrns[0] != rrns[1]
