"""The acquirer host's asyncio TCP server: a thin adapter over the sans-I/O host core.

Each connection reassembles frames with the dialect's :class:`FrameDecoder`, hands
every payload to the host core (``handle(payload, now) -> outcome``) in the order
received, and writes the replies back in that order with a 2-byte length prefix.
The server itself holds no payment rules.

Durability (group commit). The host core decides synchronously in the event loop
and returns the ledger records a request books. Every outcome, from every
connection, is queued FIFO to one committer task; the committer takes everything
queued, writes all of its records in one ``store.commit(batch)`` call in a worker
thread, and only then releases those replies. So no reply leaves before its
records are durable, and because *every* outcome goes through the same FIFO queue
(even ones that book nothing), the stored answer to a duplicate can never overtake
the commit of the original it repeats. A batch that books nothing skips the
commit call. If a commit fails, the server stops answering at once (fatal): a
host that cannot book must not approve.

Timeouts: a connection with no partial frame is closed after ``idle_timeout``;
one holding half a frame is closed after ``read_timeout`` of silence. A length
prefix over the dialect's maximum closes that connection. SIGINT/SIGTERM stop
accepting, let requests already received finish (up to ``shutdown_timeout``),
flush the committer and return.

Faults (:mod:`emulator.faults`) are decided before the host core sees the
request, so the faults that must not book (close-before, code=XX) never reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from emulator.faults import NO_FAULT, FaultAction, FaultKind, FaultPlan, RequestFacts
from emulator.host import AcquirerHost, HostOutcome, LedgerRecord, LedgerStore, security
from iso8583.errors import Iso8583Error

log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
R_contra = TypeVar("R_contra", contravariant=True)

DEFAULT_PORT = 5858


class ServerError(Exception):
    """The host server cannot go on (for example, the ledger refused a commit)."""


class CommitFailedError(ServerError):
    """The ledger commit failed: the server stops rather than answer undurably."""


# --- what the server needs from its collaborators ---------------------------------
class Outcome(Protocol[R_co]):
    """What the host core returns for one request payload."""

    @property
    def reply(self) -> bytes | None: ...  # payload without the length prefix, or None

    @property
    def close(self) -> bool: ...  # close the connection after the reply

    @property
    def records(self) -> Sequence[R_co]: ...  # ledger records to make durable first


class RequestHandler(Protocol[R_co]):
    """The sans-I/O host core."""

    def handle(self, payload: bytes, now: datetime) -> Outcome[R_co]: ...


class Store(Protocol[R_contra]):
    """Where booked records go; one call is one transaction."""

    def commit(self, records: Sequence[R_contra]) -> None: ...


class Decoder(Protocol):
    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> list[bytes]: ...


class _MessageLike(Protocol):
    @property
    def mti(self) -> str: ...

    @property
    def amount(self) -> int | None: ...

    def get(self, number: int) -> str | bytes | None: ...

    def __contains__(self, key: object) -> bool: ...


class _FrameLike(Protocol):
    @property
    def message(self) -> _MessageLike: ...


class ServerDialect(Protocol):
    """The dialect operations the server uses (``iso8583.dialects.Dialect`` has them)."""

    def frame_decoder(self) -> Decoder: ...

    def unpack_payload(self, payload: bytes) -> _FrameLike: ...


# --- configuration and counters ---------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    idle_timeout: float = 300.0  # no request at all on a connection
    read_timeout: float = 10.0  # part of a frame received, then silence
    shutdown_timeout: float = 10.0  # time given to in-flight requests on shutdown
    read_size: int = 65536


@dataclass
class ServerStats:
    """Counters shown by the admin channel and the benchmark."""

    connections_open: int = 0
    connections_total: int = 0
    requests: int = 0
    replies: int = 0
    framing_errors: int = 0
    timeouts: int = 0
    commits: int = 0
    records_committed: int = 0
    largest_batch: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def frame_reply(reply: bytes) -> bytes:
    """A reply payload with its 2-byte big-endian length prefix."""
    return len(reply).to_bytes(2, "big") + reply


def request_facts(dialect: ServerDialect, payload: bytes) -> RequestFacts | None:
    """MTI, PAN and amount of a request, for fault selection (None if undecodable)."""
    try:
        message = dialect.unpack_payload(payload).message
    except Iso8583Error:
        return None
    pan = message.get(2)
    if not isinstance(pan, str):
        track2 = message.get(35)
        pan = track2.split("D")[0].split("=")[0] if isinstance(track2, str) else None
    return RequestFacts(message.mti, pan, message.amount)


def bad_mac(dialect: ServerDialect, reply: bytes) -> bytes:
    """``reply`` with the last character of its MAC changed (unchanged if it has none)."""
    try:
        has_mac = 64 in dialect.unpack_payload(reply).message
    except Iso8583Error:
        has_mac = False
    if not has_mac or not reply:
        return reply
    # keep it a hex character so only the MAC check, not the decoder, fails
    last = b"1" if reply[-1:] == b"0" else b"0"
    return reply[:-1] + last


def garble(reply: bytes) -> bytes:
    """Every byte inverted: same length (the stream stays framed), nothing decodes."""
    return bytes(b ^ 0xFF for b in reply)


# --- group commit --------------------------------------------------------------------
class GroupCommitter(Generic[R]):
    """One task that makes queued records durable in batches, FIFO.

    ``submit`` returns once the records submitted with it (and everything
    submitted before) are committed; it raises :class:`CommitFailedError` after a
    failed commit, for that batch and every later one.
    """

    def __init__(self, store: Store[R], stats: ServerStats | None = None) -> None:
        self._store = store
        self._stats = stats if stats is not None else ServerStats()
        self._queue: list[tuple[Sequence[R], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._failed: BaseException | None = None
        self._closing = False
        # one dedicated thread: commits never overlap and a store that keeps a
        # connection per thread sees only one
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-commit")
        self.on_failure: Callable[[BaseException], None] | None = None

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    async def submit(self, records: Sequence[R]) -> None:
        if self._failed is not None:
            raise CommitFailedError("ledger commit failed earlier") from self._failed
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, future))
        self._wake.set()
        await future

    async def run(self) -> None:
        """Commit batches until :meth:`close` is called and the queue is empty."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, self._queue = self._queue, []
                records = [r for recs, _ in batch for r in recs]
                if records:
                    try:
                        await loop.run_in_executor(self._executor, self._store.commit, records)
                    except Exception as exc:
                        self._fail(exc, batch)
                        return
                    self._stats.commits += 1
                    self._stats.records_committed += len(records)
                    self._stats.largest_batch = max(self._stats.largest_batch, len(records))
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._executor.shutdown(wait=False)

    def _fail(self, exc: Exception, batch: list[tuple[Sequence[R], asyncio.Future[None]]]) -> None:
        log.critical("ledger commit failed, the host stops answering: %s", type(exc).__name__)
        self._failed = exc
        error = CommitFailedError(f"ledger commit failed: {exc}")
        for _, future in batch + self._queue:
            if not future.done():
                future.set_exception(error)
        self._queue = []
        if self.on_failure is not None:
            self.on_failure(exc)

    def close(self) -> None:
        """Finish what is queued, then let :meth:`run` return."""
        self._closing = True
        self._wake.set()


# --- the server --------------------------------------------------------------------------
@dataclass
class _Connection:
    task: asyncio.Task[None]
    reading: bool = True  # waiting for bytes (safe to cancel on shutdown)


class HostServer(Generic[R]):
    """Serves one host core over TCP (or over any reader/writer pair, for tests)."""

    def __init__(
        self,
        handler: RequestHandler[R],
        store: Store[R],
        dialect: ServerDialect,
        *,
        config: ServerConfig | None = None,
        faults: FaultPlan | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = datetime.now,
        refuse: Callable[[bytes, str, datetime], Outcome[R]] | None = None,
    ) -> None:
        self.handler = handler
        self._refuse_with = refuse
        self.dialect = dialect
        self.config = config or ServerConfig()
        self.faults = faults if faults is not None else FaultPlan()
        self.stats = ServerStats()
        self._rng = rng or random.Random()
        self._clock = clock
        self._committer: GroupCommitter[R] = GroupCommitter(store, self.stats)
        self._committer.on_failure = self._on_commit_failure
        self._committer_task: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._stopping = False  # no new requests are read
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.address: tuple[str, int] | None = None

    @property
    def fatal(self) -> BaseException | None:
        """The commit failure that stopped the server, if any."""
        return self._committer.failed

    # lifecycle -----------------------------------------------------------------------
    def _ensure_committer(self) -> None:
        if self._committer_task is None:
            self._committer_task = asyncio.get_running_loop().create_task(
                self._committer.run(), name="ledger-committer")

    async def start(self) -> tuple[str, int]:
        """Bind and listen; returns the (host, port) actually bound."""
        self._ensure_committer()
        self._server = await asyncio.start_server(
            self.handle_connection, self.config.host, self.config.port,
            reuse_address=True, limit=self.config.read_size)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("acquirer host listening on %s:%d", *self.address)
        return self.address

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
        """Graceful shutdown: stop accepting, finish requests already read, flush."""
        self.request_stop()
        await self._stopped.wait()

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            if conn.reading:
                conn.task.cancel()
        pending = [c.task for c in self._connections.values()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        self._committer.close()
        if self._committer_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer_task
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    def _on_commit_failure(self, exc: BaseException) -> None:
        # fatal: no more answers; close every connection now
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            conn.task.cancel()
        self.request_stop()

    # connections ---------------------------------------------------------------------
    async def handle_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        """Serve one terminal connection until it closes, times out or misbehaves."""
        task = asyncio.current_task()
        assert task is not None
        self._ensure_committer()
        if self._stopping:
            writer.close()
            return
        conn = _Connection(task)
        self._connections[task] = conn
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, CommitFailedError, asyncio.CancelledError):
            pass
        finally:
            self._connections.pop(task, None)
            self.stats.connections_open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        decoder = self.dialect.frame_decoder()
        while not self._stopping:
            timeout = self.config.read_timeout if decoder.buffered else self.config.idle_timeout
            conn.reading = True
            try:
                chunk = await asyncio.wait_for(reader.read(self.config.read_size), timeout)
            except TimeoutError:
                self.stats.timeouts += 1
                return
            finally:
                conn.reading = False
            if not chunk:
                return
            try:
                payloads = decoder.feed(chunk)
            except Iso8583Error as exc:
                self.stats.framing_errors += 1
                log.info("closing a connection: %s", exc)
                return
            for payload in payloads:
                if not await self._process(payload, writer):
                    return

    async def _process(self, payload: bytes, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; False when the connection must close."""
        self.stats.requests += 1
        action: FaultAction = NO_FAULT
        if self.faults:
            facts = request_facts(self.dialect, payload)
            if facts is not None:
                action = self.faults.decide(facts, self._rng)
            if action.kind is not FaultKind.NONE:
                name = action.kind.value
                self.stats.faults[name] = self.stats.faults.get(name, 0) + 1
        if action.kind is FaultKind.CLOSE_BEFORE:
            return False
        if action.kind is FaultKind.CODE:
            outcome = self._refuse(payload, action.code or "96")
        else:
            outcome = self.handler.handle(payload, self._clock())
        await self._committer.submit(outcome.records)
        reply = outcome.reply
        if reply is None:
            return not outcome.close
        kind = action.kind
        if kind is FaultKind.DELAY:
            await asyncio.sleep(action.delay_ms / 1000)
        elif kind is FaultKind.DROP:
            return True
        elif kind is FaultKind.CLOSE_AFTER:
            return False
        elif kind is FaultKind.BAD_MAC:
            reply = bad_mac(self.dialect, reply)
        elif kind is FaultKind.GARBLE:
            reply = garble(reply)
        framed = frame_reply(reply)
        writer.write(framed + framed if kind is FaultKind.TWICE else framed)
        await writer.drain()
        self.stats.replies += 1
        return not outcome.close

    def _refuse(self, payload: bytes, code: str) -> Outcome[R]:
        """The answer with a forced response code, booking nothing."""
        if self._refuse_with is None:
            raise ServerError("this server was built without a way to force a response code")
        return self._refuse_with(payload, code, self._clock())


# --- wiring for the real host core ------------------------------------------------------
def forced_answer(host: AcquirerHost, payload: bytes, code: str, now: datetime) -> HostOutcome:
    """The ``code=XX`` fault: answer ``payload`` with F39 = ``code``, booking nothing.

    The answer echoes the request's identifying fields, as the host's own refusals
    do, and is MACed with the terminal's current MAK when it has one (F39 is set
    before MACing, so the terminal sees a genuine-looking decline).
    """
    dialect = host.dialect
    try:
        frame = dialect.unpack_payload(payload)
        request = frame.message
        if not request.is_request:
            return HostOutcome(None, close=True)
        answer = dialect.message(request.response_mti)
        for number in (2, 3, 4, 11, 12, 13, 25, 37, 41, 42, 49, 60, 70):
            value = request.get(number)
            if value is not None and number in dialect.fields:
                answer[number] = value
        answer[39] = code
        row = next((t for t in host.terminals() if t.tid == request.tid), None)
        if row is not None and row.signed_on and row.mak and request.mti not in ("0800", "0820"):
            security.apply_mac(dialect, bytes.fromhex(row.mak), answer)
        tpdu = dialect.reply_tpdu(frame.tpdu) if frame.tpdu is not None else None
        reply = dialect.payload(answer, tpdu=tpdu, header=frame.header)
    except Iso8583Error:
        return HostOutcome(None, close=True)
    return HostOutcome(reply, False, (), request, answer, request.pan, None)


def acquirer_server(host: AcquirerHost, store: LedgerStore, *,
                    config: ServerConfig | None = None, faults: FaultPlan | None = None,
                    rng: random.Random | None = None,
                    clock: Callable[[], datetime] = datetime.now) -> HostServer[LedgerRecord]:
    """A server for the real host core and ledger store."""
    return HostServer(host, store, host.dialect, config=config, faults=faults, rng=rng,
                      clock=clock, refuse=lambda p, c, n: forced_answer(host, p, c, n))
