"""The group committer with a store that starts the next session in the round trip of a
session's COMMIT (emulator.server.OneTripStore): what queued while a group's works ran is
the next group, started with the group's COMMIT; callbacks only after their own COMMIT;
a failed COMMIT puts the next group back at the head of the queue and runs its own group
again as the committer always did. A fake store, no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulator.host.errors import LedgerConflict, LedgerUnavailable
from emulator.host.ledger import MemoryLedgerStore, SqliteLedgerStore
from emulator.server import GroupCommitter, OneTripStore, ServerStats


@dataclass
class Session:
    records: list[str] = field(default_factory=list)
    hints: list[object] | None = None  # what its prefetch was given


class Opened:
    """A session_open session of the fake store."""

    def __init__(self, store: OneTrip, prefetch: Callable[[Session], None] | None = None,
                 session: Session | None = None, error: Exception | None = None) -> None:
        self.store = store
        self.prefetch = prefetch
        self.session = session
        self.error = error

    def run(self, body: Callable[[Session], Any]) -> Any:
        if self.error is not None:
            raise self.error
        if self.session is None:
            self.session = Session()
            if self.prefetch is not None:
                self.prefetch(self.session)
        return body(self.session)

    def commit(self, then: Callable[[Session], None] | None = None) -> Opened | None:
        store = self.store
        assert self.session is not None
        store.trips.append(then is not None)
        nxt = None
        if then is not None:  # its start goes out with this COMMIT (rolled back if it fails)
            nxt = Session()
            then(nxt)
        if store.settled:  # a session of the store committed this one meanwhile
            store.settled = False
            store.committed.append(self.session.records)
            return None
        if store.commit_errors:
            error = store.commit_errors.pop(0)
            if error is not None:
                raise error
        store.committed.append(self.session.records)
        if nxt is None:
            return None
        start_error = store.start_errors.pop(0) if store.start_errors else None
        return Opened(store, session=nxt, error=start_error)


class OneTrip:
    """One-trip sessions; plain sessions (the committer's reruns) commit at once.
    ``committed``: each session's records, in commit order; ``trips``: each COMMIT, True
    when it carried the next session's start."""

    def __init__(self, one_trip: bool = True) -> None:
        self.one_trip = one_trip
        self.committed: list[list[str]] = []
        self.trips: list[bool] = []
        self.opened = 0
        self.plain_sessions = 0
        self.commit_errors: list[Exception | None] = []  # each COMMIT in turn: fails?
        self.start_errors: list[Exception | None] = []  # each next session's start
        self.settled = False

    def session_open(self, prefetch: Callable[[Session], None] | None = None) -> Opened:
        self.opened += 1
        return Opened(self, prefetch)

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.plain_sessions += 1
        session = Session()
        yield session
        self.committed.append(session.records)


def test_the_fake_store_has_the_capability_and_sqlite_and_memory_do_not(
        tmp_path: Path) -> None:
    assert isinstance(OneTrip(), OneTripStore)
    assert not isinstance(MemoryLedgerStore(secret=b"k" * 32), OneTripStore)
    sqlite = SqliteLedgerStore(tmp_path / "ledger.db")
    try:
        assert not isinstance(sqlite, OneTripStore)
        committer: GroupCommitter[Any] = GroupCommitter(sqlite, ServerStats())
        assert committer._one_trip is None
    finally:
        sqlite.close()


@dataclass
class Rig:
    committer: GroupCommitter[Session]
    store: OneTrip
    stats: ServerStats
    released: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    prefetched: list[list[object]] = field(default_factory=list)

    def submit(self, name: str, *arrive: str) -> None:
        """Queue ``name``; while its work runs, ``arrive`` are submitted (requests that
        reach the server while the loop is blocked in the group: the first time it runs)."""
        arriving = list(arrive)

        def work(session: Session, stopped: set[object]) -> str:
            self.ran.append(name)
            session.records.append(name)
            while arriving:
                self.submit(arriving.pop(0))
            return name

        def released(result: Any, error: BaseException | None) -> None:
            self.released.append(f"{result}" if error is None else f"{name}!")

        self.committer.submit_nowait(work, released, name)

    def prefetch(self, session: Session, hints: list[Any]) -> None:
        session.hints = list(hints)
        self.prefetched.append(list(hints))

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.001)


def make_rig(store: OneTrip) -> tuple[Rig, asyncio.Task[None]]:
    stats = ServerStats()
    committer: GroupCommitter[Session] = GroupCommitter(store, stats)
    rig = Rig(committer, store, stats)
    committer.prefetch = rig.prefetch
    return rig, asyncio.create_task(committer.run())


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig, task = make_rig(OneTrip())
    yield rig
    rig.committer.close()
    await asyncio.wait_for(task, 5)


async def test_what_queued_while_a_group_ran_starts_with_its_commit(rig: Rig) -> None:
    rig.submit("a", "b1", "b2")
    await rig.until(lambda: rig.released == ["a", "b1", "b2"])
    rig.submit("c1", "d1")  # c alone: d arrives while it runs
    await rig.until(lambda: rig.released == ["a", "b1", "b2", "c1", "d1"])
    assert rig.store.committed == [["a"], ["b1", "b2"], ["c1"], ["d1"]]
    # a's COMMIT carried b's start, b's none (nothing queued); c's carried d's
    assert rig.store.trips == [True, False, True, False]
    assert rig.store.opened == 2  # a and c: b and d started with a COMMIT
    # each group's prefetch with its own hints (a chained group of one too; a group of
    # one started alone does not need it: its request's lock is its first statement)
    assert rig.prefetched == [["b1", "b2"], ["d1"]]
    assert rig.store.plain_sessions == 0
    assert rig.stats.commits == 4
    assert rig.stats.conflicts == 0


async def test_a_conflict_at_a_commit_reruns_its_group_then_the_next(rig: Rig) -> None:
    """The COMMIT that carried b's start fails: a runs again one request per session, b
    (its start rolled back with a's transaction) is first in the queue again, its hints
    with it, and runs after a."""
    rig.store.commit_errors = [LedgerConflict("a unique violation")]
    rig.submit("a1", "b1", "b2")
    rig.submit("a2")
    await rig.until(lambda: len(rig.released) == 4)
    assert rig.released == ["a1", "a2", "b1", "b2"]
    assert rig.ran == ["a1", "a2", "a1", "a2", "b1", "b2"]
    assert rig.store.committed == [["a1"], ["a2"], ["b1", "b2"]]
    assert rig.store.plain_sessions == 2
    assert rig.prefetched == [["a1", "a2"], ["b1", "b2"], ["b1", "b2"]]
    assert rig.stats.conflicts == 1
    assert rig.committer.failed is None


async def test_an_unknown_commit_outcome_reruns_the_group_on_the_thread(rig: Rig) -> None:
    rig.store.commit_errors = [LedgerUnavailable("connection lost at COMMIT")]
    rig.submit("a1", "b")
    rig.submit("a2")
    await rig.until(lambda: len(rig.released) == 3)
    assert rig.released == ["a1", "a2", "b"]
    assert rig.ran == ["a1", "a2", "a1", "a2", "b"]  # the whole group again, one session
    assert rig.store.committed == [["a1", "a2"], ["b"]]
    assert rig.stats.unavailable == 1
    assert rig.committer.failed is None


async def test_the_next_groups_start_failing_runs_it_one_by_one(rig: Rig) -> None:
    """a's COMMIT succeeded (a is released); b's locks were not granted in time."""
    rig.store.start_errors = [LedgerConflict("lock timeout")]
    rig.submit("a", "b1", "b2")
    await rig.until(lambda: len(rig.released) == 3)
    assert rig.released == ["a", "b1", "b2"]
    assert rig.store.committed == [["a"], ["b1"], ["b2"]]
    assert rig.stats.conflicts == 1
    rig.store.start_errors = [LedgerUnavailable("connection lost")]
    rig.submit("c", "d")
    await rig.until(lambda: len(rig.released) == 5)
    assert rig.released[3:] == ["c", "d"]
    assert rig.store.committed[3:] == [["c"], ["d"]]
    assert rig.stats.unavailable == 1


async def test_a_commit_settled_meanwhile_starts_the_next_group_on_its_own(
        rig: Rig) -> None:
    rig.store.settled = True
    rig.submit("a", "b1", "b2")
    await rig.until(lambda: len(rig.released) == 3)
    assert rig.store.committed == [["a"], ["b1", "b2"]]
    assert rig.store.opened == 2
    assert rig.prefetched == [["b1", "b2"], ["b1", "b2"]]


async def test_a_failure_at_a_commit_is_fatal_for_it_and_the_next_group() -> None:
    rig, task = make_rig(OneTrip())
    rig.store.commit_errors = [OSError("disk full")]
    rig.submit("a", "b")
    await asyncio.wait_for(task, 5)
    assert rig.released == ["a!", "b!"]
    assert isinstance(rig.committer.failed, OSError)


async def test_close_finishes_the_next_group_too() -> None:
    rig, task = make_rig(OneTrip())
    rig.submit("a", "b")
    rig.committer.close()
    await asyncio.wait_for(task, 5)
    assert rig.released == ["a", "b"]


async def test_a_store_with_the_capability_off_uses_plain_sessions() -> None:
    rig, task = make_rig(OneTrip(one_trip=False))
    rig.submit("a", "b")
    await rig.until(lambda: rig.released == ["a", "b"])
    assert rig.store.opened == 0
    assert rig.store.plain_sessions == 2
    rig.committer.close()
    await asyncio.wait_for(task, 5)
