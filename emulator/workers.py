"""``pos-emulator serve --workers N``: N acquirer host processes on one port, one supervisor.

The supervisor (the ``serve`` process) starts N worker processes. Each worker is
a whole host: its own ledger connection (opened in the worker, never shared
across processes), its own :class:`~emulator.server.HostServer` bound to the
same address with ``SO_REUSEPORT``, so the kernel spreads the terminals'
connections over the workers. The ledger is what they share: this needs a store
whose rules hold across processes (PostgreSQL; SQLite when the store says it
is multi-process safe). A memory ledger lives in one process and is refused.

The supervisor owns the admin channel (:mod:`emulator.admin`) and relays every
request to every worker: ``faults add|clear`` arm or disarm on all of them,
``faults list`` and ``stats`` sum their counters (``stats`` also lists each
worker). It restarts a worker that dies (logged, with a growing pause when a
worker dies young), re-arming the faults in force, and on SIGINT/SIGTERM stops
the workers gracefully (each answers what it has read) and exits 0.

Watchdog: every second the supervisor asks each worker for its counters. A
worker that has not answered for ``--worker-timeout`` seconds (its event loop is
stuck, in a ledger session or elsewhere, or the process is stopped) or whose
ledger session has been waiting for an unreachable ledger for longer than the
commit path's own retry window plus that timeout is hung: it is killed with
SIGKILL and restarted like a dead one. A worker waiting for another process's
SQLite write lock is neither: it waits yielding to its event loop (no session
runs meanwhile; see GroupCommitter) and answers the heartbeats as it waits. What
it had read and not answered is lost
exactly as in a crash: terminals resend or reverse, and the ledger keeps every
approval it answered. The counters each
worker last reported are kept when it dies, so the host's totals (``stats``,
the line printed at exit) count the requests of the workers that were replaced,
up to their last heartbeat.

Relay: one Unix socketpair per worker, JSON lines both ways. It is the simplest
channel that a child inherits by file descriptor (``pass_fds``) with no port or
path to name, closes by itself when either side dies (the worker stops when the
supervisor is gone; the supervisor sees a dead worker), and carries the worker's
configuration as its first line (so no database URL shows in ``ps``). Lines::

    supervisor -> worker   {"config": {...}}                       first line only
                           {"id": 7, "cmd": "add"|"clear"|"list"|"stats", ...}
                           {"id": 9, "cmd": "ping"}    answered with the counters and
                                                       "session_s" (the ledger session
                                                       running now, seconds; 0 when idle)
                           {"id": 8, "cmd": "set", "specs": [...], "spent": [[i, rule]]}
                                                       replace the faults
                           {"id": 10, "cmd": "disarm", "rule": i, "spec": rule}
                                                       a ``once`` rule fired elsewhere
    worker -> supervisor   {"event": "listening", "address": [host, port], "pid": P,
                            "loop": "uvloop"|"asyncio",    (emulator.loop)
                            "commits": "commits ahead"|...}  (GroupCommitter.commit_mode)
                           {"event": "failed", "error": "..."}    could not start
                           {"event": "stopped", "stats": {...}}   last counters
                           {"event": "fired", "rule": i, "spec": rule}  a ``once`` rule
                           {"id": 7, ...answer...}                as emulator.admin answers

Workers run as ``python -m emulator.workers FD`` in a process group of their
own, so a Ctrl-C at the terminal reaches the supervisor only, which forwards
SIGTERM. A ``once`` fault rule is armed in every worker. Before a worker fires it,
it claims it: it creates a file named for the rule (its index and text) in a
directory the supervisor made for this host, with O_CREAT|O_EXCL, which the kernel
grants to one process only -- so two workers that match it in the same millisecond
do not both fire it. The winner then tells the supervisor, which disarms the rule in
the others (and in any worker it starts later) so they stop asking; ``faults clear``
empties the directory with the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.startup import freeze_startup, gc_paused

with gc_paused():  # a worker's start-up: see emulator.startup
    from emulator.admin import AdminAddress, AdminServer, admin_dispatch
    from emulator.host.errors import HostError
    from emulator.host.faults import FaultPlan, FaultSpecError, parse_spec
    from emulator.host.ledger import MEMORY_LEDGERS, SqliteLedgerStore, is_postgres_url, open_store
    from emulator.loop import LoopChoiceError, loop_name
    from emulator.loop import run as run_host
    from emulator.server import UNAVAILABLE_FOR, ServerConfig

if TYPE_CHECKING:  # imported where used: only with --trace
    from emulator.trace import HostTraceFile

log = logging.getLogger(__name__)

#: seconds a worker has to open its ledger and listen
START_TIMEOUT = 60.0
#: seconds the supervisor waits for a worker's answer on the relay
RELAY_TIMEOUT = 5.0
#: pause before restarting a worker that died young, doubling up to the maximum
RESTART_PAUSE = (0.2, 5.0)
#: a worker that lived this long restarts without a pause
HEALTHY_AFTER = 10.0
#: seconds between the supervisor's heartbeats to each worker
HEARTBEAT = 1.0
#: seconds without an answer after which a worker is hung (``serve --worker-timeout``)
WORKER_TIMEOUT = 10.0
#: counters where the host's figure is the largest worker's, not the sum
_MAX_COUNTERS = frozenset({"largest_batch", "slowest_commit_ms"})


class WorkerError(HostError):
    """The workers cannot be started or refused a request."""


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker runs: the ledger it opens, the dialect, the server and its faults."""

    ledger: str  # a SQLite file path or a postgresql:// URL
    dialect: str = "cup"
    server: ServerConfig = field(default_factory=ServerConfig)
    faults: tuple[str, ...] = ()
    fault_seed: int | None = None
    verbose: bool = False
    trace: str | None = None  # the ISO trace file every worker appends to (serve --trace)

    def to_json(self) -> dict[str, object]:
        return {"ledger": self.ledger, "dialect": self.dialect, "server": asdict(self.server),
                "faults": list(self.faults), "fault_seed": self.fault_seed,
                "verbose": self.verbose, "trace": self.trace}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerSpec:
        return cls(ledger=str(data["ledger"]), dialect=str(data["dialect"]),
                   server=ServerConfig(**data["server"]), faults=tuple(data["faults"]),
                   fault_seed=data["fault_seed"], verbose=bool(data["verbose"]),
                   trace=data.get("trace"))


# --- what --workers accepts ----------------------------------------------------------
def workers_refusal(ledger: str, workers: int) -> str | None:
    """Why ``--workers`` cannot run with ``ledger``, or None when it can.

    Several workers need a store whose rules hold across processes: the store
    class says so (``multi_process``): PostgreSQL, and SQLite (its write lock
    serializes the processes); a memory ledger lives in one process.
    """
    if workers < 1:
        return f"--workers must be at least 1, got {workers}"
    if workers == 1 or is_postgres_url(ledger):
        return None
    if ledger.strip().lower() in MEMORY_LEDGERS:
        return (f"--workers {workers} needs a ledger the workers share (postgresql://... "
                "or a SQLite file): a memory ledger lives in one process")
    if not getattr(SqliteLedgerStore, "multi_process", False):
        return (f"--workers {workers} needs --ledger postgresql://...: this SQLite ledger "
                "keeps the host's rules in one process (run one worker, or use PostgreSQL)")
    return None


# --- merging the workers' answers (sans-I/O) -------------------------------------------
def merge_stats(stats: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """The host's counters: each worker's summed (largest batch and slowest commit: the max)."""
    total: dict[str, object] = {}
    for one in stats:
        for name, value in one.items():
            old = total.get(name)
            if isinstance(value, dict):
                merged = dict(old) if isinstance(old, dict) else {}
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
                total[name] = merged
            elif isinstance(value, bool) or not isinstance(value, int | float):
                total.setdefault(name, value)
            elif old is None:
                total[name] = value
            elif isinstance(old, int | float) and name in _MAX_COUNTERS:
                total[name] = max(old, value)
            elif isinstance(old, int | float):
                total[name] = old + value
    return total


def merge_faults(lists: Sequence[object]) -> list[dict[str, object]]:
    """One fault list: the rules as the first worker lists them, ``fired`` summed over all,
    ``armed`` while any worker still has the rule armed."""
    rules: list[dict[str, object]] = []
    for listed in lists:
        if not isinstance(listed, list):
            continue
        for i, rule in enumerate(listed):
            if not isinstance(rule, dict):
                continue
            if i == len(rules):
                rules.append({"spec": rule.get("spec"), "fired": 0, "armed": False})
            if i < len(rules) and rules[i]["spec"] == rule.get("spec"):
                fired = rule.get("fired")
                rules[i]["fired"] = int(str(rules[i]["fired"])) + (
                    fired if isinstance(fired, int) else 0)
                rules[i]["armed"] = bool(rules[i]["armed"]) or bool(rule.get("armed"))
    return rules


# --- the supervisor ---------------------------------------------------------------------
@dataclass(eq=False)
class _Slot:
    """One worker place: the process in it now, its relay, and how often it was restarted."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    restarts: int = 0
    started_at: float = 0.0
    specs_sent: tuple[str, ...] = ()
    last_stats: dict[str, object] | None = None  # the process's counters as last reported
    last_seen: float = 0.0  # monotonic time of the process's last answer
    next_id: int = 0
    answers: dict[int, asyncio.Future[dict[str, object]]] = field(default_factory=dict)
    listening: asyncio.Future[tuple[str, int]] | None = None
    loop: str = ""  # the event loop the process serves on, as it said when listening
    commits: str = ""  # how its groups commit, as it said when listening


class Supervisor:
    """Starts, watches, relays to and stops the worker processes (see the module docstring)."""

    def __init__(self, spec: WorkerSpec, workers: int, *,
                 python: Sequence[str] = (sys.executable,),
                 worker_timeout: float = WORKER_TIMEOUT) -> None:
        if workers < 1:
            raise WorkerError(f"--workers must be at least 1, got {workers}")
        if worker_timeout <= 0:
            raise WorkerError(f"--worker-timeout must be positive, got {worker_timeout:g}")
        self.worker_timeout = worker_timeout
        #: the last counters of worker processes that died or were killed (still counted)
        self.retired: list[dict[str, object]] = []
        self.spec = spec
        self.specs: list[str] = list(spec.faults)  # the faults in force, as added
        #: ``once`` rules some worker fired: (index in the plan, the rule's text)
        self.spent: dict[int, str] = {}
        #: where workers claim a ``once`` rule before firing it (see claim_once); made
        #: by start, removed when the workers stop
        self.claims: Path | None = None
        self.python = tuple(python)
        self.slots = [_Slot(i) for i in range(workers)]
        self.address: tuple[str, int] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._readers: set[asyncio.Task[None]] = set()
        self.exit_code = 0

    # lifecycle -------------------------------------------------------------------------
    async def start(self, prepare: Callable[[], None] | None = None) -> tuple[str, int]:
        """Start every worker and wait until all listen; returns the (host, port) they share.

        ``prepare`` (blocking; serve's ledger check and demo terminal) runs after the
        worker processes started and before they get their configuration: they load
        their modules meanwhile, and none opens the ledger or listens before it
        returned. Raises :class:`WorkerError` (with the worker's own message, such as
        the ledger that cannot be opened) or what ``prepare`` raised (a HostError),
        and stops the others when one cannot start.
        """
        host = self.spec.server.host
        port = _free_port(host, self.spec.server.port)
        server = ServerConfig(**{**asdict(self.spec.server), "port": port, "reuse_port": True})
        self.spec = replace(self.spec, server=server)
        import tempfile  # the supervisor's only: not loaded by serve's workers

        self.claims = Path(tempfile.mkdtemp(prefix="pos-emulator-once-"))
        try:
            for slot in self.slots:
                await self._spawn(slot, configure=False)
            if prepare is not None:
                prepare()
            for slot in self.slots:
                self._configure(slot)
            for slot in self.slots:
                self.address = await self._wait_listening(slot)
        except HostError:
            await self._stop_all()
            for slot in self.slots:  # "stopped before it listened": no one waits for it now
                if slot.listening is not None and slot.listening.done() \
                        and not slot.listening.cancelled():
                    slot.listening.exception()
            # every worker is stopped: wait() returns (request_stop finds nothing to stop;
            # a caller's request_stop() and wait() after a failed start hung for good)
            self._stopped.set()
            raise
        loop = asyncio.get_running_loop()
        self._watchers = [loop.create_task(self._watch(slot), name=f"worker-{slot.index}")
                          for slot in self.slots]
        self._watchers += [loop.create_task(self._heartbeat(slot), name=f"heart-{slot.index}")
                           for slot in self.slots]
        assert self.address is not None
        return self.address

    def loops(self) -> str:
        """The event loop the workers serve on (``uvloop``; names joined if they differ)."""
        return ", ".join(sorted({slot.loop for slot in self.slots})) or "unknown"

    def commit_modes(self) -> str:
        """How the workers' groups commit (GroupCommitter.commit_mode; joined if they
        differ)."""
        return ", ".join(sorted({slot.commits for slot in self.slots if slot.commits})) \
            or "unknown"

    def stopping(self) -> bool:
        """Whether the host is shutting down (a dead worker is then not restarted)."""
        return self._stopping

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        """Stop every worker gracefully (safe from a signal handler)."""
        if not self._stopping:
            self._stopping = True
            asyncio.get_running_loop().create_task(self._shutdown())

    async def wait(self) -> int:
        """Until the workers are stopped; 0 when each stopped cleanly, else 1."""
        await self._stopped.wait()
        return self.exit_code

    def final_stats(self) -> dict[str, object]:
        """The counters the workers reported as they stopped, summed with the replaced ones'."""
        return merge_stats([*self.retired,
                            *(s.last_stats for s in self.slots if s.last_stats is not None)])

    async def _shutdown(self) -> None:
        for task in self._watchers:
            task.cancel()
        await self._stop_all()
        self._stopped.set()

    async def _stop_all(self) -> None:
        self._stopping = True
        live = [s for s in self.slots if s.proc is not None and s.proc.returncode is None]
        for slot in live:
            assert slot.proc is not None
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)
        grace = self.spec.server.shutdown_timeout + 5
        for slot in live:
            assert slot.proc is not None
            try:
                code = await asyncio.wait_for(slot.proc.wait(), grace)
            except TimeoutError:
                log.error("worker %d (pid %d) did not stop in %.0f s; killing it",
                          slot.index, slot.proc.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
                code = await slot.proc.wait()
            # killed by our SIGTERM before it could catch it: it was still starting
            if code not in (0, -signal.SIGTERM):
                log.error("worker %d (pid %d) %s", slot.index, slot.proc.pid, _exit_text(code))
                self.exit_code = 1
        if self._readers:  # their last lines (the final counters)
            await asyncio.wait(list(self._readers), timeout=2)
        for slot in self.slots:
            if slot.writer is not None:
                slot.writer.close()
                slot.writer = None
        if self.claims is not None:
            import shutil  # the supervisor's only: not loaded by serve's workers

            shutil.rmtree(self.claims, ignore_errors=True)

    def _clear_claims(self) -> None:
        """Forget which ``once`` rules were claimed (the plan they indexed is gone)."""
        for claim in self.claims.glob("*") if self.claims is not None else ():
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()

    # one worker ------------------------------------------------------------------------
    async def _spawn(self, slot: _Slot, *, configure: bool = True) -> None:
        """Start a worker process in ``slot`` and its relay; ``configure``: send its
        configuration now (else :meth:`_configure` later: it waits for it, modules loaded)."""
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        slot.listening = loop.create_future()
        slot.ready = False
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *self.python, "-m", "emulator.workers", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                process_group=0)
        except OSError as exc:
            ours.close()
            raise WorkerError(f"cannot start a worker process: {exc.strerror}") from None
        finally:
            theirs.close()
        slot.started_at = time.monotonic()
        slot.last_seen = slot.started_at
        slot.last_stats = None
        reader, slot.writer = await asyncio.open_unix_connection(sock=ours)
        task = loop.create_task(self._read(slot, reader, slot.listening))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        if configure:
            self._configure(slot)

    def _configure(self, slot: _Slot) -> None:
        """Send the worker in ``slot`` its configuration (the relay's first line)."""
        assert slot.writer is not None
        config = {**self.spec.to_json(), "faults": list(self.specs), "index": slot.index,
                  "workers": len(self.slots),
                  "spent": sorted(self.spent.items()),
                  "claims": None if self.claims is None else str(self.claims)}
        slot.specs_sent = tuple(self.specs)
        slot.writer.write(json.dumps({"config": config}).encode() + b"\n")

    async def _wait_listening(self, slot: _Slot) -> tuple[str, int]:
        assert slot.listening is not None
        try:
            address = await asyncio.wait_for(asyncio.shield(slot.listening), START_TIMEOUT)
        except TimeoutError:
            raise WorkerError(f"worker {slot.index} did not start listening in "
                              f"{START_TIMEOUT:.0f} s") from None
        if tuple(self.specs) != slot.specs_sent:  # faults changed while it started
            await self._ask(slot, {"cmd": "set", "specs": list(self.specs),
                                   "spent": sorted(self.spent.items())})
        slot.last_seen = time.monotonic()
        slot.ready = True
        return address

    async def _read(self, slot: _Slot, reader: asyncio.StreamReader,
                    listening: asyncio.Future[tuple[str, int]]) -> None:
        """Route a worker's lines: events, and answers to the relay's questions."""
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    log.error("worker %d sent a line that is not JSON", slot.index)
                    continue
                if not isinstance(message, dict):
                    continue
                event = message.get("event")
                if event == "listening" and not listening.done():
                    host, port = message["address"]
                    slot.loop = str(message.get("loop", ""))
                    slot.commits = str(message.get("commits", ""))
                    listening.set_result((str(host), int(port)))
                elif event == "failed" and not listening.done():
                    listening.set_exception(WorkerError(str(message.get("error"))))
                elif event == "fired":
                    self._fired_once(slot, message.get("rule"), message.get("spec"))
                elif event == "stopped":
                    stats = message.get("stats")
                    slot.last_stats = stats if isinstance(stats, dict) else None
                elif isinstance(message.get("id"), int):
                    answer = slot.answers.pop(message["id"], None)
                    if answer is not None and not answer.done():
                        answer.set_result(message)
        except (ConnectionError, ValueError):
            pass
        finally:
            if not listening.done():
                listening.set_exception(WorkerError(
                    f"worker {slot.index} stopped before it listened"))
            for answer in slot.answers.values():
                if not answer.done():
                    answer.set_exception(WorkerError(f"worker {slot.index} is gone"))
            slot.answers.clear()

    async def _watch(self, slot: _Slot) -> None:
        """Restart the worker in ``slot`` whenever it dies, until the host stops."""
        pause = RESTART_PAUSE[0]
        while not self.stopping():
            assert slot.proc is not None
            code = await slot.proc.wait()
            slot.ready = False
            if self.stopping():
                return
            if slot.last_stats is not None:  # its counters still count for the host
                self.retired.append(slot.last_stats)
                slot.last_stats = None
            lived = time.monotonic() - slot.started_at
            log.warning("worker %d (pid %d) %s after %.1f s; restarting it", slot.index,
                        slot.proc.pid, _exit_text(code), lived)
            if lived >= HEALTHY_AFTER:
                pause = RESTART_PAUSE[0]
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESTART_PAUSE[1])
            if self.stopping():
                return
            slot.restarts += 1
            try:
                await self._spawn(slot)
                await self._wait_listening(slot)
            except WorkerError as exc:
                log.error("worker %d could not start again: %s", slot.index, exc)
                if slot.proc is not None and slot.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.proc.kill()
                continue
            log.warning("worker %d is back (pid %d)", slot.index, slot.proc.pid)

    def _fired_once(self, slot: _Slot, index: object, spec: object) -> None:
        """A worker fired a ``once`` rule: disarm it in every other worker."""
        if not isinstance(index, int) or not isinstance(spec, str):
            return
        self.spent[index] = spec
        request = {"cmd": "disarm", "rule": index, "spec": spec}
        loop = asyncio.get_running_loop()
        for other in self.slots:
            if other is not slot and other.writer is not None:
                task = loop.create_task(self._ask(other, request))
                # a worker that is gone or starting learns it from its config / "set"
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _heartbeat(self, slot: _Slot) -> None:
        """Ask the worker in ``slot`` for its counters every second; kill it when it hangs."""
        while not self.stopping():
            await asyncio.sleep(HEARTBEAT)
            proc = slot.proc
            if not slot.ready or proc is None or proc.returncode is not None:
                continue
            session: object = None
            with contextlib.suppress(WorkerError):
                answer = await self._ask(slot, {"cmd": "ping"},
                                         timeout=min(RELAY_TIMEOUT, self.worker_timeout))
                session = answer.get("session_s")
            why = hung_reason(time.monotonic() - slot.last_seen, session, self.worker_timeout)
            if why is None or self.stopping() or slot.proc is not proc \
                    or proc.returncode is not None:
                continue
            log.error("worker %d (pid %d) %s; killing it", slot.index, proc.pid, why)
            slot.ready = False
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # the watcher restarts it

    # the relay ---------------------------------------------------------------------------
    async def _ask(self, slot: _Slot, request: Mapping[str, object], *,
                   timeout: float = RELAY_TIMEOUT) -> dict[str, object]:
        if slot.writer is None:
            raise WorkerError(f"worker {slot.index} is not running")
        slot.next_id += 1
        ident = slot.next_id
        answer: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        slot.answers[ident] = answer
        try:
            slot.writer.write(json.dumps({**request, "id": ident}).encode() + b"\n")
            result = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise WorkerError(f"worker {slot.index} did not answer in "
                              f"{timeout:.0f} s") from None
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerError(f"worker {slot.index} is gone ({type(exc).__name__})") from None
        finally:
            slot.answers.pop(ident, None)
        slot.last_seen = time.monotonic()
        stats = result.get("stats")
        if isinstance(stats, dict):
            slot.last_stats = stats
        return result

    async def handle_admin(self, request: object) -> dict[str, object]:
        """Answer one admin request for the whole host (:meth:`AdminServer.relay` calls it)."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        cmd = request.get("cmd")
        if cmd not in ("add", "clear", "list", "stats"):
            return {"ok": False, "error": f"unknown command {cmd!r}; use list, add, clear or "
                                         "stats"}
        if cmd == "add":
            spec = request.get("spec")
            if not isinstance(spec, str):
                return {"ok": False, "error": "add needs a 'spec' string"}
            try:
                parse_spec(spec)
            except FaultSpecError as exc:
                return {"ok": False, "error": str(exc)}
            self.specs.append(spec)
        elif cmd == "clear":
            self.specs.clear()
            self.spent.clear()
        forwarded = {"cmd": cmd, "spec": request.get("spec")} if cmd == "add" else {"cmd": cmd}
        live = [s for s in self.slots if s.ready]
        # the workers not asked, from the same look as ``live``: a worker that gets ready
        # while the others answer was not asked, and the answer says so (taken after the
        # answers, such a worker was in neither list: per_worker one short, no word why)
        down = [s.index for s in self.slots if s not in live]
        results = await asyncio.gather(*(self._ask(s, forwarded) for s in live),
                                       return_exceptions=True)
        if cmd == "clear":  # after the workers dropped the rules the claims were for
            self._clear_claims()
        answers: list[tuple[_Slot, dict[str, object]]] = []
        missing: list[str] = []
        for slot, result in zip(live, results, strict=True):
            if isinstance(result, dict) and result.get("ok"):
                answers.append((slot, result))
            elif isinstance(result, dict):
                return {"ok": False, "error": str(result.get("error"))}
            else:
                missing.append(f"worker {slot.index}: {result}")
        return self._merged(cmd, answers, missing, down)

    def _merged(self, cmd: str, answers: list[tuple[_Slot, dict[str, object]]],
                missing: list[str], down: list[int]) -> dict[str, object]:
        merged: dict[str, object] = {
            "ok": True, "workers": len(self.slots),
            "faults": merge_faults([a.get("faults") for _, a in answers]),
        }
        if cmd == "add":
            merged["added"] = answers[0][1].get("added") if answers else []
        elif cmd == "clear":
            counts = [a.get("cleared") for _, a in answers]
            merged["cleared"] = max((c for c in counts if isinstance(c, int)), default=0)
        elif cmd == "stats":
            per_worker = [(s, a.get("stats")) for s, a in answers]
            merged["stats"] = merge_stats(
                [*self.retired, *(st for _, st in per_worker if isinstance(st, dict))])
            merged["replaced_workers"] = len(self.retired)
            merged["per_worker"] = [
                {"worker": s.index, "pid": s.proc.pid if s.proc is not None else None,
                 "restarts": s.restarts, "stats": st, "faults": a.get("faults")}
                for (s, st), (_, a) in zip(per_worker, answers, strict=True)]
        if not answers and not down:
            merged["faults"] = [{"spec": s, "fired": 0, "armed": True} for s in self.specs]
        if missing or down:
            merged["unanswered"] = missing + [f"worker {i}: restarting" for i in down]
        return merged


def hung_reason(silent_s: float, session_s: object, timeout: float) -> str | None:
    """Why a worker is hung, or None: silent for ``timeout`` s, or one ledger session
    running for longer than the commit path's own retry window (``UNAVAILABLE_FOR``: a
    ledger that is down is waited for that long) plus ``timeout``."""
    if silent_s >= timeout:
        return f"has not answered for {silent_s:.1f} s"
    if isinstance(session_s, (int, float)) and session_s >= UNAVAILABLE_FOR + timeout:
        return f"has been in one ledger session for {session_s:.1f} s"
    return None


def _free_port(host: str, port: int) -> int:
    """Check that ``port`` is free on ``host`` (port 0: pick one); the workers then share it.

    The probe binds without SO_REUSEPORT, so a port some other process listens on
    (another emulator's workers included) is refused here, not silently shared.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise WorkerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def supervise(spec: WorkerSpec, workers: int, admin: AdminAddress | None,
                    announce: Callable[[tuple[str, int], AdminAddress | None, str, str],
                                       None],
                    *, worker_timeout: float = WORKER_TIMEOUT,
                    prepare: Callable[[], None] | None = None,
                    ) -> tuple[int, dict[str, object]]:
    """Run the workers until SIGINT/SIGTERM; returns (exit code, the workers' last counters).

    ``admin`` is where the supervisor's admin channel listens (None: none);
    ``announce`` is called with the bound address, the admin address, the event loop the
    workers serve on (:mod:`emulator.loop`) and how their groups commit once all listen;
    ``prepare`` runs while the worker processes start (see :meth:`Supervisor.start`).
    """
    supervisor = Supervisor(spec, workers, worker_timeout=worker_timeout)
    await supervisor.start(prepare)
    admin_server: AdminServer | None = None
    if admin is not None:
        admin_server = AdminServer.relay(supervisor.handle_admin)
        try:
            admin = await admin_server.start(admin)
        except HostError:
            supervisor.request_stop()
            await supervisor.wait()
            raise
    supervisor.install_signal_handlers()
    assert supervisor.address is not None
    announce(supervisor.address, admin, supervisor.loops(), supervisor.commit_modes())
    code = await supervisor.wait()
    if admin_server is not None:
        await admin_server.stop()
    return code, supervisor.final_stats()


# --- the worker process ----------------------------------------------------------------
def worker_main(argv: Sequence[str]) -> int:
    """``python -m emulator.workers FD``: one host process, driven over the relay at FD."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("emulator.workers is started by 'pos-emulator serve --workers N'",
              file=sys.stderr)
        return 2
    control = socket.socket(fileno=int(argv[0]))
    try:
        return run_host(_worker(control))
    except LoopChoiceError as exc:  # (serve refused it first: same environment)
        print(f"emulator.workers: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - the supervisor sends SIGTERM
        return 0


async def _worker(control: socket.socket) -> int:
    from emulator.host import AcquirerHost
    from emulator.server import acquirer_server

    reader, writer = await asyncio.open_unix_connection(sock=control)

    def send(message: Mapping[str, object]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")

    first = json.loads(await reader.readline() or b"null")
    if not isinstance(first, dict) or not isinstance(first.get("config"), dict):
        return 2
    config = first["config"]
    spec = WorkerSpec.from_json(config)
    index = int(config.get("index", 0))
    logging.basicConfig(
        level=logging.INFO if spec.verbose else logging.WARNING,
        format=f"%(asctime)s %(levelname)s worker {index} %(name)s: %(message)s")
    plan = FaultPlan.from_specs(spec.faults)
    _disarm_spent(plan, config.get("spent"))
    seed = None if spec.fault_seed is None else spec.fault_seed + index
    try:
        with gc_paused():  # loads the store's modules (psycopg for postgresql://)
            store = open_store(spec.ledger, processes=int(config.get("workers", 1)))
    except HostError as exc:
        send({"event": "failed", "error": str(exc)})
        await writer.drain()
        return 2
    trace: HostTraceFile | None = None
    try:
        host = AcquirerHost.from_store(store, spec.dialect)
        if spec.trace is not None:
            from emulator.trace import HostTraceFile

            try:
                trace = HostTraceFile(spec.trace, host.dialect, worker=index)
            except HostError as exc:
                send({"event": "failed", "error": str(exc)})
                await writer.drain()
                return 2
        server = acquirer_server(host, store, config=spec.server, faults=plan,
                                 rng=random.Random(seed), trace=trace)
        freeze_startup()  # a worker only serves
        try:
            bound = await server.start()
        except OSError as exc:
            send({"event": "failed", "error": f"cannot listen on {spec.server.host}:"
                                              f"{spec.server.port}: {exc.strerror}"})
            await writer.drain()
            return 2
        server.install_signal_handlers()
        plan.on_once = lambda index, rule: send(
            {"event": "fired", "rule": index, "spec": rule.spec})
        claims = config.get("claims")
        if isinstance(claims, str):
            plan.claim_once = lambda index, rule: claim_once(Path(claims), index, rule.spec)
        send({"event": "listening", "address": list(bound), "pid": os.getpid(),
              "loop": loop_name(), "commits": server.commit_mode})
        control_task = asyncio.get_running_loop().create_task(
            _obey(reader, send, plan, server.stats.as_dict, server.request_stop,
                  server.session_seconds))
        await server.serve_until_stopped()
        control_task.cancel()
        send({"event": "stopped", "stats": server.stats.as_dict()})
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        if server.fatal is not None:
            log.critical("stopped: the ledger refused a commit (%s)", server.fatal)
            return 1
        return 0
    finally:
        if trace is not None:
            trace.close()
        store.close()


def claim_once(claims: Path, index: int, spec: str) -> bool:
    """Claim the ``once`` rule at ``index`` (text ``spec``) for this process: True for
    the first process of the host that asks, False for every later one.

    O_CREAT|O_EXCL is atomic between processes. A directory that cannot be written
    (removed under a stopping host) lets the rule fire, as a single process would.
    """
    name = f"{index}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"
    try:
        os.close(os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError as exc:
        log.warning("cannot claim a once fault rule (%s); firing it here", exc.strerror)
    return True


def _disarm_spent(plan: FaultPlan, spent: object) -> None:
    """Disarm the ``once`` rules the supervisor says fired elsewhere ([[index, rule]...])."""
    if not isinstance(spent, list):
        return
    for item in spent:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int):
            plan.disarm(item[0], str(item[1]))


async def _obey(reader: asyncio.StreamReader, send: Callable[[Mapping[str, object]], None],
                plan: FaultPlan, stats: Callable[[], Mapping[str, object]],
                stop: Callable[[], None], session_seconds: Callable[[], float]) -> None:
    """Answer the supervisor's requests; stop the worker when the supervisor is gone."""
    try:
        while line := await reader.readline():
            try:
                request = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(request, dict):
                continue
            ident = request.get("id")
            if request.get("cmd") == "ping":
                send({"id": ident, "ok": True, "stats": dict(stats()),
                      "session_s": round(session_seconds(), 3)})
            elif request.get("cmd") == "set":
                plan.clear()
                with contextlib.suppress(FaultSpecError):  # checked by the supervisor
                    for spec in request.get("specs") or []:
                        plan.add(str(spec))
                _disarm_spent(plan, request.get("spent"))
                send({"id": ident, "ok": True, "faults": plan.describe()})
            elif request.get("cmd") == "disarm":
                rule, text = request.get("rule"), request.get("spec")
                done = isinstance(rule, int) and isinstance(text, str) and plan.disarm(rule, text)
                send({"id": ident, "ok": done, "faults": plan.describe()})
            else:
                send({**admin_dispatch(plan, stats, request), "id": ident})
    except (ConnectionError, ValueError):
        pass
    log.warning("the supervisor is gone; stopping")
    stop()


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
