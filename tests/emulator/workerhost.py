"""A real ``pos-emulator serve --workers N`` on PostgreSQL for the tests, and ledger checks.

:func:`fresh_database` gives each test a database of its own in the session's
private cluster; :class:`WorkerHost` runs the CLI as a subprocess (the same
command a user types) and talks to its admin channel; :func:`ledger_rows` and
:func:`check_money` read the ledger straight from PostgreSQL and check the money
rules (DESIGN.md section 5) that must hold whatever the workers raced over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from emulator.admin import AdminAddress, admin_request
from emulator.client import HostClient, sign_on
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.simterminal import Approved, SimTerminal

_databases = itertools.count(1)


#: a password the test clusters ignore (trust authentication): it must never be printed
PASSWORD = "never-printed-8583"


def fresh_database(dsn: str, prefix: str = "w", *, password: bool = False) -> str:
    """A new empty database in the cluster behind ``dsn``; returns its postgresql:// URL
    (with :data:`PASSWORD` in it when ``password``)."""
    import psycopg  # type: ignore[import-not-found, unused-ignore]
    from psycopg.conninfo import conninfo_to_dict  # type: ignore[import-not-found, unused-ignore]

    name = f"{prefix}{os.getpid()}_{next(_databases)}"
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name}")
        db.execute(f"CREATE DATABASE {name}")
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k != "dbname"}
    if password:
        params["password"] = PASSWORD
    return f"postgresql:///{name}?{urlencode(params)}"


def shared_ledger(kind: str, request: Any, tmp: Path) -> str:
    """A ledger the workers share: a fresh PostgreSQL database (``kind`` postgresql, from
    the ``pg_dsn`` fixture) or a SQLite file (sqlite; skipped while the SQLite store is
    not multi-process safe)."""
    import pytest

    if kind == "postgresql":
        return fresh_database(request.getfixturevalue("pg_dsn"), kind[:2], password=True)
    from emulator.host.ledger import SqliteLedgerStore
    if not getattr(SqliteLedgerStore, "multi_process", False):
        pytest.skip("the SQLite ledger is one process's")
    return str(tmp / "ledger.db")


class WorkerHost:
    """``pos-emulator serve --workers N --ledger URL`` in a subprocess (a context manager)."""

    def __init__(self, ledger: str, workers: int, *extra: str) -> None:
        self.ledger = ledger
        self.workers = workers
        self._tmp = tempfile.TemporaryDirectory(dir="/tmp", prefix="pw-")
        self.admin_path = Path(self._tmp.name) / "admin.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "serve", "--port", "0", "--ledger", ledger,
             "--workers", str(workers), "--admin", f"unix:{self.admin_path}",
             "--shutdown-timeout", "5", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.banner = ""
        self.stderr_lines: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._err = threading.Thread(target=self._drain, args=(self.proc.stderr,),
                                     daemon=True)
        self._err.start()
        for _ in range(3):
            line = self.proc.stdout.readline()
            self.banner += line
            if not line or "listening on" in line:
                break
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.banner)
        if found is None:
            self.proc.kill()
            self.proc.wait(10)
            self._err.join(5)
            raise RuntimeError(f"serve did not start: {self.banner}{self.stderr}")
        self.port = int(found.group(1))

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def admin(self, request: dict[str, object]) -> dict[str, object]:
        return admin_request(AdminAddress(path=self.admin_path), request, timeout=10)

    def stats(self) -> dict[str, Any]:
        answer = self.admin({"cmd": "stats"})
        assert answer.get("ok"), answer
        return answer

    def worker_pids(self) -> list[int]:
        return [int(w["pid"]) for w in self.stats()["per_worker"]]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the supervisor; its exit code. Nothing it printed shows the password."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._err.join(5)
        assert PASSWORD not in self.banner + self.stderr
        return code

    def __enter__(self) -> WorkerHost:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._tmp.cleanup()


async def demo_terminal(port: int, stan: int = 1) -> SimTerminal:
    """The demo terminal, signed on at the host on ``port``, its next STAN ``stan`` (a STAN
    the ledger already holds for other content would be answered 94)."""
    term = SimTerminal("cup", DEMO_TID, DEMO_MID, DEMO_TMK, datetime.now, stan=stan)
    async with HostClient("127.0.0.1", port, "cup", timeout=10) as client:
        await sign_on(term, client)
    return term


# --- the ledger, read back ----------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    tid: str
    batch: str
    stan: str
    mti: str
    kind: str
    status: str
    response_code: str
    amount: int | None
    rrn: str | None
    auth_code: str | None
    original: str | None
    refunded: int
    voided_by: str | None

    @property
    def key(self) -> str:
        return f"{self.tid}/{self.batch}/{self.stan}/{self.mti}"


_ROWS = ("SELECT tid, batch, stan, mti, kind, status, response_code, amount, rrn, auth_code, "
         "original, refunded, voided_by FROM transactions ORDER BY seq")


def ledger_rows(ledger: str) -> list[Row]:
    """Every transaction row, straight from the database (PostgreSQL URL or SQLite file)."""
    if ledger.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(ledger) as db:
            return [Row(*r) for r in db.execute(_ROWS)]
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        return [Row(*r) for r in db.execute(_ROWS)]


def key_of(tid: str, answer: Approved) -> str:
    return f"{tid}/{answer.batch}/{answer.stan}/{answer.mti}"


def check_money(rows: Sequence[Row], seen: Iterable[Approved], tid: str = DEMO_TID) -> None:
    """The money rules over the whole ledger, and every approval a client saw is in it.

    No original over-refunded (approved refunds <= its amount, and its ``refunded``
    column says the same sum); a voided sale has exactly its one approved void and
    no approved refund, a sale not voided has no approved void; every request is
    booked once (one row per key, RRNs unique).
    """
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys)), "a request booked twice"
    rrns = [r.rrn for r in rows if r.rrn is not None]
    assert len(rrns) == len(set(rrns)), "an RRN given twice"
    by_key = {r.key: r for r in rows}
    refunds: dict[str, list[Row]] = {}
    voids: dict[str, list[Row]] = {}
    for r in rows:
        if r.status == "approved" and r.original is not None:
            if r.kind == "refund":
                refunds.setdefault(r.original, []).append(r)
            elif r.kind == "void":
                voids.setdefault(r.original, []).append(r)
    for sale in (r for r in rows if r.kind == "sale"):
        refunded = sum(r.amount or 0 for r in refunds.get(sale.key, []))
        assert refunded <= (sale.amount or 0), f"{sale.key} over-refunded: {refunded}"
        assert sale.refunded == refunded, f"{sale.key}: refunded {sale.refunded} != {refunded}"
        approved_voids = voids.get(sale.key, [])
        assert len(approved_voids) <= 1, f"{sale.key} voided twice"
        if sale.status == "voided":
            assert refunded == 0, f"{sale.key} voided and refunded"
            assert [v.key for v in approved_voids] == [sale.voided_by]
        else:
            assert not approved_voids, f"{sale.key} has an approved void but is {sale.status}"
    for answer in seen:
        row = by_key.get(key_of(tid, answer))
        assert row is not None, f"approved {answer.kind} {answer.stan} is not in the ledger"
        assert row.response_code == "00", (row, answer)
        assert row.rrn == answer.rrn, (row, answer)
        assert row.status in (("approved", "voided") if row.kind == "sale" else ("approved",))


async def gather_limited(limit: int, jobs: Sequence[Any]) -> list[Any]:
    """Run coroutines at most ``limit`` at a time; results in order (exceptions included)."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True))
