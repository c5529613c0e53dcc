"""Load benchmark of the acquirer host: durable financial TPS and latency on loopback.

Runs the real server (host core + SQLite ledger, WAL, synchronous=FULL, group
commit) in its own process and drives it from this process with N concurrent
connections (default 100), each a simulated terminal with its own provisioned
TID doing sales (MACed, PIN block, ARQC in F55) and partial refunds against its
own approved sales. Every answer the host sends is durable before it leaves, so
answers per second is durable financial transactions per second.

Two measured phases of ``--seconds`` each:

* closed loop: every terminal sends its next request as soon as it has the
  answer (the most the host can do with 100 connections; latency = queueing);
* paced: the same terminals offer ``--rate`` TPS in all (default 2,000) on a
  fixed schedule, and latency is counted from the *scheduled* send time, so a
  stall is charged to every request it delays.

Sales are built (PIN block, ARQC, MAC) before the clock starts so the load
generator's share of the machine goes to sockets. In the same run, on the same
directory, it measures the anchor: a bare SQLite loop of one INSERT + COMMIT per
transaction (WAL, synchronous=FULL) -- what a host that commits each answer on
its own could at best do -- and prints the ratio.

    .venv/bin/python -m bench.host_load [--seconds 10] [--connections 100] [--rate 2000]

Target (issue 3): >= 2,000 TPS and p99 <= 50 ms. On a shared 2-core machine the
figures move with whatever else runs; the CPU line and load averages say how busy
the machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.catalogue import card_by_name
from emulator.client import HostClient, NoAnswerError, sign_on
from emulator.host import AcquirerHost, SqliteLedgerStore
from emulator.host.errors import ResponseError
from emulator.server import HostServer, ServerConfig, acquirer_server
from emulator.simterminal import Approved, SimTerminal
from iso8583.message import Message

MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CARDS = ((card_by_name("cup-debit"), "123456"), (card_by_name("cup-credit"), "111111"),
         (card_by_name("cup-nopin"), None))


# --- the anchor: a bare SQLite insert+commit loop ---------------------------------------
def sqlite_ceiling(directory: Path, seconds: float) -> float:
    """Commits per second of one INSERT + COMMIT per row (WAL, synchronous=FULL)."""
    path = directory / "anchor.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, tid TEXT, stan TEXT, amount INTEGER, "
               "response TEXT)")
    row = ("10000001", "000001", 12_300, "x" * 200)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        db.execute("BEGIN")
        db.execute("INSERT INTO t (tid, stan, amount, response) VALUES (?, ?, ?, ?)", row)
        db.execute("COMMIT")
        count += 1
    took = time.perf_counter() - start
    db.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")
    return count / took


# --- the server process ---------------------------------------------------------------------
def _serve(ledger: str, tids: list[str], ports: Queue[object], stop: Event) -> None:
    async def main() -> None:
        store = SqliteLedgerStore(ledger)
        host = AcquirerHost.from_store(store, "cup")
        store.commit([host.provision(tid, MID, TMK) for tid in tids])
        server = acquirer_server(host, store, config=ServerConfig(
            port=0, idle_timeout=600, read_timeout=30, gc_freeze_interval=1.0))
        _, port = await server.start()
        ports.put(port)
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await server.stop()
        store.close()
        ports.put({**server.stats.as_dict(), "cpu_seconds": time.process_time()})

    asyncio.run(main())


# --- the load generator ---------------------------------------------------------------------
@dataclass
class Load:
    sales: int = 0
    refunds: int = 0
    approved: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Phase:
    """One measured window: closed loop (``interval`` 0) or paced (one request per interval)."""

    interval: float = 0.0
    start: float = float("inf")
    end: float = float("inf")
    load: Load = field(default_factory=Load)


class _Lane:
    """One simulated terminal on its own connection."""

    def __init__(self, i: int, port: int, prebuilt: int) -> None:
        self.rng = random.Random(i)
        self.term = SimTerminal("cup", f"7{i:07d}", MID, TMK, datetime.now, rng=self.rng)
        self.client = HostClient("127.0.0.1", port, "cup", timeout=10)
        self.prebuilt = prebuilt
        self.queue: list[tuple[Message, int]] = []
        self.sales: list[tuple[Approved, int]] = []  # approved sale and what is left to refund

    async def prepare(self) -> None:
        await sign_on(self.term, self.client)
        # sales are built (PIN block, ARQC, MAC) before the clock starts, so the load
        # generator spends its share of the two cores on sockets, not on crypto
        for _ in range(self.prebuilt):
            self.queue.append(self._new_sale())

    def _new_sale(self) -> tuple[Message, int]:
        card, pin = self.rng.choice(CARDS)
        amount = self.rng.randint(1, 10) * 100  # small: the test cards' balances last the run
        return self.term.sale(card, amount, pin=pin), amount

    async def one(self, phase: Phase, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        refund = bool(self.sales) and self.rng.random() < 0.4
        index = 0
        if refund:
            index = self.rng.randrange(len(self.sales))
            original, left = self.sales[index]
            amount = min(left, self.rng.randint(1, 5) * 100)
            request = self.term.refund(original, amount)
        else:
            request, amount = self.queue.pop() if self.queue else self._new_sale()
        try:
            frame = await self.client.exchange(request)
            result = self.term.check_response(request, frame.message, body=frame.body)
        except (NoAnswerError, ResponseError):
            phase.load.failures += 1
            await self.client.close()
            return
        done = loop.time()
        if isinstance(result, Approved):
            if refund:
                left -= amount
                if left <= 0:
                    self.sales.pop(index)
                else:
                    self.sales[index] = (original, left)
            elif len(self.sales) < 50:
                self.sales.append((result, amount))
        if not phase.start <= scheduled or done > phase.end:
            return  # warm-up or after the bell: not counted
        load = phase.load
        load.latencies.append(done - scheduled)
        if refund:
            load.refunds += 1
        else:
            load.sales += 1
        if isinstance(result, Approved):
            load.approved += 1

    async def run(self, phase: Phase) -> None:
        loop = asyncio.get_running_loop()
        if phase.interval <= 0:
            while loop.time() < phase.end:
                await self.one(phase, loop.time())
            return
        # paced: requests at fixed times from a random phase; latency counts from the
        # scheduled time, so a lane that falls behind is charged for its queueing
        due = phase.start - 0.5 + self.rng.random() * phase.interval
        while due < phase.end:
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.one(phase, due)
            due += phase.interval


async def _drive(port: int, connections: int, seconds: float, warmup: float, rate: float,
                 prebuilt: int) -> tuple[Phase, Phase | None]:
    loop = asyncio.get_running_loop()
    lanes = [_Lane(i, port, prebuilt) for i in range(connections)]
    await asyncio.gather(*(lane.prepare() for lane in lanes))
    # the generator's own full GC pauses would show up as host latency: keep them short
    # the same way the server does (collect, then freeze the survivors, every second)
    freezer = loop.create_task(HostServer._gc_rounds(1.0))
    gc.collect()
    gc.freeze()
    closed = Phase()
    closed.start = loop.time() + warmup
    closed.end = closed.start + seconds
    await asyncio.gather(*(lane.run(closed) for lane in lanes))
    paced: Phase | None = None
    if rate > 0:
        paced = Phase(interval=connections / rate)
        paced.start = loop.time() + 0.5
        paced.end = paced.start + seconds
        await asyncio.gather(*(lane.run(paced) for lane in lanes))
    await asyncio.gather(*(lane.client.close() for lane in lanes))
    freezer.cancel()
    gc.unfreeze()
    return closed, paced


@dataclass
class PhaseResult:
    transactions: int
    sales: int
    refunds: int
    approved: int
    failures: int
    tps: float
    p50_ms: float
    p99_ms: float
    p90_ms: float
    max_ms: float

    @classmethod
    def of(cls, phase: Phase, seconds: float) -> PhaseResult:
        lat = sorted(phase.load.latencies)
        count = len(lat)
        p50 = statistics.median(lat) * 1000 if lat else 0.0
        p99 = lat[min(count - 1, int(count * 0.99))] * 1000 if lat else 0.0
        load = phase.load
        p90 = lat[min(count - 1, int(count * 0.90))] * 1000 if lat else 0.0
        return cls(count, load.sales, load.refunds, load.approved, load.failures,
                   count / seconds, p50, p99, p90, lat[-1] * 1000 if lat else 0.0)


@dataclass
class HostLoadResult:
    connections: int
    seconds: float
    closed_loop: PhaseResult
    paced: PhaseResult | None
    rate: float
    sqlite_commits_per_s: float
    ratio: float
    commits: int
    records_committed: int
    largest_batch: int
    commit_seconds: float
    slowest_commit_ms: float
    server_cpu_s: float  # CPU time of the server process (all threads), whole run
    generator_cpu_s: float  # CPU time of the load generator, from sign-on to the end
    wall_s: float
    load_average: tuple[float, float]  # 1-minute load average before and after

    @property
    def target_met(self) -> bool:
        latency = self.paced if self.paced is not None else self.closed_loop
        return self.closed_loop.tps >= 2000 and latency.p99_ms <= 50


def run(seconds: float = 10.0, connections: int = 100, directory: Path | None = None,
        warmup: float = 1.0, anchor_seconds: float = 3.0, rate: float = 2000.0,
        prebuilt: int | None = None) -> HostLoadResult:
    if prebuilt is None:  # enough sales for ~3,000 TPS (60% sales) through both phases
        prebuilt = int((seconds + warmup) * 3000 * 0.6 * (2 if rate > 0 else 1) / connections)
    base = directory if directory is not None else Path.cwd()
    with tempfile.TemporaryDirectory(dir=base, prefix="host-load-") as tmp:
        work = Path(tmp)
        ceiling = sqlite_ceiling(work, anchor_seconds)
        ctx = mp.get_context("spawn")
        ports: Queue[object] = ctx.Queue()
        stop = ctx.Event()
        tids = [f"7{i:07d}" for i in range(connections)]
        server = ctx.Process(target=_serve, args=(str(work / "ledger.db"), tids, ports, stop),
                             daemon=True)
        server.start()
        try:
            port = ports.get(timeout=60)
            assert isinstance(port, int)
            load_before = os.getloadavg()[0]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            closed, paced = asyncio.run(_drive(port, connections, seconds, warmup, rate,
                                               prebuilt))
        finally:
            stop.set()
            generator_cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
        stats = ports.get(timeout=60)
        server.join(30)
    assert isinstance(stats, dict)
    closed_result = PhaseResult.of(closed, seconds)
    return HostLoadResult(
        connections, seconds, closed_result,
        PhaseResult.of(paced, seconds) if paced is not None else None, rate, ceiling,
        closed_result.tps / ceiling if ceiling else float("inf"),
        int(stats["commits"]), int(stats["records_committed"]), int(stats["largest_batch"]),
        float(stats["commit_seconds"]), float(stats["slowest_commit_ms"]),
        float(stats["cpu_seconds"]), generator_cpu, wall, (load_before, os.getloadavg()[0]))


def _print_phase(title: str, r: PhaseResult) -> None:
    print(f"  {title}")
    print(f"    financial transactions answered (durable): {r.transactions} "
          f"({r.sales} sales, {r.refunds} refunds; {r.approved} approved; "
          f"{r.failures} failed exchanges)")
    print(f"    durable financial TPS: {r.tps:8.0f}")
    print(f"    latency p50 / p99:     {r.p50_ms:7.2f} ms / {r.p99_ms:.2f} ms   "
          f"(p90 {r.p90_ms:.2f} ms, max {r.max_ms:.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured time of each phase (default 10)")
    parser.add_argument("--connections", type=int, default=100, help="concurrent terminals")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="offered TPS of the paced phase (0: skip it; default 2000)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured warm-up seconds")
    parser.add_argument("--prebuilt", type=int, default=None,
                        help="sales each terminal builds before the clock starts "
                             "(default: enough for ~3,000 TPS)")
    parser.add_argument("--anchor-seconds", type=float, default=3.0,
                        help="how long to run the bare SQLite anchor")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the ledger and the anchor (default: current)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.connections <= 0 or args.rate < 0:
        print("host_load: --seconds and --connections must be positive", file=sys.stderr)
        return 2
    result = run(args.seconds, args.connections, args.dir, args.warmup, args.anchor_seconds,
                 args.rate, args.prebuilt)
    if args.json:
        print(json.dumps({**asdict(result), "target_met": result.target_met}, indent=2))
        return 0
    r = result
    batch = r.records_committed / r.commits if r.commits else 0.0
    print(f"host_load: {r.connections} connections on loopback, {r.seconds:.1f} s per phase "
          f"({os.cpu_count()} CPUs shared by server, load generator and anything else running)")
    _print_phase("closed loop (each terminal sends its next request as soon as answered):",
                 r.closed_loop)
    if r.paced is not None:
        _print_phase(f"paced at {r.rate:.0f} TPS offered (latency from the scheduled send time):",
                     r.paced)
    mean_ms = r.commit_seconds / r.commits * 1000 if r.commits else 0.0
    print(f"  ledger commits: {r.commits} (avg {batch:.1f} records, largest {r.largest_batch}; "
          f"mean {mean_ms:.2f} ms, slowest {r.slowest_commit_ms:.1f} ms) over the whole run")
    print(f"  anchor, bare SQLite insert+commit per transaction (WAL, synchronous=FULL), same "
          f"directory: {r.sqlite_commits_per_s:.0f} commits/s")
    print(f"  ratio closed-loop host TPS / anchor: {r.ratio:.2f}x")
    print(f"  CPU: server process {r.server_cpu_s:.1f} s, load generator {r.generator_cpu_s:.1f} s "
          f"in {r.wall_s:.1f} s wall; 1-min load average {r.load_average[0]:.2f} before, "
          f"{r.load_average[1]:.2f} after")
    print(f"  target >= 2000 TPS (closed loop) and p99 <= 50 ms "
          f"({'paced' if r.paced is not None else 'closed loop'}): "
          f"{'MET' if r.target_met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
