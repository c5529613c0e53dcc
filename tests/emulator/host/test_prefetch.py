"""A group's locks taken at once before its requests run (AcquirerHost.prefetch).

The server's group commit hands the host every request of a group first; on PostgreSQL
the host takes all their locks and reads all their rows in one round trip
(PgSession.lock_requests), and each request's lock_request is then served from what came
back -- unless a write earlier in the same session touched it, when it reads again. So
the group path must answer byte for byte as the per-request path (no prefetch) does,
whatever the group holds: two refunds of one sale, a void and a refund of one sale, a
sale and its void, a duplicate, a reused STAN, a reversal before its request. Memory and
SQLite take no locks (prefetch does nothing there): the same answers all the same.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from emulator.catalogue import card_by_name
from emulator.host import AcquirerHost, HostOutcome, LedgerConflict, LedgerStore
from emulator.host.core import answered_date
from emulator.host.ledger import BalanceRow, TombstoneRow, TransactionRow
from emulator.simterminal import Approved
from iso8583.message import Message
from tests.emulator.host.conftest import make_store
from tests.emulator.host.harness import NOW, TPDU, Lane, make_lane
from tests.emulator.host.test_rules import remac

DEBIT = card_by_name("cup-debit")
PIN = "123456"


def in_one_session(host: AcquirerHost, store: LedgerStore, payloads: list[bytes], *,
                   prefetch: bool) -> list[HostOutcome]:
    """``payloads`` as the server runs one group: one session, in order, committed."""
    with store.session() as session:
        if prefetch:
            host.prefetch(session, payloads)
        return [host.handle(p, NOW, session) for p in payloads]


def prefetch_counts(store: LedgerStore) -> tuple[int, int]:
    """(requests served from their group's prefetch, requests that read again)."""
    return getattr(store, "prefetch_used", 0), getattr(store, "prefetch_stale", 0)


@dataclass
class Pair:
    """One terminal, two fresh ledgers of one kind: each group runs with prefetch on
    ``group`` and without on ``single``; every answer must be the same bytes."""

    group: Lane
    single: Lane
    postgres: bool

    def payload(self, msg: Message) -> bytes:
        return self.group.term.dialect.payload(msg, tpdu=TPDU)

    def send(self, *msgs: Message) -> list[Message]:
        payloads = [self.payload(m) for m in msgs]
        grouped = in_one_session(self.group.host, self.group.store, payloads, prefetch=True)
        single = in_one_session(self.single.host, self.single.store, payloads, prefetch=False)
        assert [o.reply for o in grouped] == [o.reply for o in single]
        replies = []
        for outcome in grouped:
            assert outcome.reply is not None
            replies.append(self.group.term.dialect.unpack_payload(outcome.reply).message)
        return replies

    def sale(self, amount: int) -> Approved:
        request = self.group.term.sale(DEBIT, amount, pin=PIN)
        (answer,) = self.send(request)
        result = self.group.term.check_response(request, answer)
        assert isinstance(result, Approved)
        return result

    def stale(self) -> int:
        return prefetch_counts(self.group.store)[1]

    def same_ledgers(self) -> None:
        def rows(lane: Lane) -> list[TransactionRow]:  # hashes are keyed by each ledger's own
            return [replace(t, fingerprint="", pan_hash=None) for t in lane.host.transactions()]
        assert rows(self.group) == rows(self.single)
        assert self.group.host.available(DEBIT) == self.single.host.available(DEBIT)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    stores = []
    for name in ("group", "single"):
        (tmp_path / name).mkdir()
        stores.append(make_store(request.param, tmp_path / name, request))
    yield Pair(make_lane(store=stores[0]), make_lane(store=stores[1]),
               request.param == "postgresql")
    for store in stores:
        store.close()


def codes(replies: list[Message]) -> list[str | None]:
    return [r.response_code for r in replies]


def test_two_refunds_of_one_sale_in_one_group(pair: Pair) -> None:
    sale = pair.sale(10_000)
    stale = pair.stale()
    term = pair.group.term
    # the second refund's prefetched original (nothing refunded yet) is stale by then
    assert codes(pair.send(term.refund(sale, 6_000), term.refund(sale, 6_000))) == ["00", "64"]
    assert codes(pair.send(term.refund(sale, 3_000), term.refund(sale, 1_000),
                           term.refund(sale, 1_000))) == ["00", "00", "64"]
    if pair.postgres:
        assert pair.stale() >= stale + 3
    pair.same_ledgers()


def test_a_void_and_a_refund_of_one_sale_in_one_group(pair: Pair) -> None:
    term = pair.group.term
    one, two = pair.sale(5_000), pair.sale(6_000)
    assert codes(pair.send(term.void(one), term.refund(one, 1_000))) == ["00", "12"]
    assert codes(pair.send(term.refund(two, 1_000), term.void(two))) == ["00", "12"]
    pair.same_ledgers()


def test_a_sale_and_its_void_in_one_group(pair: Pair) -> None:
    """The void names the RRN the sale before it in the group is given: nothing was
    there to lock or read at the group's start, the sale's booking is there by the void."""
    last = pair.sale(1_000)
    term = pair.group.term
    sale = term.sale(DEBIT, 2_000, pin=PIN)
    rrn = f"{int(str(last.rrn)) + 1:012d}"  # the next one (each ledger counts alike)
    named = Approved("sale", sale.mti, str(sale[11]), last.batch, 2_000, rrn, rrn[-6:],
                     answered_date(NOW), last.scheme, DEBIT.pan)
    stale = pair.stale()
    replies = pair.send(sale, term.void(named))
    assert replies[0].get(37) == rrn
    assert codes(replies) == ["00", "00"]
    if pair.postgres:
        assert pair.stale() == stale + 1
    pair.same_ledgers()


def test_a_duplicate_and_a_reused_stan_in_one_group(pair: Pair) -> None:
    term = pair.group.term
    sale = term.sale(DEBIT, 3_000, pin=PIN)
    first, again = pair.send(sale, sale)
    assert first.response_code == "00"
    assert pair.payload(first) == pair.payload(again)  # the stored answer, re-MACed
    other = term.sale(DEBIT, 4_000, pin=PIN)
    reused = term.sale(DEBIT, 4_500, pin=PIN)
    reused[11] = other[11]
    assert codes(pair.send(other, remac(pair.group, reused))) == ["00", "94"]
    assert len([t for t in pair.group.host.transactions() if t.kind == "sale"]) == 2
    pair.same_ledgers()


def test_a_reversal_before_its_sale_in_one_group(pair: Pair) -> None:
    term = pair.group.term
    sale = term.sale(DEBIT, 7_000, pin=PIN)
    reversal = term.reversal(sale, "98")
    assert codes(pair.send(reversal, sale)) == ["00", "12"]  # the tombstone stops it
    assert pair.group.host.available(DEBIT) == DEBIT.opening_balance
    pair.same_ledgers()


def test_a_mixed_group_answers_as_request_by_request(pair: Pair) -> None:
    term = pair.group.term
    originals = [pair.sale(2_000 + 100 * i) for i in range(4)]
    used, stale = prefetch_counts(pair.group.store)
    group = [term.sale(DEBIT, 900, pin=PIN), term.refund(originals[0], 500),
             term.void(originals[1]), term.refund(originals[2], 2_200),
             term.refund(originals[3], 300), term.sale(DEBIT, 800, pin=PIN),
             term.refund(originals[3], 400), term.balance(DEBIT, pin=PIN)]
    assert codes(pair.send(*group)) == ["00", "00", "00", "00", "00", "00", "00", "00"]
    if pair.postgres:  # all but the second refund of originals[3] came with the group's
        assert prefetch_counts(pair.group.store) == (used + 6, stale + 1)
    pair.same_ledgers()


# --- PostgreSQL: locks -------------------------------------------------------------------
@pytest.fixture
def pg_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    request.getfixturevalue("pg_dsn")  # skips without PostgreSQL
    stores = [make_store("postgresql", tmp_path, request) for _ in range(2)]
    yield Pair(make_lane(store=stores[0]), make_lane(store=stores[1]), True)
    for store in stores:
        store.close()


def hold(dsn: str, sql: str) -> Callable[[], None]:
    """Run ``sql`` on a connection of its own, in a transaction held open; returns the
    function that ends it (a rollback: its locks go)."""
    import psycopg
    db: Any = psycopg.connect(dsn)
    db.execute(sql)

    def release() -> None:
        db.rollback()
        db.close()
    return release


def waiting(dsn: str, pid: int | None, timeout: float = 5.0) -> bool:
    """Whether the server process ``pid`` waits for a lock (polled up to ``timeout``)."""
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as db:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if db.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted",
                          (pid,)).fetchone():
                return True
            time.sleep(0.01)
    return False


def test_prefetch_takes_the_groups_locks_in_one_order(pg_pair: Pair) -> None:
    """Group B names two originals in the order (second, first) while A holds the first:
    B waits for the first without holding the second, so A can still lock the second.
    (Taken one request at a time in B's order, B would hold the second while it waits,
    and A would wait for B until its lock timeout: a deadlock.)"""
    from emulator.host.pgledger import PostgresLedgerStore
    term = pg_pair.group.term
    first, second = pg_pair.sale(1_000), pg_pair.sale(2_000)
    assert str(first.rrn) < str(second.rrn)
    host, store = pg_pair.group.host, pg_pair.group.store
    assert isinstance(store, PostgresLedgerStore)
    other = PostgresLedgerStore(store.dsn, schema=store.schema)
    try:
        other.terminal(term.tid)  # connected: B may wait far longer than A (below)
        assert other._db is not None
        other._db.execute("SET lock_timeout = '20s'")
        other_host = AcquirerHost.from_store(other)
        b_group = [pg_pair.payload(term.refund(second, 100)),
                   pg_pair.payload(term.refund(first, 100))]
        done: list[object] = []

        def run_b() -> None:
            done.append(in_one_session(other_host, other, b_group, prefetch=True))

        with store.session() as a:
            host.prefetch(a, [pg_pair.payload(term.refund(first, 200))])
            b = threading.Thread(target=run_b)
            b.start()
            assert waiting(store.dsn, other.backend_pid())  # B waits for the first
            started = time.monotonic()
            outcome = host.handle(pg_pair.payload(term.refund(second, 300)), NOW, a)
            assert outcome.response_code == "00"  # A's own lock timeout is 100 ms
            assert time.monotonic() - started < 1.0
        b.join(30)
        (outcomes,) = done
        assert isinstance(outcomes, list)
        assert [o.response_code for o in outcomes] == ["00", "00"]
    finally:
        other.close()


async def test_a_lock_timeout_in_the_prefetch_reruns_the_group(pg_pair: Pair) -> None:
    """Another process holds the last request's lock: the group's prefetch gives up
    (LedgerConflict) before any request ran, and the group runs again one request per
    session, the locked one retried until the lock is free."""
    from emulator.host.pgledger import PostgresLedgerStore
    from emulator.server import GroupCommitter, ServerStats
    lane = pg_pair.group
    term, host, store = lane.term, lane.host, lane.store
    assert isinstance(store, PostgresLedgerStore)
    sale = pg_pair.sale(5_000)
    msgs = [term.sale(DEBIT, 1_000, pin=PIN), term.refund(sale, 500),
            term.sale(DEBIT, 1_100, pin=PIN)]
    payloads = [pg_pair.payload(m) for m in msgs]
    locked = f"{term.tid}/{term.batch}/{msgs[-1].get(11)!s}"
    release = hold(store.dsn,
                   f"SELECT pg_advisory_xact_lock(8583, hashtext('{locked}'))")
    timer = threading.Timer(0.5, release)
    stats = ServerStats()
    committer: GroupCommitter[Any] = GroupCommitter(store, stats)
    committer.prefetch = host.prefetch
    runs: dict[bytes, int] = dict.fromkeys(payloads, 0)

    def work_of(payload: bytes) -> Callable[[Any, set[object]], HostOutcome]:
        def work(session: Any, stopped: set[object]) -> HostOutcome:
            runs[payload] += 1
            return host.handle(payload, NOW, session)
        return work

    runner = asyncio.create_task(committer.run())
    timer.start()
    try:
        outcomes = await asyncio.gather(*(committer.submit(work_of(p), p) for p in payloads))
    finally:
        timer.join()
        committer.close()
        await runner
    assert [o.response_code for o in outcomes] == ["00", "00", "00"]
    assert stats.conflicts >= 2  # the group's prefetch, then the locked request alone
    assert runs[payloads[0]] == runs[payloads[1]] == 1  # the group attempt ran no request
    assert runs[payloads[2]] >= 2


def test_a_write_failing_among_the_pipelined_writes_is_a_conflict(pg_pair: Pair) -> None:
    """The held writes go out in one round trip with the balances' lock (libpq pipeline):
    a duplicate booking among them is a LedgerConflict, nothing of the session stays,
    and the connection serves the next session."""
    lane = pg_pair.group
    sale = pg_pair.sale(1_000)
    row = lane.host.by_rrn(str(sale.rrn))
    assert row is not None
    pan_hash = row.pan_hash
    assert pan_hash is not None
    left = lane.host.available(DEBIT)

    def clashing() -> None:
        with lane.store.session() as session:
            session.write([BalanceRow(pan_hash, 0, 500)])  # a move: flush locks balances
            session.book(replace(row, rrn=None))  # the same key again: a unique violation
            session.write([TombstoneRow(row.tid, row.batch, "999998", None, None)])  # after

    with pytest.raises(LedgerConflict):
        clashing()
    assert lane.host.available(DEBIT) == left
    assert codes(pg_pair.send(lane.term.refund(sale, 300))) == ["00"]
    assert lane.host.available(DEBIT) == left + 300
