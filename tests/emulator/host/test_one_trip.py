"""One round trip a group on PostgreSQL: under the server's GroupCommitter a group's
COMMIT carries the next group's start ([writes, COMMIT, sync][BEGIN, pos_prepare_*,
sync]: PostgresLedgerStore.session_open, PgSession.commit_then). In each test the next
group's requests reach the committer while the first group's works run (as requests pile
up in the sockets while the loop is blocked), so its start rides with the first COMMIT;
then that COMMIT fails, or the connection is lost, or the next group resends a request of
the first: nothing approved is lost, nothing booked twice, nothing over-refunded."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from emulator.host import HostOutcome
from emulator.host.errors import LedgerConflict
from emulator.host.pgledger import PgSession, PostgresLedgerStore
from emulator.server import GroupCommitter, ServerStats
from tests.emulator.host.harness import NOW, Lane, make_lane
from tests.emulator.host.test_commit_ahead import (
    DEBIT,
    PIN,
    approved_sale,
    payload,
    second_terminal,
)

_schemas = itertools.count(1)


@pytest.fixture
def lane(pg_dsn: str) -> Iterator[Lane]:
    store = PostgresLedgerStore(pg_dsn, schema=f"onetrip{next(_schemas)}", one_trip=True,
                                commit_ahead=False)
    yield make_lane(store=store)
    store.close()


def code(outcome: HostOutcome) -> str:
    return str(outcome.response_code)


class Chains:
    """PgSession.commit_then, watched: each call's (next group's start sent with the
    COMMIT?, the COMMIT succeeded?)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[bool, bool]] = []
        real = PgSession.commit_then

        def spy(session: PgSession, then: Any) -> Any:
            try:
                nxt = real(session, then)
            except Exception:
                self.calls.append((then is not None, False))
                raise
            self.calls.append((nxt is not None and nxt[0]._start is not None, True))
            return nxt

        monkeypatch.setattr(PgSession, "commit_then", spy)


async def two_groups(lane: Lane, first: bytes, second: bytes,
                     during: Callable[[], None] | None = None,
                     ) -> tuple[list[HostOutcome], ServerStats]:
    """``first`` as one group; ``second`` reaches the committer while ``first``'s work
    runs (after which ``during`` runs, the group's session still open), so it is the
    next group, started in the first's COMMIT round trip. Returns both outcomes."""
    store: Any = lane.store
    host = lane.host
    stats = ServerStats()
    committer: GroupCommitter[Any] = GroupCommitter(store, stats)
    assert committer._one_trip is store
    committer.prefetch = host.prefetch
    later: list[asyncio.Future[Any]] = []

    def arriving(session: Any, stopped: set[object]) -> HostOutcome:
        outcome = host.handle(first, NOW, session)
        if not later:  # the first time only (the group may run again)
            later.append(asyncio.ensure_future(
                committer.submit(lambda s, _: host.handle(second, NOW, s), second)))
            if during is not None:
                during()
        return outcome

    runner = asyncio.create_task(committer.run())
    try:
        one = await committer.submit(arriving, first)
        while not later:
            await asyncio.sleep(0)
        two = await later[0]
    finally:
        committer.close()
        await runner
    return [one, two], stats


def execute(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(sql, params)


async def test_the_next_group_starts_with_the_commit_and_reads_what_it_wrote(
        lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resend of the first group's sale lands in the next group: its start (the key's
    lock, the rows) ran after the first COMMIT, so it reads the committed row: the stored
    answer, byte for byte, booked once."""
    approved_sale(lane, 1_000)  # the RRN block is taken: no round trip inside the group
    chains = Chains(monkeypatch)
    sale = lane.term.sale(DEBIT, 2_000, pin=PIN)
    data = payload(lane.term, sale)
    (first, again), stats = await two_groups(lane, data, data)
    assert chains.calls[0] == (True, True)  # the resend's start rode with the COMMIT
    assert code(first) == "00"
    assert first.reply is not None
    assert again.reply == first.reply
    stan = str(sale.get(11))
    assert len([t for t in lane.host.transactions() if t.stan == stan]) == 1
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000
    assert stats.commits == 2
    assert stats.conflicts == 0


async def test_a_failed_commit_rolls_the_next_group_back_and_runs_its_group_again(
        lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process spends the card while the first group's sale waits for its COMMIT:
    the balance check in the COMMIT's round trip fails (LedgerConflict), so the next
    group's start, sent behind it, is rolled back with it; the sale runs again alone and
    is declined, then the next group runs and is approved."""
    warm = approved_sale(lane, 1_000)
    row = lane.host.by_rrn(str(warm.rrn))
    assert row is not None
    store: Any = lane.store
    room = DEBIT.opening_balance - 1_000
    big = payload(lane.term, lane.term.sale(DEBIT, room - 500, pin=PIN))
    small = payload(lane.term, lane.term.sale(DEBIT, 200, pin=PIN))
    chains = Chains(monkeypatch)

    def spend() -> None:  # another process's sale of 1,000, committed meanwhile
        execute(store.dsn, f"UPDATE {store.schema}.balances SET spent = spent + 1000 "
                           "WHERE pan_hash = %s", (row.pan_hash,))

    (first, second), stats = await two_groups(lane, big, small, spend)
    assert chains.calls[0] == (True, False)  # the COMMIT that carried the start failed
    assert code(first) == "51"
    assert code(second) == "00"
    assert stats.conflicts >= 1
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 1_000 - 1_000 - 200
    approved = [t for t in lane.host.transactions() if t.status == "approved"]
    assert sorted(t.amount or 0 for t in approved) == [200, 1_000]


async def test_two_groups_never_over_refund_one_sale(lane: Lane) -> None:
    """A refund from each of two terminals of the merchant, of one sale, in two groups:
    the second's start (its lock on the original) comes after the first's COMMIT."""
    sale = approved_sale(lane, 10_000)
    other = second_terminal(lane)
    outcomes, _ = await two_groups(lane, payload(lane.term, lane.term.refund(sale, 6_000)),
                                   payload(other, other.refund(sale, 6_000)))
    assert [code(o) for o in outcomes] == ["00", "64"]
    original = lane.host.by_rrn(str(sale.rrn))
    assert original is not None
    assert original.refunded == 6_000


def kill(dsn: str, pid: int) -> None:
    """End the server process ``pid`` and wait until it is gone."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(500):
            if db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                          (pid,)).fetchone() is None:
                return
            db.execute("SELECT pg_sleep(0.01)")
    raise AssertionError("the backend did not end")


async def test_a_connection_lost_before_the_commit_runs_the_group_again(
        lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection dies with the first group's writes held: the COMMIT's round trip
    fails (its outcome unknown), the group runs again on a new connection (nothing of it
    was kept: booked once), then the next group."""
    approved_sale(lane, 1_000)
    store: Any = lane.store
    pid = store.backend_pid()
    assert pid is not None
    chains = Chains(monkeypatch)
    first_sale = payload(lane.term, lane.term.sale(DEBIT, 2_000, pin=PIN))
    second_sale = payload(lane.term, lane.term.sale(DEBIT, 3_000, pin=PIN))
    outcomes, stats = await two_groups(lane, first_sale, second_sale,
                                       lambda: kill(store.dsn, pid))
    assert chains.calls[0] == (True, False)
    assert [code(o) for o in outcomes] == ["00", "00"]
    assert stats.unavailable >= 1
    assert store.backend_pid() != pid
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 6_000
    assert len([t for t in lane.host.transactions() if t.status == "approved"]) == 3


async def test_a_connection_lost_between_the_two_halves(
        lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first group's COMMIT was answered, then the connection failed before the next
    group's start was: the first group is released (committed, once), the next one runs
    on a new connection."""
    from emulator.host import pgledger
    approved_sale(lane, 1_000)
    store: Any = lane.store
    pid = store.backend_pid()
    real = pgledger._collect
    segments: list[bool] = []

    def lost(pgconn: Any) -> Iterator[None]:
        pgconn.finish()  # the connection fails (what libpq then reports)
        if pgconn.status != 0:  # (always: a generator that raises at its first step)
            raise psycopg.OperationalError("the connection was lost")
        yield

    def collect(pgconn: Any, count: int, *, last: bool = True) -> Any:
        segments.append(last)
        if last and len(segments) > 1 and not segments[-2]:  # the second half of a chain
            return lost(pgconn)
        return real(pgconn, count, last=last)

    monkeypatch.setattr(pgledger, "_collect", collect)
    first_sale = payload(lane.term, lane.term.sale(DEBIT, 2_000, pin=PIN))
    second_sale = payload(lane.term, lane.term.sale(DEBIT, 3_000, pin=PIN))
    outcomes, stats = await two_groups(lane, first_sale, second_sale)
    assert (False, True) in itertools.pairwise(segments)  # the two halves of a chain
    assert [code(o) for o in outcomes] == ["00", "00"]
    assert stats.unavailable == 1
    assert stats.conflicts == 0
    assert store.backend_pid() != pid
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 6_000
    assert len([t for t in lane.host.transactions() if t.status == "approved"]) == 3


def test_a_session_started_meanwhile_commits_the_open_one_first(lane: Lane) -> None:
    """Between run() and commit() the store is not held: a session of the store (an
    admin read) settles the open session: committed then; commit() starts nothing. A
    next session settled before it ran is rolled back (its run raises LedgerConflict)."""
    store: Any = lane.store
    host = lane.host
    sale = payload(lane.term, lane.term.sale(DEBIT, 2_000, pin=PIN))
    opened = store.session_open()
    first = opened.run(lambda s: host.handle(sale, NOW, s))
    assert code(first) == "00"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 2_000  # settled: committed
    assert opened.commit(lambda s: host.prefetch(s, [sale])) is None
    resend = store.session_open()
    again = resend.run(lambda s: host.handle(sale, NOW, s))
    assert again.reply == first.reply
    nxt = resend.commit(lambda s: host.prefetch(s, [sale]))
    assert nxt is not None
    host.transactions()  # settles nxt: rolled back before it ran
    with pytest.raises(LedgerConflict):
        nxt.run(lambda s: host.handle(sale, NOW, s))
    with store.session() as session:  # its lock on the request's key is gone
        session.lock_request(lane.term.tid, "000001", "000001")


def test_one_trip_is_off_by_default_and_on_with_the_environment_unless_commits_ahead(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator.host.pgledger import COMMIT_AHEAD_ENV, ONE_TRIP_ENV
    monkeypatch.delenv(COMMIT_AHEAD_ENV, raising=False)
    for env, ahead, expected in (("", False, False), ("0", False, False),
                                 ("1", False, True), ("1", True, False)):
        monkeypatch.setenv(ONE_TRIP_ENV, env)
        store = PostgresLedgerStore(pg_dsn, schema=f"onetrip{next(_schemas)}",
                                    commit_ahead=ahead)
        try:
            committer: GroupCommitter[Any] = GroupCommitter(store, ServerStats())
            assert (committer._one_trip is not None) == expected
            assert (committer._ahead is not None) == ahead
        finally:
            store.close()


@pytest.mark.parametrize(("ahead", "one_trip", "processes", "env", "expected"), [
    # nothing said: by the host's processes
    (None, None, 1, {}, (True, False)),
    (None, None, 2, {}, (False, True)),
    (None, None, 4, {}, (False, True)),
    # the environment, over the process count
    (None, None, 1, {"POS_PG_COMMIT_AHEAD": "0"}, (False, False)),
    (None, None, 1, {"POS_PG_COMMIT_AHEAD": "0", "POS_PG_ONE_TRIP": "1"}, (False, True)),
    (None, None, 2, {"POS_PG_COMMIT_AHEAD": "1"}, (True, True)),  # ahead wins: see below
    (None, None, 2, {"POS_PG_ONE_TRIP": "0"}, (False, False)),
    # the caller, over both
    (True, None, 2, {"POS_PG_COMMIT_AHEAD": "0"}, (True, True)),
    (False, False, 1, {"POS_PG_ONE_TRIP": "1"}, (False, False)),
])
def test_commit_modes_follow_the_caller_then_the_environment_then_the_processes(
        monkeypatch: pytest.MonkeyPatch, ahead: bool | None, one_trip: bool | None,
        processes: int, env: dict[str, str], expected: tuple[bool, bool]) -> None:
    from emulator.host.pgledger import COMMIT_AHEAD_ENV, ONE_TRIP_ENV, commit_modes
    monkeypatch.delenv(COMMIT_AHEAD_ENV, raising=False)
    monkeypatch.delenv(ONE_TRIP_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert commit_modes(ahead, one_trip, processes) == expected


def test_a_store_of_several_processes_runs_one_round_trip_a_group(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator.host.ledger import open_store
    from emulator.host.pgledger import COMMIT_AHEAD_ENV, ONE_TRIP_ENV
    monkeypatch.delenv(COMMIT_AHEAD_ENV, raising=False)
    monkeypatch.delenv(ONE_TRIP_ENV, raising=False)
    for processes, mode in ((1, "commits ahead"), (2, "one round trip a group")):
        store = open_store(pg_dsn, processes=processes)
        try:
            assert GroupCommitter(store, ServerStats()).commit_mode == mode
        finally:
            store.close()
    monkeypatch.setenv(COMMIT_AHEAD_ENV, "1")  # both asked for: commits ahead
    store = PostgresLedgerStore(pg_dsn, processes=2)
    try:
        assert GroupCommitter(store, ServerStats()).commit_mode == "commits ahead"
    finally:
        store.close()
