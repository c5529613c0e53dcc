"""The group committer with a store whose COMMIT may be in flight while the next group
runs (emulator.server.CommitAheadStore): callbacks in group order, each only after its
own commit succeeded; a commit that failed runs its group again before it is released;
close() waits for what is in flight. A fake store: each commit is answered by the test
(a byte on a socket pair, as a database connection's answer arrives)."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from emulator import server
from emulator.host.errors import BalanceMoved, LedgerConflict, LedgerUnavailable
from emulator.server import CommitAheadStore, GroupCommitter, ServerStats


class Readers:
    """The sockets the running loop was asked to watch (add_reader) and not yet to stop
    watching (remove_reader), whichever loop runs (asyncio's or uvloop: emulator.loop)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        add_reader, remove_reader = loop.add_reader, loop.remove_reader
        self.added: list[int] = []  # every add_reader, in order
        self.now: set[int] = set()

        def add(fd: int, callback: Callable[..., object], *args: Any) -> None:
            self.added.append(fd)
            self.now.add(fd)
            add_reader(fd, callback, *args)

        def remove(fd: int) -> bool:
            self.now.discard(fd)
            return remove_reader(fd)

        monkeypatch.setattr(loop, "add_reader", add)
        monkeypatch.setattr(loop, "remove_reader", remove)


@dataclass
class Session:
    records: list[str] = field(default_factory=list)


class FakeCommit:
    """A session's COMMIT in flight: answered by :meth:`answer` (ok, or an error)."""

    def __init__(self, store: AheadStore, records: list[str]) -> None:
        self.store = store
        self.records = records
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self.error: BaseException | None = None
        self.done = False

    def answer(self, error: BaseException | None = None) -> None:
        self.error = error
        self._write.send(b"x")

    def fileno(self) -> int:
        return self._read.fileno()

    @property
    def socket_open(self) -> bool:
        return self._read.fileno() >= 0

    def poll(self) -> bool:
        if not self.done:
            try:
                self.done = bool(self._read.recv(1))
            except BlockingIOError:
                return False
            self.store.landed(self)
        return True

    def result(self) -> None:
        while not self.poll():
            select.select([self._read], [], [])
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._read.close()
        self._write.close()


class AheadStore:
    """Sessions whose COMMIT the test answers; plain sessions (the committer's reruns)
    commit at once. ``committed``: each session's records, in commit order."""

    def __init__(self, commits_ahead: int = 1) -> None:
        self.commits_ahead = commits_ahead
        self.in_flight: list[FakeCommit] = []
        self.commits: list[FakeCommit] = []
        self.committed: list[list[str]] = []
        self.most_in_flight = 0  # COMMITs in flight when a session started, at most
        self.plain_sessions = 0
        self.plain_errors: list[BaseException] = []  # the next plain sessions' commits fail
        self.in_flight_at_plain: list[int] = []  # COMMITs in flight as each plain one began

    def session_ahead(self, body: Callable[[Session], Any]) -> tuple[Any, FakeCommit | None]:
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        assert len(self.in_flight) <= self.commits_ahead  # a connection is free
        session = Session()
        result = body(session)
        if not session.records:
            return result, None
        commit = FakeCommit(self, session.records)
        self.in_flight.append(commit)
        self.commits.append(commit)
        return result, commit

    def landed(self, commit: FakeCommit) -> None:
        self.in_flight.remove(commit)
        if commit.error is None:
            self.committed.append(commit.records)

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.plain_sessions += 1
        self.in_flight_at_plain.append(len(self.in_flight))
        session = Session()
        yield session
        if self.plain_errors:  # its commit failed: nothing kept
            raise self.plain_errors.pop(0)
        self.committed.append(session.records)

    def close(self) -> None:
        for commit in self.commits:
            commit.close()


@pytest.fixture(autouse=True)
def ahead_at_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests queue a request or two at a time: any queued request may start a group
    while a COMMIT is in flight (the threshold's own test sets its own)."""
    monkeypatch.setattr(server, "AHEAD_AT", 1)


def test_the_fake_store_has_the_capability() -> None:
    assert isinstance(AheadStore(), CommitAheadStore)


@dataclass
class Rig:
    committer: GroupCommitter[Session]
    store: AheadStore
    stats: ServerStats
    released: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def submit(self, name: str) -> None:
        def work(session: Session, stopped: set[object]) -> str:
            self.ran.append(name)
            session.records.append(name)
            return name

        def released(result: Any, error: BaseException | None) -> None:
            self.released.append(f"{result}" if error is None else f"{name}!")

        self.committer.submit_nowait(work, released, name)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.001)

    async def a_and_b_in_flight(self) -> tuple[FakeCommit, FakeCommit]:
        """Groups "a" and "b" sent, one after the other, both COMMITs in flight."""
        self.submit("a")
        await self.until(lambda: len(self.store.in_flight) == 1)
        self.submit("b")
        await self.until(lambda: len(self.store.in_flight) == 2)
        first, second = self.store.in_flight
        return first, second

    async def settle(self) -> None:
        """Give the committer a few turns of the loop."""
        for _ in range(20):
            await asyncio.sleep(0)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store, stats = AheadStore(), ServerStats()
    committer: GroupCommitter[Session] = GroupCommitter(store, stats)
    task = asyncio.create_task(committer.run())
    yield Rig(committer, store, stats)
    committer.close()
    for commit in list(store.in_flight):
        commit.answer()
    await asyncio.wait_for(task, 5)
    store.close()


async def test_no_release_before_its_commit_and_the_next_group_runs_meanwhile(
        rig: Rig) -> None:
    rig.submit("a1")
    rig.submit("a2")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.submit("b1")
    await rig.until(lambda: len(rig.store.in_flight) == 2)  # b ran: a still in flight
    await rig.settle()
    assert rig.ran == ["a1", "a2", "b1"]
    assert rig.released == []
    first, second = rig.store.in_flight
    assert first.records == ["a1", "a2"]
    assert second.records == ["b1"]
    first.answer()
    await rig.until(lambda: rig.released == ["a1", "a2"])
    second.answer()
    await rig.until(lambda: rig.released == ["a1", "a2", "b1"])
    assert rig.stats.commits == 2
    assert rig.stats.records_committed == 0


async def test_callbacks_are_released_in_group_order(rig: Rig) -> None:
    first, second = await rig.a_and_b_in_flight()
    second.answer()  # the later group's answer first
    await rig.settle()
    assert rig.released == []  # b waits for a
    first.answer()
    await rig.until(lambda: rig.released == ["a", "b"])


async def test_answers_read_together_release_in_order_and_a_later_request_starts_a_group(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # the reader releases what landed while the committer waits, and wakes it only when
    # there is something for it: nothing may hang on the look-again timer (made endless)
    monkeypatch.setattr(server, "LOOK_AGAIN", 3600.0)
    first, second = await rig.a_and_b_in_flight()
    second.answer()
    first.answer()  # both answered before the loop reads either
    await rig.until(lambda: rig.released == ["a", "b"])
    rig.submit("c")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.store.in_flight[0].answer()
    await rig.until(lambda: rig.released == ["a", "b", "c"])
    rig.submit("d")
    await rig.until(lambda: rig.ran == ["a", "b", "c", "d"])


async def test_with_every_connection_carrying_a_commit_the_next_group_waits(
        rig: Rig) -> None:
    rig.submit("a")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.submit("b")
    await rig.until(lambda: len(rig.store.in_flight) == 2)
    rig.submit("c")
    await rig.settle()
    assert rig.ran == ["a", "b"]  # c waits for a connection
    rig.store.in_flight[0].answer()
    await rig.until(lambda: rig.ran == ["a", "b", "c"])
    assert rig.released == ["a"]
    assert rig.store.most_in_flight == 1
    for commit in list(rig.store.in_flight):
        commit.answer()
    await rig.until(lambda: rig.released == ["a", "b", "c"])


@pytest.mark.parametrize(("clash", "sessions", "committed", "reruns"), [
    # a lock or a duplicate: a's works again one per session, after b had run
    (LedgerConflict("a lock not granted"), 2, [["b"], ["a1"], ["a2"]], (0, 1)),
    # a card's balance moved: a's works again in one session, not one each
    (BalanceMoved("a card's balance moved"), 1, [["b"], ["a1", "a2"]], (1, 0)),
])
async def test_a_conflict_in_a_commit_in_flight_reruns_its_group_in_order(
        rig: Rig, clash: LedgerConflict, sessions: int, committed: list[list[str]],
        reruns: tuple[int, int]) -> None:
    rig.submit("a1")
    rig.submit("a2")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.submit("b")
    await rig.until(lambda: len(rig.store.in_flight) == 2)
    first, second = rig.store.in_flight
    second.answer()
    first.answer(clash)
    await rig.until(lambda: len(rig.released) == 3)
    assert rig.released == ["a1", "a2", "b"]
    assert rig.ran == ["a1", "a2", "b", "a1", "a2"]
    assert rig.store.plain_sessions == sessions
    assert rig.store.committed == committed
    assert rig.stats.conflicts == 1
    assert (rig.stats.reruns_whole, rig.stats.reruns_one_by_one) == reruns


async def test_a_balance_moved_reruns_once_the_later_commits_outcome_is_known(
        rig: Rig) -> None:
    """b committing while a's balance conflict comes back: a's rerun waits for b's outcome
    (b holds the card's lock: a rerun reading the balance before b's COMMIT would clash
    again), and b is still released after a."""
    import threading
    rig.submit("a")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.submit("b")
    await rig.until(lambda: len(rig.store.in_flight) == 2)
    first, second = rig.store.in_flight
    later = threading.Timer(0.1, second.answer)  # the loop waits for it meanwhile
    later.start()
    first.answer(BalanceMoved("a card's balance moved"))
    await rig.until(lambda: len(rig.released) == 2)
    later.join()
    assert rig.released == ["a", "b"]
    assert rig.store.in_flight_at_plain == [0]  # b's outcome known before a ran again
    assert rig.store.committed == [["b"], ["a"]]
    assert rig.stats.conflicts == 1


async def test_a_balance_moved_again_under_the_whole_rerun_goes_one_by_one(rig: Rig) -> None:
    rig.store.plain_errors.append(BalanceMoved("moved again"))
    rig.submit("a1")
    rig.submit("a2")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.store.in_flight[0].answer(BalanceMoved("a card's balance moved"))
    await rig.until(lambda: len(rig.released) == 2)
    assert rig.released == ["a1", "a2"]
    assert rig.ran == ["a1", "a2"] * 3  # in flight, whole again, then one per session
    assert rig.store.plain_sessions == 3
    assert rig.store.committed == [["a1"], ["a2"]]
    assert rig.stats.conflicts == 2
    assert (rig.stats.reruns_whole, rig.stats.reruns_one_by_one) == (1, 1)


async def test_an_unreachable_ledger_at_a_commit_reruns_the_group_on_the_thread(
        rig: Rig) -> None:
    rig.submit("a1")
    rig.submit("a2")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.store.in_flight[0].answer(LedgerUnavailable("connection lost at COMMIT"))
    await rig.until(lambda: rig.released == ["a1", "a2"])
    assert rig.ran == ["a1", "a2", "a1", "a2"]  # the whole group again, in one session
    assert rig.store.committed == [["a1", "a2"]]
    assert rig.stats.unavailable == 1
    assert rig.committer.failed is None


async def two_commits_in_flight() -> tuple[Rig, asyncio.Task[None]]:
    """A committer (not the fixture's: these tests end it themselves) with groups "a" and
    "b" sent, both COMMITs in flight, and its running task."""
    store, stats = AheadStore(), ServerStats()
    committer: GroupCommitter[Session] = GroupCommitter(store, stats)
    rig = Rig(committer, store, stats)
    task = asyncio.create_task(committer.run())
    await rig.a_and_b_in_flight()
    return rig, task


async def test_a_failure_at_a_commit_is_fatal_for_it_and_the_groups_after() -> None:
    rig, task = await two_commits_in_flight()
    store, committer = rig.store, rig.committer
    store.in_flight[0].answer(OSError("disk full"))
    await asyncio.wait_for(task, 5)
    assert rig.released == ["a!", "b!"]
    assert isinstance(committer.failed, OSError)
    for commit in list(store.in_flight):
        commit.answer()
    store.close()


async def test_close_waits_for_the_commits_in_flight() -> None:
    rig, task = await two_commits_in_flight()
    store, committer = rig.store, rig.committer
    committer.close()
    await rig.settle()
    assert not task.done()
    assert committer.session_seconds() > 0.0  # a commit in flight counts
    first, second = store.in_flight
    first.answer()
    await rig.settle()
    assert not task.done()
    second.answer()
    await asyncio.wait_for(task, 5)
    assert rig.released == ["a", "b"]
    assert committer.session_seconds() == 0.0
    store.close()


async def test_a_store_with_the_capability_off_commits_each_group_at_once() -> None:
    store = AheadStore(commits_ahead=0)
    committer: GroupCommitter[Session] = GroupCommitter(store, ServerStats())
    rig = Rig(committer, store, ServerStats())
    task = asyncio.create_task(committer.run())
    rig.submit("a")
    await rig.until(lambda: rig.released == ["a"])
    assert store.commits == []
    assert store.plain_sessions == 1
    committer.close()
    await asyncio.wait_for(task, 5)


async def test_a_group_ahead_is_released_between_the_works_of_the_group_running(
        rig: Rig) -> None:
    """Its replies leave as soon as its COMMIT succeeded, not after the whole next group."""
    log: list[str] = []
    rig.submit("a")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    ahead = rig.store.in_flight[0]

    def work(name: str, answer: bool) -> Callable[[Session, set[object]], str]:
        def run(session: Session, stopped: set[object]) -> str:
            log.append(f"ran {name} after {rig.released}")
            if answer:  # the answer to a's COMMIT arrives while b runs
                ahead.answer()
            session.records.append(name)
            return name
        return run

    def released(result: Any, error: BaseException | None) -> None:
        log.append(f"released {result}")

    rig.released.clear()
    rig.committer.submit_nowait(work("b1", True), released, "b1")
    rig.committer.submit_nowait(work("b2", False), released, "b2")
    await rig.until(lambda: len(rig.store.in_flight) == 1 and rig.store.in_flight[0] is not ahead)
    assert log == ["ran b1 after []", "ran b2 after ['a']"]  # a left between them
    rig.store.in_flight[0].answer()
    await rig.until(lambda: log[-1] == "released b2")
    assert log[2:] == ["released b1", "released b2"]


async def test_fewer_than_ahead_at_queued_wait_for_the_commit_in_flight(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "AHEAD_AT", 3)
    rig.submit("a")
    await rig.until(lambda: len(rig.store.in_flight) == 1)
    rig.submit("b1")
    rig.submit("b2")
    await rig.settle()
    assert rig.ran == ["a"]  # two queued: they wait for a's answer
    rig.submit("b3")
    await rig.until(lambda: rig.ran == ["a", "b1", "b2", "b3"])  # three: at once
    rig.submit("c")
    rig.store.in_flight[0].answer()
    await rig.until(lambda: rig.released == ["a"])
    await rig.settle()
    assert rig.ran[-1] == "b3"  # one queued, b in flight: c waits for b's answer
    rig.store.in_flight[0].answer()
    await rig.until(lambda: rig.ran[-1] == "c")
    rig.store.in_flight[0].answer()
    await rig.until(lambda: rig.released == ["a", "b1", "b2", "b3", "c"])


class SocketCommit(FakeCommit):
    """A COMMIT answered on its connection's socket (shared by that connection's commits,
    as a database connection's are)."""

    def __init__(self, store: AheadStore, records: list[str],
                 pair: tuple[socket.socket, socket.socket]) -> None:
        self.store = store
        self.records = records
        self._read, self._write = pair
        self.error = None
        self.done = False

    def close(self) -> None:
        pass  # the connection's (closed by the test)


class OneSocketStore(AheadStore):
    """Every COMMIT on one connection's socket, replaced by :meth:`reconnect`."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = self._pair()

    @staticmethod
    def _pair() -> tuple[socket.socket, socket.socket]:
        read, write = socket.socketpair()
        read.setblocking(False)
        return read, write

    def reconnect(self) -> None:
        for sock in self.pair:
            sock.close()
        self.pair = self._pair()

    def session_ahead(self, body: Callable[[Session], Any]) -> tuple[Any, FakeCommit | None]:
        session = Session()
        result = body(session)
        commit = SocketCommit(self, session.records, self.pair)
        self.in_flight.append(commit)
        self.commits.append(commit)
        return result, commit

    def close(self) -> None:
        for sock in self.pair:
            sock.close()


async def test_a_connections_socket_stays_registered_while_it_is_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One reader for a connection's commits, not one a commit; registered anew once the
    socket was replaced (its number perhaps reused), and let go when it turns readable
    with no commit on it."""
    readers = Readers(monkeypatch)
    registered = readers.added
    store = OneSocketStore()
    committer: GroupCommitter[Session] = GroupCommitter(store, ServerStats())
    task = asyncio.create_task(committer.run())
    rig = Rig(committer, store, ServerStats())
    try:
        for name in ("a", "b", "c"):
            rig.submit(name)
            await rig.until(lambda: len(store.in_flight) == 1)
            store.in_flight[0].answer()
            await rig.until(lambda n=name: rig.released[-1:] == [n])  # type: ignore[misc]
        assert registered == [store.pair[0].fileno()]  # once, for three commits
        store.reconnect()  # the old socket closed: a new one, maybe under the same number
        rig.submit("d")
        await rig.until(lambda: len(store.in_flight) == 1)
        store.in_flight[0].answer()
        await rig.until(lambda: rig.released[-1:] == ["d"])
        assert len(registered) == 2
        fd = store.pair[0].fileno()
        store.pair[1].send(b"?")  # the server's message to an idle connection
        await rig.until(lambda: fd not in readers.now)
        store.pair[0].recv(1)
        rig.submit("e")
        await rig.until(lambda: len(store.in_flight) == 1)
        store.in_flight[0].answer()
        await rig.until(lambda: rig.released[-1:] == ["e"])
        assert registered[2:] == [fd]
    finally:
        committer.close()
        await asyncio.wait_for(task, 5)
        store.close()
    assert rig.released == ["a", "b", "c", "d", "e"]


async def test_a_connection_closed_by_its_failed_commit_is_let_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A COMMIT whose connection failed (closed, the outcome unknown): its group runs again
    on the thread and is released; the closed socket is no longer registered, and the
    next commit's (new) socket is read."""
    readers = Readers(monkeypatch)
    store = OneSocketStore()
    committer: GroupCommitter[Session] = GroupCommitter(store, ServerStats())
    task = asyncio.create_task(committer.run())
    rig = Rig(committer, store, ServerStats())
    try:
        rig.submit("a")
        await rig.until(lambda: len(store.in_flight) == 1)
        commit = store.in_flight[0]
        old = store.pair[0].fileno()
        real_poll = commit.poll

        def failing_poll() -> bool:
            done = real_poll()
            if done and commit.error is not None:
                store.reconnect()  # as libpq closes a connection that failed
            return done

        commit.poll = failing_poll  # type: ignore[method-assign]
        commit.answer(LedgerUnavailable("gone"))
        await rig.until(lambda: rig.released == ["a"])
        assert store.plain_sessions == 1  # run again, whole
        assert old not in readers.now or old == store.pair[0].fileno()
        rig.submit("b")
        await rig.until(lambda: len(store.in_flight) == 1)
        store.in_flight[0].answer()
        await rig.until(lambda: rig.released == ["a", "b"])
    finally:
        committer.close()
        await asyncio.wait_for(task, 5)
        store.close()
