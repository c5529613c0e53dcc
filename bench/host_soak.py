"""Soak of the acquirer host's memory and start-up as the ledger grows to 1,000,000 rows.

One ``pos-emulator serve`` (its own process, as an operator starts it) runs over a
fresh ledger (SQLite file, or a PostgreSQL database in a private cluster) while
the ledger grows to ``--rows`` (default 1,000,000) transactions:

1. fast path: most rows are written straight into the ledger by this process
   through the store's own interface (``LedgerStore.commit``: the store's schema and
   upserts), cloned from a sale the host booked itself (own TIDs 6xxxxxxx, RRNs
   9xxxxxxxxxxx that the host's counter never reaches), in chunks of
   ``--chunk`` rows per commit while the server runs;
2. real traffic: at ``--first`` rows (default 100,000) and again at ``--rows``,
   ``--connections`` simulated terminals (new TIDs each round) drive sales and
   partial refunds through the server for ``--traffic-seconds`` (closed loop), and
   the host's RSS is read from /proc afterwards (target: RSS at the end grows by
   no more than 20 % over RSS at the first mark);
3. crash: the host is SIGKILLed and started again over the full ledger; the
   start-up time is from the process start to the first echo test answered (target
   < 1 s), and a sale answered before the kill, sent again, gets the stored answer
   byte for byte.

    .venv/bin/python -m bench.host_soak [--ledger sqlite|postgresql] [--rows 1000000]
                                        [--first 100000] [--traffic-seconds 10]

It takes minutes (PostgreSQL: one round trip per row on the fast path): a bench,
not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._proc import sched_times, tree_cpu, tree_rss
from bench._util import work_dir
from bench.host_load import (
    CARDS,
    MID,
    REPO,
    TMK,
    PhaseResult,
    Serve,
    _drive,
    lane_tids,
    open_ledger,
    pg_cluster,
    pg_database,
    pg_missing,
    provision,
)
from emulator.client import HostClient, NoAnswerError
from emulator.host.errors import HostError
from emulator.host.ledger import TransactionRow
from emulator.simterminal import Approved, SimTerminal
from iso8583.errors import Iso8583Error
from iso8583.message import Message

RSS_GROWTH_TARGET = 1.20
STARTUP_TARGET_S = 1.0
BULK_TIDS = 100  # 60000000.. : 10,000 STANs each for 1M rows
PROBE_TID = "69999999"  # its sale before the crash is sent again after it


# --- the fast path ---------------------------------------------------------------------------
def count_rows(ledger: str) -> int:
    if ledger.startswith(("postgresql://", "postgres://")):
        import psycopg
        with psycopg.connect(ledger, autocommit=True) as db:
            row = db.execute("SELECT count(*) FROM transactions").fetchone()
    else:
        with contextlib.closing(sqlite3.connect(ledger)) as sdb:
            row = sdb.execute("SELECT count(*) FROM transactions").fetchone()
    assert row is not None
    return int(row[0])


def template_row(ledger: str, tid: str) -> TransactionRow:
    """An approved sale the host booked for ``tid``: the model of the bulk rows."""
    store = open_ledger(ledger)
    try:
        rows: tuple[TransactionRow, ...] = store.load().transactions
        for row in rows:
            if row.tid == tid and row.kind == "sale" and row.status == "approved":
                return row
    finally:
        store.close()
    raise RuntimeError(f"no approved sale of {tid} in the ledger")


def fill(ledger: str, template: TransactionRow, start: int, stop: int, chunk: int) -> float:
    """Write bulk sales number ``start`` .. ``stop - 1``; returns rows per second."""
    store = open_ledger(ledger)
    began = time.perf_counter()
    try:
        for first in range(start, stop, chunk):
            rows = []
            for n in range(first, min(first + chunk, stop)):
                tid = f"{60_000_000 + n % BULK_TIDS:08d}"
                stan = f"{n // BULK_TIDS + 1:06d}"
                rows.append(replace(template, tid=tid, batch="000001", stan=stan,
                                    rrn=f"9{n:011d}", auth_code=f"{n % 1_000_000:06d}",
                                    amount=100 + n % 10_000, pan_hash=f"bulk{n % 1000}"))
            store.commit(rows)
    finally:
        store.close()
    took = time.perf_counter() - began
    return (stop - start) / took if took else 0.0


# --- real traffic and the crash ---------------------------------------------------------
@dataclass
class Mark:
    rows_before: int  # ledger rows when the real traffic began
    rows: int  # and when it ended
    traffic: PhaseResult
    rss_bytes: int
    peak_rss_bytes: int
    host_cpu_s: float


def _peak_rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def traffic(serve: Serve, ledger: str, connections: int, seconds: float, first_tid: int) -> Mark:
    prebuilt = int((seconds + 1) * 1500 * 0.6 / connections)
    pid = serve.proc.pid
    before = count_rows(ledger)
    cpu0 = tree_cpu(pid)
    closed, _ = asyncio.run(_drive(serve.port, connections, seconds, 1.0, 0.0, prebuilt,
                                   lambda: {"host": tree_cpu(pid)}, first_tid))
    gc.collect()
    return Mark(before, count_rows(ledger), PhaseResult.of(closed, seconds), tree_rss(pid),
                _peak_rss(pid), tree_cpu(pid) - cpu0)


@dataclass
class Witness:
    """A sale answered before the crash: the request and the answer's bytes."""

    request: Message
    body: bytes


async def _witness(port: int) -> Witness:
    term = SimTerminal("cup", PROBE_TID, MID, TMK, datetime.now)
    client = HostClient("127.0.0.1", port, "cup", timeout=10)
    try:
        frame = await client.exchange(term.sign_on_request())
        term.accept_sign_on(frame.message)
        card, pin = CARDS[0]
        request = term.sale(card, 1_200, pin=pin)
        frame = await client.exchange(request)
        assert isinstance(term.check_response(request, frame.message, body=frame.body),
                          Approved)
        return Witness(request, frame.body)
    finally:
        await client.close()


@dataclass
class Restart:
    first_answer_s: float  # process start -> first echo test answered
    resend_same: bool  # the witness sale, sent again, got the stored answer byte for byte
    rss_bytes: int
    # serve's main thread up to the first answer: on a CPU, and runnable but waiting for one
    ran_s: float | None = None
    waited_s: float | None = None


async def _first_answer(port: int, started: float, witness: Witness) -> tuple[float, bool]:
    """An echo test as soon as the port answers; then resend the witness sale."""
    term = SimTerminal("cup", PROBE_TID, MID, TMK, datetime.now)
    client = HostClient("127.0.0.1", port, "cup", timeout=10)
    try:
        while True:
            try:
                frame = await client.exchange(term.echo())
                assert frame.message.response_code == "00", frame.message.response_code
                break
            except (NoAnswerError, OSError, HostError, Iso8583Error):
                await client.close()
                await asyncio.sleep(0.002)
        took = time.perf_counter() - started
        answer = await client.exchange(witness.request)
        return took, answer.body == witness.body
    finally:
        await client.close()


def crash_and_restart(serve: Serve, ledger: str, admin: Path, witness: Witness) -> Restart:
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait()
    port = serve.port
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "serve", "--ledger", ledger, "--port", str(port),
         "--admin", f"unix:{admin}", "--idle-timeout", "600"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_s, same = asyncio.run(_first_answer(port, started, witness))
        sched = sched_times(proc.pid)
        rss = tree_rss(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Restart(first_s, same, rss, *(sched if sched is not None else (None, None)))


# --- the whole soak ----------------------------------------------------------------------
@dataclass
class SoakResult:
    ledger_kind: str
    rows_target: int
    fill_rows_per_s: list[float] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    restart: Restart | None = None
    seconds: float = 0.0

    @property
    def rss_growth(self) -> float | None:
        if len(self.marks) < 2 or not self.marks[0].rss_bytes:
            return None
        return self.marks[-1].rss_bytes / self.marks[0].rss_bytes


@contextlib.contextmanager
def _ledger(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(work / "soak.db")
        return
    with pg_cluster(work / "pg") as (dsn, _postmaster):
        yield pg_database(dsn, "soak")


def soak(kind: str, rows: int, first: int, connections: int, seconds: float, chunk: int,
         work: Path) -> SoakResult:
    result = SoakResult(kind, rows)
    began = time.perf_counter()
    # serve's start is measured as scripts/setup.sh leaves a checkout, its bytecode current:
    # where PYTHONDONTWRITEBYTECODE is set, a module edited since is compiled at every start
    # (pgledger ~24 ms of CPU, server ~16)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "emulator", "iso8583"],
                   cwd=REPO, check=False, capture_output=True)
    admin = work / "admin.sock"
    with _ledger(kind, work) as ledger:
        provision(ledger, [*lane_tids(connections, 70_000_000),
                           *lane_tids(connections, 71_000_000), PROBE_TID])
        serve = Serve(ledger, 1, admin)
        try:
            witness = asyncio.run(_witness(serve.port))
            template = template_row(ledger, PROBE_TID)
            done = 0
            for round_no, mark_at in enumerate((first, rows)):
                target = max(done, mark_at - count_rows(ledger) + done)
                print(f"host_soak: writing bulk rows {done:,} .. {target:,} ...", flush=True)
                result.fill_rows_per_s.append(fill(ledger, template, done, target, chunk))
                done = target
                print(f"host_soak: real traffic at {count_rows(ledger):,} rows ...", flush=True)
                mark = traffic(serve, ledger, connections, seconds,
                               70_000_000 + round_no * 1_000_000)
                result.marks.append(mark)
                print(f"host_soak:   {mark.traffic.transactions} transactions "
                      f"({mark.traffic.tps:.0f} TPS), host RSS {mark.rss_bytes / 2**20:.1f} MiB",
                      flush=True)
            result.restart = crash_and_restart(serve, ledger, admin, witness)
        finally:
            if serve.proc.poll() is None:
                serve.stop()
    result.seconds = time.perf_counter() - began
    return result


def print_result(r: SoakResult) -> None:
    print(f"host_soak ({r.ledger_kind}): {r.rows_target:,} transactions, {r.seconds:.0f} s")
    for rate in r.fill_rows_per_s:
        print(f"  fast path (store.commit of cloned sales, this process): {rate:,.0f} rows/s")
    for mark in r.marks:
        t = mark.traffic
        print(f"  at {mark.rows_before:,} rows: real traffic {t.transactions} transactions "
              f"({t.sales} sales, {t.refunds} refunds, {t.failures} failed) = {t.tps:.0f} TPS, "
              f"p50 {t.p50_ms:.1f} ms p99 {t.p99_ms:.1f} ms; then {mark.rows:,} rows, host RSS "
              f"{mark.rss_bytes / 2**20:.1f} MiB (peak {mark.peak_rss_bytes / 2**20:.1f} MiB)")
    growth = r.rss_growth
    if growth is not None:
        print(f"  host RSS at {r.marks[-1].rows:,} rows / at {r.marks[0].rows:,} rows: "
              f"{growth:.3f}x -> target <= {RSS_GROWTH_TARGET:.2f}x: "
              f"{'MET' if growth <= RSS_GROWTH_TARGET else 'MISSED'}")
    if r.restart is not None:
        s = r.restart
        print(f"  after SIGKILL, restart over {r.marks[-1].rows if r.marks else 0:,} rows: first "
              f"echo test answered {s.first_answer_s * 1000:.0f} ms after the process started "
              f"(RSS then {s.rss_bytes / 2**20:.1f} MiB) -> target < {STARTUP_TARGET_S:.0f} s: "
              f"{'MET' if s.first_answer_s < STARTUP_TARGET_S else 'MISSED'}")
        if s.ran_s is not None and s.waited_s is not None:
            print(f"    serve's main thread to its first echo and the resend: {s.ran_s * 1000:.0f} "
                  f"ms on a CPU, {s.waited_s * 1000:.0f} ms runnable but waiting for one")
        print(f"  a sale answered before the kill, sent again after it: "
              f"{'the stored answer, byte for byte' if s.resend_same else 'A DIFFERENT ANSWER'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ledger", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--first", type=int, default=100_000,
                        help="rows at the first RSS mark (default 100,000)")
    # the traffic's own rows come before the RSS is read: at ~6,000 TPS, 30 s of it put the
    # first mark at ~300k rows instead of ~100k; 10 s is still ~60k transactions
    parser.add_argument("--traffic-seconds", type=float, default=10.0,
                        help="real traffic at each mark (default 10 s)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10_000, help="bulk rows per commit")
    parser.add_argument("--dir", type=work_dir, default=None,
                        help="directory for the SQLite ledger (default: current)")
    args = parser.parse_args(argv)
    if not 0 < args.first < args.rows or args.rows > BULK_TIDS * 999_999 \
            or args.traffic_seconds <= 0 or args.connections <= 0 or args.chunk <= 0:
        print("host_soak: need 0 < --first < --rows <= 99,999,900 and positive "
              "--traffic-seconds, --connections, --chunk", file=sys.stderr)
        return 2
    if args.ledger == "postgresql":
        missing = pg_missing()
        if missing is not None:
            print(f"host_soak: {missing}", file=sys.stderr)
            return 2
    base = args.dir if args.dir is not None else Path.cwd()
    with tempfile.TemporaryDirectory(dir=base, prefix="host-soak-") as tmp:
        result = soak(args.ledger, args.rows, args.first, args.connections,
                      args.traffic_seconds, args.chunk, Path(tmp))
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
