"""Commits ahead on PostgreSQL: under the server's GroupCommitter a group's COMMIT is sent
and not waited for (PostgresLedgerStore.session_ahead), and the next group runs meanwhile
on the store's other connection. Two groups in flight are two connections, as two worker
processes are: what one must not do because of the other, the database stops (row and
advisory locks held to the COMMIT). Each test holds the first group's COMMIT in flight
for a moment (another connection holds the card's balance row, which the COMMIT's
round trip locks) while the second group runs."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emulator import server
from emulator.catalogue import card_by_name
from emulator.host import HostOutcome
from emulator.server import GroupCommitter, ServerStats
from emulator.simterminal import Approved, SimTerminal
from tests.emulator.host.harness import NOW, TPDU, Lane, make_lane
from tests.emulator.host.test_prefetch import hold

DEBIT = card_by_name("cup-debit")
PIN = "123456"
HELD = 0.05  # seconds the first group's COMMIT waits (the lock timeout is 0.1 s)


_schemas = itertools.count(1)


@pytest.fixture(autouse=True)
def ahead_at_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests queue one request at a time: it starts its group while the previous
    group's COMMIT is in flight (the server waits for AHEAD_AT queued)."""
    monkeypatch.setattr(server, "AHEAD_AT", 1)


@pytest.fixture
def lane(pg_dsn: str) -> Iterator[Lane]:
    from emulator.host.pgledger import PostgresLedgerStore
    store = PostgresLedgerStore(pg_dsn, schema=f"ahead{next(_schemas)}", commit_ahead=True)
    yield make_lane(store=store)
    store.close()


def test_commits_ahead_are_on_unless_turned_off(pg_dsn: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On by default (two connections, the committer runs groups ahead); the environment
    turns it off ("0") for a store that does not say: one connection, and the committer
    runs each group with its COMMIT waited for (the capability says 0)."""
    from emulator.host.pgledger import COMMIT_AHEAD_ENV, PostgresLedgerStore
    for env, expected in ((None, 1), ("", 1), ("1", 1), ("0", 0)):
        if env is None:
            monkeypatch.delenv(COMMIT_AHEAD_ENV, raising=False)
        else:
            monkeypatch.setenv(COMMIT_AHEAD_ENV, env)
        store = PostgresLedgerStore(pg_dsn, schema=f"ahead{next(_schemas)}")
        try:
            assert store.commits_ahead == expected
            committer: GroupCommitter[Any] = GroupCommitter(store, ServerStats())
            assert (committer._ahead is not None) == bool(expected)
        finally:
            store.close()
    store = PostgresLedgerStore(pg_dsn, schema=f"ahead{next(_schemas)}", commit_ahead=False)
    try:
        assert store.commits_ahead == 0
        with store.session() as session:  # one connection serves every session
            session.terminal("00000000")
        with store.session() as session:
            session.terminal("00000000")
        assert len(store.backend_pids()) == 1
    finally:
        store.close()


def approved_sale(lane: Lane, amount: int) -> Approved:
    result = lane.exchange(lane.term.sale(DEBIT, amount, pin=PIN))
    assert isinstance(result, Approved)
    return result


def payload(term: SimTerminal, msg: Any) -> bytes:
    return term.dialect.payload(msg, tpdu=TPDU)


def second_terminal(lane: Lane) -> SimTerminal:
    """Another terminal of the lane's merchant, provisioned and signed on."""
    other = SimTerminal("cup", "10000002", lane.term.mid, bytes(range(16)), lambda: NOW,
                        rng=random.Random(5))
    lane.store.commit([lane.host.provision(other.tid, other.mid, bytes(range(16)))])
    sign_on = lane.host.handle(payload(other, other.sign_on_request()), NOW)
    lane.store.commit(sign_on.records)
    assert sign_on.reply is not None
    other.accept_sign_on(other.dialect.unpack_payload(sign_on.reply).message)
    return other


def hold_balance(lane: Lane, rrn: str) -> Callable[[], None]:
    """Lock the balance row of the card of the sale ``rrn`` on a connection of its own."""
    row = lane.host.by_rrn(rrn)
    assert row is not None
    store: Any = lane.store
    return hold(store.dsn, f"SELECT 1 FROM {store.schema}.balances "
                           f"WHERE pan_hash = '{row.pan_hash}' FOR UPDATE")


async def two_groups(lane: Lane, first: bytes, second: bytes,
                     release: Callable[[], None]) -> tuple[list[int], list[HostOutcome]]:
    """``first`` as one group, then ``second`` as the next while the first's COMMIT is
    in flight (held by ``release``'s lock for HELD seconds); returns how many COMMITs
    were in flight as each group's session started, and the two outcomes."""
    store: Any = lane.store
    host = lane.host
    started: list[int] = []
    session_ahead = store.session_ahead

    def spy(body: Any) -> Any:
        started.append(len(store._flights))
        return session_ahead(body)

    store.session_ahead = spy
    committer: GroupCommitter[Any] = GroupCommitter(store, ServerStats())
    committer.prefetch = host.prefetch

    def work(data: bytes) -> Callable[[Any, set[object]], HostOutcome]:
        return lambda session, stopped: host.handle(data, NOW, session)

    timer = threading.Timer(HELD, release)
    runner = asyncio.create_task(committer.run())
    try:
        timer.start()
        one = asyncio.ensure_future(committer.submit(work(first), first))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not store._flights:  # the first group's COMMIT is sent
            assert loop.time() < deadline
            await asyncio.sleep(0.001)
        two = asyncio.ensure_future(committer.submit(work(second), second))
        outcomes = list(await asyncio.gather(one, two))
    finally:
        timer.join()
        committer.close()
        await runner
        del store.session_ahead
    return started, outcomes


async def test_two_groups_in_flight_never_over_refund_one_sale(lane: Lane) -> None:
    """A refund from each of two terminals of the merchant, of one sale, in two groups
    in flight at once: the second waits for the first's lock on the original, then
    reads what it refunded."""
    sale = approved_sale(lane, 10_000)
    other = second_terminal(lane)
    release = hold_balance(lane, str(sale.rrn))
    started, outcomes = await two_groups(
        lane, payload(lane.term, lane.term.refund(sale, 6_000)),
        payload(other, other.refund(sale, 6_000)), release)
    assert started[:2] == [0, 1]  # the second ran while the first's COMMIT was in flight
    assert sorted(str(o.response_code) for o in outcomes) == ["00", "64"]
    original = lane.host.by_rrn(str(sale.rrn))
    assert original is not None
    assert original.refunded == 6_000
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 10_000 + 6_000


async def test_a_resend_whose_group_is_still_committing_gets_the_stored_answer(
        lane: Lane) -> None:
    """The resend's group waits for the first's lock on the request's key, then reads
    the committed row: the stored answer, byte for byte, booked once."""
    warm = approved_sale(lane, 1_000)  # the card's balance row exists (to hold it)
    release = hold_balance(lane, str(warm.rrn))
    sale = lane.term.sale(DEBIT, 2_000, pin=PIN)
    data = payload(lane.term, sale)
    started, (first, again) = await two_groups(lane, data, data, release)
    assert started[:2] == [0, 1]
    assert first.response_code == "00"
    assert first.reply is not None
    assert again.reply == first.reply
    stan = str(sale.get(11))
    assert len([t for t in lane.host.transactions() if t.stan == stan]) == 1
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000


def test_a_landed_commit_keeps_nothing_of_its_session(pg_dsn: str) -> None:
    """The server keeps a landed commit for its socket until the next one on its
    connection (CommitInFlight.socket_open): the session, with what its group read and
    wrote, must not live that long (alive at the server's periodic gc.freeze(), it would
    never be collected once dropped)."""
    from emulator.host.ledger import provisioned
    from emulator.host.pgledger import PostgresLedgerStore
    store = PostgresLedgerStore(pg_dsn, schema=f"ahead{next(_schemas)}", commit_ahead=True)
    try:
        sessions: list[weakref.ref[object]] = []

        def body(session: Any) -> None:
            sessions.append(weakref.ref(session))
            session.write([provisioned(None, "70000001", "123456789012345", bytes(16))])

        _, commit = store.session_ahead(body)
        assert commit is not None
        commit.result()
        assert commit.socket_open  # kept by the server for its socket
        gc.collect()
        assert sessions[0]() is None
        assert store.terminal("70000001") is not None  # and it committed
    finally:
        store.close()
