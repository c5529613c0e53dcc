"""The acquirer host's asyncio TCP server: a thin adapter over the sans-I/O host core.

Each connection (an :class:`asyncio.Protocol`, for speed) reassembles frames with
the dialect's :class:`FrameDecoder`, hands every complete payload to the host core
(``handle(payload, now) -> outcome``) at once, in the order received, and writes
the replies back in that order with a 2-byte length prefix: a reply that is
delayed (waiting for its commit, or by a ``delay`` fault) holds back the later
replies of the same connection. A terminal that pipelines more than
``MAX_PIPELINE`` unanswered requests, or stops reading its answers, is paused
until it catches up. The server itself holds no payment rules.

Durability (group commit). The ledger is the source of truth: the host core reads
and writes it inside a store session (one transaction). Every request, from every
connection, is queued FIFO to one committer task; the committer takes everything
queued (the requests that arrived since the last group: one group), and on one
dedicated worker thread opens one session, runs the core on each request of the
group in order, commits (one fsync for the group) and only then releases those
replies. So no reply leaves before what it books is durable, and because *every*
request goes through the same FIFO queue, the stored answer to a duplicate can
never overtake the commit of the original it repeats. When the store reports a
conflict with another process (``LedgerConflict``: a lock not granted in time,
a deadlock, a concurrent duplicate) the whole group is rolled back and run again,
one request per session (no reply has left yet); a card's balance that moved under
the group (``BalanceMoved``) runs it again whole first; when the database is unreachable
(``LedgerUnavailable``) the group is retried for a while. Any other failure stops
the server at once (fatal): a host that cannot book must not approve.

Timeouts: a connection with no partial frame is closed after ``idle_timeout``;
one holding half a frame is closed after ``read_timeout`` of silence. A length
prefix over the dialect's maximum closes that connection (after the replies it is
already owed). A request the core refuses with ``close`` is answered (if it has
an answer) and the connection closed. SIGINT/SIGTERM stop accepting, answer the
requests already received (up to ``shutdown_timeout``), flush the committer and
return.

Faults (:mod:`emulator.host.faults`) are decided in the event loop before the host
core sees the request, so the faults that must not book (close-before, code=XX)
never reach it. What a fault does to an answer (the forced code, a spoiled MAC,
garbling, a corrupted ARPC) lives there with the host too and is computed in the
request's session (it may read the terminal's MAK); the server only delays,
drops, closes or repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast, runtime_checkable

from emulator.host import AcquirerHost, LedgerSession, LedgerStore
from emulator.host.errors import (
    BalanceMoved,
    HostError,
    LedgerBusy,
    LedgerConflict,
    LedgerUnavailable,
)
from emulator.host.faults import (
    NO_FAULT,
    FaultAction,
    FaultKind,
    FaultPlan,
    PayloadDialect,
    corrupt_reply,
    forced_answer,
    request_facts,
)
from iso8583.direction import HOST_TO_TERMINAL, TERMINAL_TO_HOST
from iso8583.errors import Iso8583Error

log = logging.getLogger(__name__)

S = TypeVar("S")  # the store's session type
S_co = TypeVar("S_co", covariant=True)
S_contra = TypeVar("S_contra", contravariant=True)
R = TypeVar("R")

DEFAULT_PORT = 5858


class ServerError(HostError):
    """The host server cannot go on (for example, the ledger refused a commit)."""


class CommitFailedError(ServerError):
    """The ledger commit failed: the server stops rather than answer undurably."""


# --- what the server needs from its collaborators ---------------------------------
class Outcome(Protocol):
    """What the host core returns for one request payload."""

    @property
    def reply(self) -> bytes | None: ...  # payload without the length prefix, or None

    @property
    def close(self) -> bool: ...  # close the connection after the reply

    @property
    def records(self) -> Sequence[object]: ...  # what it wrote in the session (counted)


class RequestHandler(Protocol[S_contra]):
    """The sans-I/O host core: runs one request inside the caller's store session."""

    def handle(self, payload: bytes, now: datetime, session: S_contra) -> Outcome: ...


class Store(Protocol[S_co]):
    """Where the ledger lives; one session is one transaction (commit on a clean exit).

    A store whose sessions may stall for long (and that wants the loop to go on
    reading meanwhile) can set a true ``threaded_sessions`` attribute: the committer
    then runs every group on its thread (see :class:`GroupCommitter`).
    """

    def session(self) -> AbstractContextManager[S_co]: ...


class CommitInFlight(Protocol):
    """A session's COMMIT, sent and not answered yet (see CommitAheadStore)."""

    def fileno(self) -> int: ...  # readable when (part of) the answer arrived

    @property
    def socket_open(self) -> bool: ...  # fileno() is still this connection's open socket

    def poll(self) -> bool: ...  # read what arrived, never blocking: outcome known?

    @property
    def done(self) -> bool: ...  # outcome known (read by poll, or by a wait elsewhere)

    def result(self) -> None: ...  # wait for the outcome; raise the commit's error


@runtime_checkable
class CommitAheadStore(Protocol[S_co]):
    """An optional store capability: a session whose COMMIT is sent but not waited for.

    ``session_ahead(body)`` runs ``body`` in a session, sends its COMMIT and returns
    ``body``'s result with the commit in flight (None: nothing to commit); meanwhile the
    next session may run on another of the store's connections. ``commits_ahead``: how
    many COMMITs may be in flight while a session runs (0: the capability is off). A
    failed commit raises from ``result()`` what a session's own commit would
    (LedgerConflict, LedgerUnavailable), its connection rolled back or replaced.
    The committer uses it when the store has it (see GroupCommitter).
    """

    @property
    def commits_ahead(self) -> int: ...

    def session_ahead(self, body: Callable[[S_co], R]) -> tuple[R, CommitInFlight | None]: ...


class OpenSession(Protocol[S_co]):
    """A session run in steps (see OneTripStore)."""

    def run(self, body: Callable[[S_co], R]) -> R: ...  # its prefetch, then body; not committed

    # COMMIT, with the next session's start (``then``: its prefetch) in the same round trip
    def commit(self, then: Callable[[S_co], None] | None = None) -> OpenSession[S_co] | None: ...


@runtime_checkable
class OneTripStore(Protocol[S_co]):
    """An optional store capability: one round trip a group in steady state.

    ``session_open(prefetch)`` gives a session that runs ``prefetch`` and a body
    (``run``), then waits, uncommitted, for ``commit(then)``: its COMMIT goes out with the
    next session's start (BEGIN and ``then``, the next group's prefetch) in one round trip,
    and the next session is returned, its locks taken after this COMMIT and its rows read
    then (None without ``then``). ``commit`` raises what a session's commit raises
    (LedgerConflict, LedgerUnavailable; the next session is rolled back with it); the next
    session's start failing raises from its ``run``. Between ``run`` and ``commit`` the
    caller may let the event loop run; a session of the store started meanwhile commits
    the open one first (``commit`` then reports that outcome and starts nothing).
    ``one_trip``: whether the store wants it used (False: plain sessions).
    """

    @property
    def one_trip(self) -> bool: ...

    def session_open(self, prefetch: Callable[[S_co], None] | None = None,
                     ) -> OpenSession[S_co]: ...


class Decoder(Protocol):
    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> list[bytes]: ...


#: Where the server records frames: ``(direction, payload)`` (emulator.trace.HostTraceFile).
FrameTrace = Callable[[str, bytes], object]


class ServerDialect(PayloadDialect, Protocol):
    """The dialect operations the server uses (``iso8583.dialects.Dialect`` has them)."""

    def frame_decoder(self) -> Decoder: ...


# --- configuration and counters ---------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    idle_timeout: float = 300.0  # no request at all on a connection
    read_timeout: float = 10.0  # part of a frame received, then silence
    shutdown_timeout: float = 10.0  # time given to in-flight requests on shutdown
    read_size: int = 65536
    # Seconds between "collect, then gc.freeze()" rounds, or None. Freezing the
    # survivors each round keeps CPython's full collections to what is new. (It
    # mattered when the host kept every transaction in memory, a heap that grew
    # without bound; the ledger now holds them, the heap stays small.)
    # Process-wide: only for a process that runs nothing but the host.
    gc_freeze_interval: float | None = None
    # SO_REUSEPORT: several host processes (``serve --workers N``) listen on one
    # port and the kernel spreads the connections over them.
    reuse_port: bool = False


@dataclass
class ServerStats:
    """Counters shown by the admin channel and the benchmark."""

    connections_open: int = 0
    connections_total: int = 0
    requests: int = 0
    replies: int = 0
    framing_errors: int = 0
    timeouts: int = 0
    commits: int = 0  # sessions committed (one per group of requests)
    records_committed: int = 0
    largest_batch: int = 0  # most records one commit wrote
    commit_seconds: float = 0.0  # time spent in group sessions (rules + commit), all groups
    slowest_commit_ms: float = 0.0
    conflicts: int = 0  # group sessions rolled back on a conflict (LedgerConflict)
    reruns_whole: int = 0  # groups run again whole after a card's balance moved
    reruns_one_by_one: int = 0  # groups run again one request per session
    unavailable: int = 0  # groups retried because the ledger could not be reached
    faults: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def frame_reply(reply: bytes, length_bytes: int = 2) -> bytes:
    """A reply payload with its big-endian length prefix (2 bytes in both dialects)."""
    return len(reply).to_bytes(length_bytes, "big") + reply


# --- group commit --------------------------------------------------------------------
#: One request's work in a group: runs in the group's session; the set is shared by the
#: works of one attempt (a connection closed earlier in the group is skipped).
Work = Callable[[S, set[object]], Any]
Released = Callable[[Any, BaseException | None], None]

class _Flight(Generic[S]):
    """A group run with its COMMIT sent ahead (GroupCommitter with a CommitAheadStore)."""

    __slots__ = ("batch", "commit", "fd", "hints", "ran", "results", "since", "started",
                 "stopped")

    def __init__(self, batch: list[tuple[Work[S], Released]], hints: list[object]) -> None:
        self.batch = batch
        self.hints = hints
        self.results: list[Any] | None = None
        self.commit: CommitInFlight | None = None  # None: nothing to wait for
        self.stopped: set[object] = set()  # connections its requests closed
        self.started = time.perf_counter()
        self.since = time.monotonic()
        self.ran = 0.0  # seconds the loop spent running it
        self.fd = -1  # the socket watched for its COMMIT's answer


#: A group taken for its session to start with the previous group's COMMIT: its submissions,
#: hints and that session (None: not started, the COMMIT went alone).
_Next = tuple[list[tuple[Work[S], Released]], list[object], OpenSession[S] | None]

#: Times a group clashing with another process (LedgerConflict) is run again.
MAX_CONFLICTS = 50
#: Requests queued that start a group while a COMMIT is in flight (fewer wait for its answer).
#: Paced at 1,000 TPS, 1 worker, on the 2-core VM (paced2, alternating, load 0.6-2.1), p99
#: in ms: 6: 24.6/48.7/52.1; 12: 35.3/32.3/58.4/31.8/34.4/57.6/38.3/66.9; 20: 30.4/27.6/86.5;
#: never early: 92.7/61.3; commits ahead off: 36.2-101.9 (8 runs, 2 <= 50).
AHEAD_AT = 12
#: Seconds after which the committer looks at the COMMITs in flight again, woken or not (a
#: store session may have read an answer: CommitInFlight.wait).
LOOK_AGAIN = 0.05
#: Seconds between two tries of a group waiting for another process's write lock (at most).
LOCK_WAIT_STEP = 0.01
#: A group waiting for the write lock is logged every this many seconds.
LOCK_WAIT_LOG = 5.0
#: Seconds a group is retried while the ledger cannot be reached (LedgerUnavailable).
UNAVAILABLE_FOR = 30.0


class GroupCommitter(Generic[S]):
    """One task that runs queued work in groups, FIFO, each group in one store session.

    Each submission is a work function and a callback; the committer takes everything
    queued, opens one session, runs each work in order with it, commits, then calls the
    callbacks in submission order with the work's result.

    A group runs on the event loop's own thread. Handing each group to a thread (so the
    loop could read during the session's I/O) cost more than it saved: the two threads
    contend for the GIL on every hand-off. Measured with bench.host_load, closed loop,
    alternated runs: SQLite 981-1,084 -> 1,466-1,487 TPS (host CPU 0.85 -> 0.65 ms a
    transaction), PostgreSQL 1 worker 600-667 -> 871-1,027 TPS (0.96-1.01 -> 0.67-0.74 ms),
    even though the loop now reads nothing while a group runs (a PostgreSQL round trip,
    a COMMIT's fsync): what arrives meanwhile waits in the socket buffers for the next
    group. Only waiting for an unreachable ledger happens on the thread
    (``ledger-commit``), so the loop keeps answering the admin channel and the
    supervisor's heartbeats through an outage; a store with ``threaded_sessions`` has
    every group run there.

    A LedgerConflict rolls the group back and runs it again; after a failure every
    pending and later callback gets the error instead.

    One round trip a group (a store with the OneTripStore capability: PostgreSQL in each
    worker of ``serve --workers N`` with N > 1, or with POS_PG_ONE_TRIP=1 and commits ahead
    off -- see pgledger.commit_modes and PostgresLedgerStore for why). A group
    whose store costs two round trips (its start: BEGIN and the prefetch's locks and rows;
    its end: writes and COMMIT) runs in a session opened in steps (``session_open``): its
    works run, the loop gets two turns (the requests that arrived while the works blocked it
    are read and queued: a task woken by sleep(0) resumes before the loop's reads, hence
    two), and what queued is the next group, whose start goes out behind this group's COMMIT
    in one round trip on the same connection. PostgreSQL runs them in order: the next
    group's locks are taken after this COMMIT released this group's, and it reads what this
    group wrote (a resend finds the stored answer). This group's callbacks are called once
    its COMMIT's result is known; then the next group runs at once, its rows already there.
    Nothing queued: the COMMIT goes alone. A COMMIT that fails takes the next group's start
    with it (same connection: rolled back); the next group has not run, so it goes back to
    the head of the queue with its hints, and this group runs again as any group whose
    commit failed (a conflict: see _again; an unknown outcome: whole, on the
    ``ledger-commit`` thread, where idempotency finds what was booked). A next group whose
    start failed (a lock not granted in time) runs one request per session.

    Commits ahead (a store with the CommitAheadStore capability: PostgreSQL, when its
    commit_ahead is on -- by default in a host that is one process, see
    pgledger.commit_modes and PostgresLedgerStore for why). A group
    there costs two round trips, the second carrying COMMIT and its WAL flush; run on the
    loop's thread, the loop would read nothing and answer nothing while they are in
    flight, and the next group could not start (paced at 1,000 TPS one worker was inside
    a group ~92% of the time, and its tail latency exploded). So the last round trip is
    only sent (``session_ahead``): the committer watches its connection's socket
    (loop.add_reader) and returns to the loop, which reads requests and sends replies
    meanwhile, and the next group (what queued: ``AHEAD_AT`` requests or more, else it
    waits for the answer) starts at once on the store's other connection. At most
    ``commits_ahead`` COMMITs are in flight while a group runs (one, with two
    connections); with every connection carrying one, the committer waits for the
    oldest. Callbacks are called in group order, each only after its own group's COMMIT
    succeeded (no reply before its commit); a group whose COMMIT succeeded while the next
    group runs is released between that group's works (its replies do not wait for the
    whole next group). A group costs fixed CPU (host and PostgreSQL: its two round trips'
    statements), so starting small groups early costs CPU per request: measured paced at
    1,000 TPS on the 2-core VM, with the machine otherwise idle-ish the groups halved in
    size and PostgreSQL's CPU a request rose ~50% (p50 16 -> 10 ms) with ``AHEAD_AT`` 1.
    ``AHEAD_AT`` trades the two: at 12 a group starts early only when a queue grew
    (a hiccup, a burst), which is when waiting a round trip would cost the most.

    Why two groups in flight are safe: they are exactly what two worker processes already
    are (each a connection of its own), and every rule across groups is enforced by the
    database, not by this process: advisory locks on request keys and batches, FOR UPDATE
    on originals, pos_move_balances' check of a card's room (serialization_failure ->
    LedgerConflict); the race and kill tests cover them. A request that depends on
    another's outcome (a refund of a sale, a void, a reversal) is only sent by a terminal
    once it got that answer, which leaves only after its commit. A resend of a request
    whose group is still committing waits on its key's lock in the next group's prefetch,
    then reads the committed row (the stored answer). A connection that a request of an
    earlier, still committing group closed is skipped by the later groups too.

    A commit in flight that fails: LedgerConflict (nothing of the group was kept) -> the
    group's works run again as after a conflict of a group run whole (_again: whole once
    when a card's balance moved, else one request per session), before its callbacks;
    LedgerUnavailable (the connection failed: the COMMIT's outcome is unknown, as when a
    group's own commit fails so) -> the whole group runs again on the ``ledger-commit``
    thread, waiting for the ledger; a request it had booked is then found with its stored
    answer (idempotency), so nothing is booked twice and nothing approved is lost. Both
    only after the groups ahead of it were released.

    A submission may carry a hint (the server's: the request's payload, None for one the
    host core will not see); before a group of two or more runs, ``prefetch(session,
    hints)`` (when set) gets them all (the host takes every request's lock at once:
    AcquirerHost.prefetch).
    """

    def __init__(self, store: Store[S], stats: ServerStats | None = None) -> None:
        self._store = store
        self._stats = stats if stats is not None else ServerStats()
        self._queue: list[tuple[Work[S], Released]] = []
        self._hints: list[object] = []  # one per queued work
        self.prefetch: Callable[[S, list[Any]], None] | None = None
        self._wake = asyncio.Event()
        self._failed: BaseException | None = None
        self._closing = False
        # one thread, for waiting on an unreachable ledger (and threaded_sessions): a
        # session runs on it or on the loop's thread, never two at once, so a store
        # may use one connection from either (no store keeps one per thread)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-commit")
        self.on_failure: Callable[[BaseException], None] | None = None
        self._group_started: float | None = None  # monotonic; None while no group runs
        self._threaded = bool(getattr(store, "threaded_sessions", False))
        # commits ahead (see the class docstring): when the store can, and groups run here
        self._ahead: CommitAheadStore[S] | None = None
        if not self._threaded and isinstance(store, CommitAheadStore) \
                and store.commits_ahead > 0:
            self._ahead = store
        # one round trip a group (see the class docstring): when the store can, not ahead
        self._one_trip: OneTripStore[S] | None = None
        if self._ahead is None and not self._threaded and isinstance(store, OneTripStore) \
                and store.one_trip:
            self._one_trip = store
        # a store that can refuse to wait for another process's write lock (SQLite) is
        # asked to when groups run on the loop: the committer waits, yielding (_lock_wait)
        if not self._threaded and self._ahead is None and hasattr(store, "yield_on_busy"):
            setattr(store, "yield_on_busy", True)  # noqa: B010 -- not in the Store protocol
        self._busy_since: float | None = None  # monotonic: the group waiting for the lock
        self._busy_told = 0.0  # seconds of that wait last logged
        self._flights: deque[_Flight[S]] = deque()  # groups whose COMMIT is in flight
        self._landing = asyncio.Event()  # a COMMIT in flight was answered
        self._watching: dict[int, _Flight[S]] = {}  # socket -> the flight watched on it
        # socket -> the commit it was registered for with the loop: a connection's socket
        # stays registered from flight to flight while it stays open (see _watch)
        self._kept: dict[int, CommitInFlight] = {}
        self._keep = True  # False while a group runs on the ledger-commit thread
        self._loop: asyncio.AbstractEventLoop | None = None  # while run() runs ahead
        self._poke: asyncio.TimerHandle | None = None  # see _run_ahead
        self._idle = False  # _run_ahead waits for an answer or a request, nothing half done

    @property
    def commit_mode(self) -> str:
        """How groups commit, as ``serve`` announces it: "commits ahead", "one round trip a
        group", "group commit" (two round trips on a PostgreSQL store; one session on the
        loop's thread) or "group commit on a thread" (a store with threaded_sessions)."""
        if self._ahead is not None:
            return "commits ahead"
        if self._one_trip is not None:
            return "one round trip a group"
        return "group commit on a thread" if self._threaded else "group commit"

    def session_seconds(self) -> float:
        """How long the group running now has been running (0.0 when idle)."""
        started = self._group_started
        if self._flights:  # a COMMIT in flight counts from its group's start
            first = self._flights[0].since
            started = first if started is None else min(started, first)
        return 0.0 if started is None else time.monotonic() - started

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def submit_nowait(self, work: Work[S], released: Released, hint: object = None) -> None:
        """Queue ``work``; ``released(result, None)`` runs once its group committed."""
        if self._failed is not None:
            released(None, CommitFailedError("ledger commit failed earlier"))
            return
        self._queue.append((work, released))
        self._hints.append(hint)
        # with a COMMIT in flight, fewer than AHEAD_AT queued wait for its answer (which
        # wakes the committer itself): no wake-up, and no committer turn, per request
        if not self._wake.is_set() and (not self._flights or len(self._queue) >= AHEAD_AT):
            self._wake.set()

    async def submit(self, work: Work[S], hint: object = None) -> Any:
        """Queue ``work`` and wait until its group committed (raises CommitFailedError)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def released(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        self.submit_nowait(work, released, hint)
        return await future

    async def run(self) -> None:
        """Run groups until :meth:`close` is called and the queue is empty."""
        loop = asyncio.get_running_loop()
        if self._ahead is not None:
            try:
                await self._run_ahead(loop, self._ahead)
            finally:
                for flight in self._flights:
                    self._unwatch(loop, flight)
                self._flights.clear()
                self._forget(loop)
                if self._poke is not None:
                    self._poke.cancel()
                    self._poke = None
                self._executor.shutdown(wait=False)
            return
        if self._one_trip is not None:
            try:
                await self._run_one_trip(loop, self._one_trip)
            finally:
                self._executor.shutdown(wait=False)
            return
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, self._queue = self._queue, []
                hints, self._hints = self._hints, []
                started = time.perf_counter()
                self._group_started = time.monotonic()
                try:
                    works = [work for work, _ in batch]
                    results = None
                    if not self._threaded:
                        # waiting for an unreachable ledger goes to the thread, not the loop
                        with contextlib.suppress(LedgerUnavailable):
                            results = self._run_group(works, hints, wait=False)
                    if results is None:
                        results = await loop.run_in_executor(self._executor, self._run_group,
                                                             works, hints)
                    self._busy_since = None
                except LedgerBusy:  # nothing of the group ran
                    self._group_started = None
                    await self._lock_wait(batch, hints)
                    continue
                except Exception as exc:
                    self._fail(exc, batch)
                    return
                finally:
                    self._group_started = None
                self._committed(batch, results, time.perf_counter() - started)
                # a turn for the loop's other callbacks, not its reads (a task woken by
                # sleep(0) resumes before them). A group run on the loop took the whole
                # queue, so what arrived meanwhile is read while the committer waits on
                # _wake; a group run on the thread let the loop read as it ran
                await asyncio.sleep(0)
        finally:
            self._executor.shutdown(wait=False)

    def _committed(self, batch: list[tuple[Work[S], Released]], results: list[Any],
                   took: float) -> None:
        """A group committed in ``took`` seconds: count it, then call its callbacks in order."""
        stats = self._stats
        records = sum(len(getattr(r, "records", ())) for r in results)
        stats.commit_seconds += took
        stats.slowest_commit_ms = max(stats.slowest_commit_ms, took * 1000)
        stats.commits += 1
        stats.records_committed += records
        stats.largest_batch = max(stats.largest_batch, records)
        for (_, released), result in zip(batch, results, strict=True):
            released(result, None)

    def _run_group(self, works: list[Work[S]], hints: list[object] | None = None, *,
                   wait: bool = True) -> list[Any]:
        """The group in one session (on the loop's thread, or the committer's).

        After a conflict with another process the group is run again one request per
        session, each retried on its own conflicts: a request then holds only its own
        locks until its commit, so two processes' groups cannot keep deadlocking on
        the same originals (the next group is whole again). ``wait`` False: an unreachable
        ledger on the first attempt raises LedgerUnavailable at once (nothing committed).
        """
        deadline = time.monotonic() + UNAVAILABLE_FOR
        try:
            return self._in_session(works, set(), deadline, wait=wait, hints=hints)
        except LedgerBusy:
            raise  # nothing ran: run() waits for the lock
        except LedgerConflict as conflict:
            return self._again(works, hints, deadline, conflict)

    def _again(self, works: list[Work[S]], hints: list[object] | None, deadline: float,
               conflict: LedgerConflict) -> list[Any]:
        """``works``, whose session ended in ``conflict`` (nothing kept), run again.

        A card's balance that moved under the group (BalanceMoved: another session spent
        on the card first, no lock cycle) runs the group again whole, once: its fresh
        read of the balance decides. One request per session costs a round trip and a
        commit each: with commits ahead on a card at its limit (every approved sale
        needs the room a refund freed), where the group started while the one before
        was committing saw the card before that one's sales, up to a third of the
        host's CPU went to such reruns (bench.host_load, a 100-request group rerun as
        100 sessions). Any other conflict, or a second one, runs it one request per
        session (see _run_group).
        """
        self._stats.conflicts += 1
        if isinstance(conflict, BalanceMoved):
            self._outcomes_known()
            self._stats.reruns_whole += 1
            try:
                return self._in_session(works, set(), deadline, hints=hints)
            except LedgerConflict:
                self._stats.conflicts += 1
        self._stats.reruns_one_by_one += 1
        return self._one_by_one(works, deadline)

    def _outcomes_known(self) -> None:
        """Wait until every COMMIT in flight has its outcome (kept for its own landing).

        Another group of this process committing meanwhile has locked the cards it moved
        and its COMMIT is on its way: a rerun started now would read a card's balance
        before that COMMIT, wait for the card's lock at its own commit and find it moved
        again (1 worker, cards at their limit: ~1 rerun in 6 did, and went one request
        per session; none since). Waiting costs a round trip, once."""
        for flight in tuple(self._flights):  # (a group rerun on the ledger thread, too)
            if flight.commit is not None:
                with contextlib.suppress(Exception):  # raised again when it lands
                    flight.commit.result()

    async def _lock_wait(self, batch: list[tuple[Work[S], Released]],
                         hints: list[object]) -> None:
        """Another process holds the ledger's write lock (LedgerBusy: nothing of the group
        ran). The group goes back to the head of the queue and the committer waits for
        the lock yielding to the loop, which goes on reading requests (they join the
        group: FIFO kept) and answering the supervisor's heartbeats; no session runs
        meanwhile (session_seconds 0: a worker waiting for another is not hung)."""
        self._queue[:0] = batch
        self._hints[:0] = hints
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since, self._busy_told = now, 0.0
        waited = now - self._busy_since
        if waited >= self._busy_told + LOCK_WAIT_LOG:
            self._busy_told = waited
            log.warning("waiting %.0f s for the ledger's write lock (another process "
                        "holds it); %d requests queued", waited, len(self._queue))
        # short steps at first (a group holds the lock for milliseconds), then 10 ms ones
        await asyncio.sleep(min(LOCK_WAIT_STEP, 0.001 + waited / 10))

    def _one_by_one(self, works: list[Work[S]], deadline: float) -> list[Any]:
        """``works`` one per session, each run again on its own conflicts (see _run_group)."""
        stopped: set[object] = set()
        results: list[Any] = []
        for work in works:
            conflicts = 0
            while True:
                try:
                    results.extend(self._in_session([work], stopped, deadline))
                    break
                except LedgerBusy:  # the lock is another's: wait (on this path, blocking)
                    time.sleep(LOCK_WAIT_STEP)
                except LedgerConflict:
                    conflicts += 1
                    self._stats.conflicts += 1
                    if conflicts > MAX_CONFLICTS:
                        raise
                    # back off a little, at random, so two processes do not clash again
                    time.sleep(random.uniform(0, 0.001 * min(conflicts, 20)))
        return results

    def _in_session(self, works: list[Work[S]], stopped: set[object],
                    deadline: float, *, wait: bool = True,
                    hints: list[object] | None = None) -> list[Any]:
        """``works`` in one session, committed; retried while the ledger is unreachable
        (when ``wait``). ``hints``: the works' hints, for ``prefetch`` (a group of 2+)."""
        prefetch = self.prefetch if hints is not None and len(works) > 1 else None
        while True:
            trial = set(stopped)  # what a rolled-back attempt learnt does not count
            try:
                with self._store.session() as session:
                    if prefetch is not None:
                        prefetch(session, cast(list[Any], hints))
                    results = [work(session, trial) for work in works]
            except LedgerUnavailable:
                self._stats.unavailable += 1
                if not wait or time.monotonic() > deadline:
                    raise
                log.warning("ledger unavailable; retrying the group")
                time.sleep(0.2)
                continue
            stopped |= trial
            return results

    # --- one round trip a group (see the class docstring) ----------------------------------
    async def _run_one_trip(self, loop: asyncio.AbstractEventLoop,
                            store: OneTripStore[S]) -> None:
        """:meth:`run` with one round trip a group."""
        carried: _Next[S] | None = None  # the next group, its session started (or not)
        while True:
            opened: OpenSession[S] | None = None
            if carried is not None:
                batch, hints, opened = carried
            elif not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            else:
                batch, self._queue = self._queue, []
                hints, self._hints = self._hints, []
            started = time.perf_counter()
            self._group_started = time.monotonic()
            try:
                results, carried = await self._one_trip_group(loop, store, batch, hints, opened)
            except Exception as exc:  # (a next group taken is queued again first)
                self._fail(exc, batch)
                return
            finally:
                self._group_started = None
            self._committed(batch, results, time.perf_counter() - started)
            if carried is None:
                await asyncio.sleep(0)  # let the loop read what arrived meanwhile

    async def _one_trip_group(self, loop: asyncio.AbstractEventLoop, store: OneTripStore[S],
                              batch: list[tuple[Work[S], Released]], hints: list[object],
                              opened: OpenSession[S] | None,
                              ) -> tuple[list[Any], _Next[S] | None]:
        """One group (``opened``: its session, started with the previous group's COMMIT),
        committed; returns its results and the next group, taken from what queued while
        it ran, its session started in the COMMIT's round trip (or None: nothing queued).

        Failures as in :meth:`_run_group`: a conflict (in the group's start, its works or
        its COMMIT) runs the group again (_again); an unreachable ledger
        (a COMMIT's outcome unknown) runs it again on the ``ledger-commit`` thread. The
        next group has not run then (its start, if sent, is rolled back with the failed
        COMMIT's transaction): it goes back to the head of the queue, its hints with it.
        """
        works = [work for work, _ in batch]
        deadline = time.monotonic() + UNAVAILABLE_FOR
        stopped: set[object] = set()
        try:
            if opened is None:
                opened = store.session_open(self._prefetcher(hints, len(works) > 1))
            results = opened.run(partial(self._works, works, stopped))
        except LedgerConflict as conflict:
            return self._again(works, hints, deadline, conflict), None
        except LedgerUnavailable:  # waited for on the thread, not the loop
            self._stats.unavailable += 1
            return await loop.run_in_executor(self._executor, self._run_group,
                                              works, hints), None
        # the loop was blocked while the works ran: what arrived meanwhile is the next
        # group (two turns: a task woken by sleep(0) resumes before the loop's reads)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        queued, self._queue = self._queue, []
        queued_hints, self._hints = self._hints, []
        try:
            try:
                started = opened.commit(self._prefetcher(queued_hints, True) if queued else None)
            except BaseException:  # the next group did not run: first in the queue again
                self._queue = queued + self._queue
                self._hints = queued_hints + self._hints
                raise
        except LedgerConflict as conflict:
            return self._again(works, hints, deadline, conflict), None
        except LedgerUnavailable:  # the COMMIT's outcome is unknown: the group again
            self._stats.unavailable += 1
            log.warning("ledger unavailable at a commit; running the group again")
            return await loop.run_in_executor(self._executor, self._run_group,
                                              works, hints), None
        return results, ((queued, queued_hints, started) if queued else None)

    def _prefetcher(self, hints: list[object], wanted: bool) -> Callable[[S], None] | None:
        """The group's prefetch with its hints (None: no prefetch, or not ``wanted``)."""
        prefetch = self.prefetch
        if prefetch is None or not wanted:
            return None
        return lambda session: prefetch(session, hints)

    @staticmethod
    def _works(works: list[Work[S]], stopped: set[object], session: S) -> list[Any]:
        return [work(session, stopped) for work in works]

    # --- commits ahead (see the class docstring) -----------------------------------------
    async def _run_ahead(self, loop: asyncio.AbstractEventLoop,
                         store: CommitAheadStore[S]) -> None:
        """:meth:`run` with commits ahead."""
        flights = self._flights
        limit = store.commits_ahead
        wake = self._wake
        self._loop = loop
        while True:
            while flights and self._landed(loop, flights[0]):
                if not await self._land(loop, flights.popleft()):
                    return
            queued = len(self._queue)
            if queued and (not flights or (len(flights) <= limit and queued >= AHEAD_AT)):
                # (no turn of the loop here: what arrives meanwhile is read while the
                # committer waits below, and AHEAD_AT queued wake it)
                if not await self._launch(loop, store):
                    return
                continue
            if not self._queue and not flights and self._closing:
                return
            if not flights:
                wake.clear()
                await wake.wait()
                continue
            # the oldest commit's answer (its reader sets both), or a request that may
            # start a group (no connection free: a request does not wake the committer);
            # looked at again after a while in any case (a store session may have read
            # it): one timer for every wait until it fires, not one a wait
            event = wake if len(flights) <= limit else self._landing
            event.clear()
            if self._poke is None:
                self._poke = loop.call_later(LOOK_AGAIN, self._poked)
            self._idle = True  # a COMMIT answered meanwhile is released by its reader
            try:
                await event.wait()
            finally:
                self._idle = False

    async def _launch(self, loop: asyncio.AbstractEventLoop,
                      store: CommitAheadStore[S]) -> bool:
        """Run what queued as one group and send its COMMIT; False: the committer failed."""
        batch, self._queue = self._queue, []
        hints, self._hints = self._hints, []
        works = [work for work, _ in batch]
        flight: _Flight[S] = _Flight(batch, hints)
        # a connection that a request of a group still committing closed stays closed
        trial: set[object] = set()
        for earlier in self._flights:
            trial |= earlier.stopped
        self._group_started = flight.since
        try:
            try:
                flight.results, flight.commit = store.session_ahead(
                    partial(self._ahead_body, works, hints, trial))
                flight.stopped = trial
            except LedgerConflict as conflict:
                flight.results = self._again(works, hints, time.monotonic() + UNAVAILABLE_FOR,
                                             conflict)
            except LedgerUnavailable:  # waited for on the thread, not the loop
                self._stats.unavailable += 1
                flight.results = await self._on_thread(loop, works, hints)
        except Exception as exc:  # the groups still committing get the error too
            self._fail(exc, self._flown() + flight.batch)
            return False
        finally:
            self._group_started = None
            self._prune(loop)  # the session may have closed (or replaced) a connection
        flight.ran = time.perf_counter() - flight.started
        if flight.commit is not None:  # read by its reader once readable (nothing read it yet)
            self._watch(loop, flight)
        self._flights.append(flight)
        return True

    def _poked(self) -> None:
        """A while passed with COMMITs in flight: the committer looks at them again."""
        self._poke = None
        self._landing.set()
        self._wake.set()

    def _flown(self) -> list[tuple[Work[S], Released]]:
        """The submissions of the groups whose COMMIT is in flight (what they booked, if
        it was kept, is found by a resend), in order; no longer theirs."""
        entries = [entry for flight in self._flights for entry in flight.batch]
        for flight in self._flights:
            flight.batch = []
        return entries

    def _ahead_body(self, works: list[Work[S]], hints: list[object], stopped: set[object],
                    session: S) -> list[Any]:
        """A group's works in its session (CommitAheadStore.session_ahead's body).

        Between works, a group ahead whose COMMIT succeeded meanwhile is released at once
        (its replies leave now, not after this whole group ran)."""
        if self.prefetch is not None and len(works) > 1:
            self.prefetch(session, hints)
        flights = self._flights
        results = []
        for work in works:
            results.append(work(session, stopped))
            if flights:
                self._release_landed()
        return results

    def _release_landed(self) -> None:
        """Release the oldest groups whose COMMIT succeeded, in order (one that failed, or
        is not answered yet, stops it: the committer's loop deals with it)."""
        flights = self._flights
        while flights:
            flight = flights[0]
            commit = flight.commit
            if commit is not None:
                if not commit.poll():
                    return
                try:
                    commit.result()
                except Exception:  # run again (or fatal) by _land, in order
                    return
            assert self._loop is not None
            self._unwatch(self._loop, flights.popleft())
            self._release(flight, 0.0)

    def _watch(self, loop: asyncio.AbstractEventLoop, flight: _Flight[S]) -> None:
        """Read ``flight``'s answer as it arrives, on the loop (_readable); wake the
        committer then.

        A connection's socket stays registered with the loop after its flight landed, for
        the next flight on it (registering and removing a reader cost the loop ~50k
        instructions and two epoll_ctl calls a group: callgrind, add_reader+remove_reader
        per event vs a kept reader). A kept socket is let go as soon as it may have been
        closed (its number could then be another socket's, a terminal's connection
        accepted by the loop: see _prune, _on_thread), or when it turns readable with no
        flight on it (the server's message to an idle connection: libpq reads it at the
        connection's next session; left registered, the loop would be woken for it again
        and again)."""
        commit = flight.commit
        assert commit is not None
        fd = commit.fileno()
        # a socket watched for an earlier flight still (its answer was read by a store
        # session instead: CommitInFlight.wait)
        self._unwatch(loop, self._watching.get(fd))
        kept = self._kept.get(fd)
        if kept is not commit and (kept is None or not kept.socket_open):
            if kept is not None:  # that socket was closed, its number reused: register anew
                loop.remove_reader(fd)
            loop.add_reader(fd, self._readable, fd)
        self._kept[fd] = commit  # (an open kept socket with this number is this one)
        flight.fd = fd
        self._watching[fd] = flight

    def _readable(self, fd: int) -> None:
        """A socket registered by _watch is readable: its flight's answer (part of it)."""
        flight = self._watching.get(fd)
        if flight is None:  # no flight on it: not ours to read now
            self._let_go(self._loop, fd)
            return
        commit = flight.commit
        assert commit is not None
        if commit.poll():
            self._unwatch(self._loop, flight)
            self._landing.set()  # (a committer waiting for a connection: two in flight)
            if self._idle:  # the committer waits: the replies leave from here, now
                self._release_landed()
                self._prune(self._loop)  # (a commit it polled may have failed)
                if not (self._queue or self._flights or self._closing):
                    return  # nothing for the committer (a request wakes it)
            self._wake.set()

    def _unwatch(self, loop: asyncio.AbstractEventLoop | None,
                 flight: _Flight[S] | None) -> None:
        """Stop watching ``flight``; its socket stays registered while kept (see _watch)."""
        if flight is not None and flight.fd >= 0:
            fd = flight.fd
            del self._watching[fd]
            flight.fd = -1
            kept = self._kept.get(fd)
            if not self._keep or kept is None or not kept.socket_open:
                self._let_go(loop, fd)

    def _let_go(self, loop: asyncio.AbstractEventLoop | None, fd: int) -> None:
        """Unregister a socket of _watch (one closed meanwhile too: nothing to undo)."""
        if self._kept.pop(fd, None) is not None and loop is not None:
            loop.remove_reader(fd)

    def _prune(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Let go of every kept socket that was closed (by a store call on the loop's thread
        just now: before the loop runs again, so before it could accept another connection
        under its number). A flight watched on one is no longer watched: its outcome is
        known (the failure that closed its connection; else _landed reads it)."""
        for fd, commit in list(self._kept.items()):
            if not commit.socket_open:
                flight = self._watching.pop(fd, None)
                if flight is not None:
                    flight.fd = -1
                self._let_go(loop, fd)

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let go of every kept socket no flight is watched on."""
        for fd in list(self._kept):
            if fd not in self._watching:
                self._let_go(loop, fd)

    async def _on_thread(self, loop: asyncio.AbstractEventLoop, works: list[Work[S]],
                         hints: list[object]) -> list[Any]:
        """_run_group on the ``ledger-commit`` thread (waiting for an unreachable ledger).
        Its sessions may close connections while the loop runs: no socket is kept
        meanwhile (those with a flight watched are let go once it lands)."""
        self._forget(loop)
        self._keep = False
        try:
            return await loop.run_in_executor(self._executor, self._run_group, works, hints)
        finally:
            self._keep = True
            self._prune(loop)

    def _landed(self, loop: asyncio.AbstractEventLoop, flight: _Flight[S]) -> bool:
        """Whether ``flight``'s COMMIT outcome is known (read what arrived, if any; a
        watched flight's reader reads it, when its socket is readable)."""
        commit = flight.commit
        if commit is None:
            return True
        if not commit.done and (flight.fd >= 0 or not commit.poll()):
            return False
        self._unwatch(loop, flight)  # at once: its socket may be closed already
        return True

    async def _land(self, loop: asyncio.AbstractEventLoop, flight: _Flight[S]) -> bool:
        """``flight``'s outcome known: run it again if its commit failed, then release its
        callbacks in order; False: the committer failed."""
        rerun = time.perf_counter()
        try:
            try:
                if flight.commit is not None:
                    flight.commit.result()
                rerun = 0.0
            except LedgerConflict as conflict:  # nothing of the group was kept
                self._group_started = flight.since
                try:
                    flight.results = self._again([work for work, _ in flight.batch],
                                                 flight.hints,
                                                 time.monotonic() + UNAVAILABLE_FOR, conflict)
                finally:
                    self._group_started = None
            except LedgerUnavailable:  # the COMMIT's outcome is unknown: the group again
                self._stats.unavailable += 1
                log.warning("ledger unavailable at a commit; running the group again")
                flight.results = await self._on_thread(
                    loop, [work for work, _ in flight.batch], flight.hints)
        except Exception as exc:  # and the groups committing after it
            self._fail(exc, flight.batch + self._flown())
            return False
        finally:
            self._prune(loop)  # a rerun may have closed (or replaced) a connection
        self._release(flight, time.perf_counter() - rerun if rerun else 0.0)
        return True

    def _release(self, flight: _Flight[S], rerun: float) -> None:
        """``flight`` committed: count it, then call its callbacks in order."""
        results = flight.results
        assert results is not None
        stats = self._stats
        records = sum(len(getattr(r, "records", ())) for r in results)
        # time the loop spent on the group: running it (and running it again)
        stats.commit_seconds += flight.ran + rerun
        stats.slowest_commit_ms = max(stats.slowest_commit_ms,
                                      (time.perf_counter() - flight.started) * 1000)
        stats.commits += 1
        stats.records_committed += records
        stats.largest_batch = max(stats.largest_batch, records)
        for (_, released), result in zip(flight.batch, results, strict=True):
            released(result, None)

    def _fail(self, exc: Exception, batch: list[tuple[Work[S], Released]]) -> None:
        log.critical("ledger commit failed, the host stops answering: %s", type(exc).__name__)
        self._failed = exc
        error = CommitFailedError(f"ledger commit failed: {exc}")
        pending, self._queue = batch + self._queue, []
        self._hints = []
        if self.on_failure is not None:
            self.on_failure(exc)
        for _, released in pending:
            released(None, error)

    def close(self) -> None:
        """Finish what is queued, then let :meth:`run` return."""
        self._closing = True
        self._wake.set()


# --- the server --------------------------------------------------------------------------
class _Pending:
    """A reply waiting for its commit (and for any fault delay) before it may leave."""

    __slots__ = ("action", "close", "ready", "reply")  # one per request: a plain class

    def __init__(self, action: FaultAction) -> None:
        self.action = action
        self.reply: bytes | None = None  # known once its group committed (spoiled by its fault)
        self.close = False
        self.ready = False


class _Done(NamedTuple):
    """What one request's work in a group gave: the reply to send and what it wrote."""

    reply: bytes | None
    close: bool
    records: Sequence[object]


class _HostConnection(asyncio.BufferedProtocol):
    """One terminal connection: frames in, ordered replies out (see HostServer).

    A buffered protocol: the transport reads into the server's one read buffer
    (get_buffer) and what arrived is copied out of it at once (buffer_updated). A plain
    Protocol is handed ``recv(256 KiB)``'s result: a new allocation that size per read,
    which cost ~20 us a read here, more than the read itself.
    """

    def __init__(self, server: HostServer[Any]) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.decoder = server.dialect.frame_decoder()
        self.pending: deque[_Pending] = deque()
        self.closing = False  # no more requests are read; close once pending is empty
        self.refused = False  # the core answered with close: nothing later is handled
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # loop time the timeout in force runs out (the timer may be later)
        self.idle_timeout = server.config.idle_timeout
        self.read_timeout = server.config.read_timeout
        self.paused = False  # the terminal does not read its answers (pause_writing)
        self.throttled = False  # reading paused: more than MAX_PIPELINE replies owed
        self.closed = asyncio.Event()

    @property
    def reading(self) -> bool:
        """Whether requests are still taken from this connection."""
        return not self.closing and self.transport is not None

    # transport callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's are not asyncio.Transport subclasses)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        server = self.server
        if server._stopping:
            transport.abort()
            return
        server._connections.add(self)
        server.stats.connections_open += 1
        server.stats.connections_total += 1
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self in self.server._connections:
            self.server._connections.discard(self)
            self.server.stats.connections_open -= 1
        self.transport = None
        self.pending.clear()
        self.closed.set()

    def pause_writing(self) -> None:
        # the terminal does not read its answers: stop reading its requests too
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        # one buffer for every connection of the server: the transport reads into it and
        # calls buffer_updated at once, which copies what arrived out before any other read
        return self.server._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.server._read_buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        """Bytes that arrived on the connection (buffer_updated; tests call it directly)."""
        if self.closing or self.transport is None:
            return
        try:
            payloads = self.decoder.feed(data)
        except Iso8583Error as exc:
            self.server.stats.framing_errors += 1
            log.info("closing a connection: %s", exc)
            self.close_after_replies()
            return
        accept = self.server._accept
        for payload in payloads:
            accept(self, payload)
            if not self.reading:
                return
        if len(self.pending) > MAX_PIPELINE:
            self.throttled = True
            self.transport.pause_reading()  # resumed when the replies drain
        self._arm()

    # timeouts ----------------------------------------------------------------------------
    def _arm(self) -> None:
        """Move the deadline; the timer is replaced only when the deadline moves earlier.

        A later deadline (every request) is left to the timer already set, which sets
        itself again for the rest when it fires: no timer churn per request.
        """
        delay = self.read_timeout if self.decoder.buffered else self.idle_timeout
        self.deadline = self.loop.time() + delay
        timer = self.timer
        if timer is not None:
            if timer.when() <= self.deadline:
                return
            timer.cancel()
        self.timer = self.loop.call_at(self.deadline, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        if self.loop.time() < self.deadline:  # data came since: the rest of the new timeout
            self.timer = self.loop.call_at(self.deadline, self._timed_out)
            return
        if self.pending:  # still answering: the terminal is waiting on us, not idle
            self._arm()
            return
        self.server.stats.timeouts += 1
        self.transport.close()

    # replies -------------------------------------------------------------------------------
    def enqueue(self, entry: _Pending) -> None:
        self.pending.append(entry)

    def committed(self, entry: _Pending, done: _Done | None,
                  error: BaseException | None) -> None:
        if error is not None:
            self.abort()
            return
        if done is not None:
            entry.reply = done.reply
            if done.close:
                entry.close = self.refused = True
                self.close_after_replies()
        action = entry.action
        if action is not NO_FAULT and action.kind is FaultKind.DELAY and action.delay_ms:
            self.loop.call_later(action.delay_ms / 1000, self._ready, entry)
            return
        entry.ready = True
        self.flush()

    def _ready(self, entry: _Pending) -> None:
        entry.ready = True
        self.flush()

    def flush(self) -> None:
        """Send every reply at the head of the queue that may leave, in order."""
        pending = self.pending
        while pending and pending[0].ready:
            entry = pending.popleft()
            if self.transport is None:
                return
            if not self._send(entry):
                self.transport.close()
                return
        if not pending:
            if self.closing and self.transport is not None:
                self.transport.close()
            elif self.throttled and self.transport is not None and not self.paused:
                self.throttled = False
                self.transport.resume_reading()

    def _send(self, entry: _Pending) -> bool:
        """Write one reply as its fault says; False when the connection must close."""
        assert self.transport is not None
        reply = entry.reply
        if reply is None:
            return not entry.close
        server = self.server
        if entry.action is NO_FAULT and server.trace is None:  # the usual reply
            self.transport.write(frame_reply(reply, server.length_bytes))
            server.stats.replies += 1
            return not entry.close
        kind = entry.action.kind
        if kind is FaultKind.DROP:
            return True
        if kind is FaultKind.CLOSE_AFTER:
            return False
        if self.server.trace is not None:
            for _ in range(2 if kind is FaultKind.TWICE else 1):
                self.server.trace(HOST_TO_TERMINAL, reply)
        framed = frame_reply(reply, self.server.length_bytes)
        self.transport.write(framed + framed if kind is FaultKind.TWICE else framed)
        self.server.stats.replies += 1
        return not entry.close

    def close_after_replies(self) -> None:
        """Read nothing more; close once the replies already owed have left."""
        self.closing = True
        if self.transport is None:
            return
        self.transport.pause_reading()
        if not self.pending:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()


MAX_PIPELINE = 64  # replies owed on one connection before its reading pauses
READ_BUFFER = 65_536  # bytes a connection reads at once (into the server's one buffer)


class HostServer(Generic[S]):
    """Serves one host core over TCP.

    Per connection, requests are handed to the core in arrival order the moment
    they are complete, and their replies leave in the same order, each after its
    records are durable (see the module docstring).
    """

    def __init__(
        self,
        handler: RequestHandler[S],
        store: Store[S],
        dialect: ServerDialect,
        *,
        config: ServerConfig | None = None,
        faults: FaultPlan | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = datetime.now,
        refuse: Callable[[bytes, str, datetime, S], Outcome] | None = None,
        spoil: Callable[[FaultAction, bytes, S], bytes] | None = None,
        trace: FrameTrace | None = None,
    ) -> None:
        self.handler = handler
        self.trace = trace  # records every request taken and every reply written
        self._refuse_with = refuse
        # what a fault does to a reply on its way out (emulator.host.faults.corrupt_reply)
        self.spoil = spoil or (lambda action, reply, _: corrupt_reply(dialect, action, reply))
        self.dialect = dialect
        # the reply prefix follows the dialect's framing (its spec says how long)
        self.length_bytes = int(getattr(getattr(dialect, "spec", None), "length_bytes", 2))
        self.config = config or ServerConfig()
        self.faults = faults if faults is not None else FaultPlan()
        self.stats = ServerStats()
        self._rng = rng or random.Random()
        self._clock = clock
        self._committer: GroupCommitter[S] = GroupCommitter(store, self.stats)
        self._committer.on_failure = self._on_commit_failure
        # the host takes a group's locks at once before its requests run (a store's
        # round trip for the group instead of one per request), when it can
        self._committer.prefetch = getattr(handler, "prefetch", None)
        self._committer_task: asyncio.Task[None] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_HostConnection] = set()
        self._read_buffer = memoryview(bytearray(READ_BUFFER))  # see _HostConnection
        self._stopping = False  # no new connections or requests
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.address: tuple[str, int] | None = None

    @property
    def fatal(self) -> BaseException | None:
        """The commit failure that stopped the server, if any."""
        return self._committer.failed

    @property
    def commit_mode(self) -> str:
        """How the ledger's groups commit (GroupCommitter.commit_mode)."""
        return self._committer.commit_mode

    def session_seconds(self) -> float:
        """How long the ledger session running now has been running (0.0: idle)."""
        return self._committer.session_seconds()

    # lifecycle -----------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Bind and listen; returns the (host, port) actually bound."""
        loop = asyncio.get_running_loop()
        if self._committer_task is None:
            self._committer_task = loop.create_task(self._committer.run(),
                                                    name="ledger-committer")
        if self.config.gc_freeze_interval and self._gc_task is None:
            gc.collect()
            gc.freeze()
            self._gc_task = loop.create_task(self._gc_rounds(self.config.gc_freeze_interval),
                                             name="gc-freeze")
        self._server = await loop.create_server(
            lambda: _HostConnection(self), self.config.host, self.config.port,
            reuse_address=True, reuse_port=self.config.reuse_port or None, backlog=1024)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("acquirer host listening on %s:%d", *self.address)
        return self.address

    @staticmethod
    async def _gc_rounds(interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            gc.collect()  # garbage first, so nothing dead is frozen
            gc.freeze()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGINT and SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        """Ask :meth:`serve_until_stopped` to shut down (safe from a signal handler)."""
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._shutdown())

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, answer requests already read, flush, close."""
        self.request_stop()
        await self._stopped.wait()

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close_after_replies()
        waits = [asyncio.ensure_future(c.closed.wait()) for c in connections]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.config.shutdown_timeout)
            for wait in late:
                wait.cancel()
            for conn in connections:
                if not conn.closed.is_set():
                    conn.abort()
        if self._gc_task is not None:
            self._gc_task.cancel()
        self._committer.close()
        if self._committer_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer_task
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    def _on_commit_failure(self, exc: BaseException) -> None:
        # fatal: no more answers; drop every connection now
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.abort()
        self.request_stop()

    # requests ----------------------------------------------------------------------------
    def _accept(self, conn: _HostConnection, payload: bytes) -> None:
        """Hand one complete request to the core and queue its reply behind its commit."""
        self.stats.requests += 1
        if self.trace is not None:
            self.trace(TERMINAL_TO_HOST, payload)
        action: FaultAction = NO_FAULT
        if self.faults:
            facts = request_facts(self.dialect, payload)
            if facts is not None:
                action = self.faults.decide(facts, self._rng)
            if action.kind is not FaultKind.NONE:
                name = action.kind.value
                self.stats.faults[name] = self.stats.faults.get(name, 0) + 1
        if action.kind is FaultKind.CLOSE_BEFORE:
            conn.abort()
            return
        if action.kind is FaultKind.CODE and self._refuse_with is None:
            raise ServerError("this server was built without a way to force a response code")
        entry = _Pending(action)
        conn.enqueue(entry)
        now = self._clock()

        def work(session: S, stopped: set[object]) -> _Done | None:
            """In the group's session (on the loop's thread, or the committer's)."""
            if conn.refused or conn in stopped:
                return None  # an earlier request of this connection closed it
            if action.kind is FaultKind.CODE:
                assert self._refuse_with is not None
                outcome = self._refuse_with(payload, action.code or "96", now, session)
            else:
                outcome = self.handler.handle(payload, now, session)
            if outcome.close:
                stopped.add(conn)
            reply = outcome.reply
            if reply is not None and action.kind is not FaultKind.NONE:
                reply = self.spoil(action, reply, session)
            return _Done(reply, outcome.close, outcome.records)

        self._committer.submit_nowait(
            work, partial(conn.committed, entry),
            payload if action.kind is not FaultKind.CODE else None)  # prefetch's hint


# --- wiring for the real host core ------------------------------------------------------
def acquirer_server(host: AcquirerHost, store: LedgerStore | None = None, *,
                    config: ServerConfig | None = None, faults: FaultPlan | None = None,
                    rng: random.Random | None = None,
                    clock: Callable[[], datetime] = datetime.now,
                    trace: FrameTrace | None = None) -> HostServer[LedgerSession]:
    """A server for the real host core on its ledger store (``store``: the host's own)."""
    return HostServer(host, store if store is not None else host.store, host.dialect,
                      config=config, faults=faults, rng=rng, clock=clock,
                      refuse=lambda p, c, n, s: forced_answer(host, p, c, n, session=s),
                      spoil=lambda a, r, s: corrupt_reply(host.dialect, a, r, host=host,
                                                          session=s),
                      trace=trace)
