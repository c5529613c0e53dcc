"""Instructions a transaction of the acquirer host, 1 worker vs 2: the work, not the machine.

``bench.host_load`` counts CPU *seconds* a transaction. On a machine whose cores the
host's workers share with PostgreSQL and the load generator, a second worker makes the
same work take longer (each wake-up lands on a CPU whose caches the others used), so
that ratio mixes what the host does with how fast the machine ran it. Callgrind counts
the *instructions* the host's processes ran: the same code doing the same work counts
the same, whatever else the machine is doing. What grows with workers there is what
the workers do more: smaller groups (each sees part of the terminals) and anything
one worker makes another do (a lock waited for in a loop, a conflict run again).

For each configuration, on a private PostgreSQL cluster (as bench.host_load): ``serve``
is started under ``valgrind --tool=callgrind --trace-children=yes`` (so every worker
is counted) on a fresh database with the lanes' terminals provisioned; the lanes sign
on; then one closed-loop window of ``--seconds``. Under valgrind the host runs ~50x
slower, so the host is the bottleneck and its groups are as large as its lanes allow.
The counts are zeroed as the window starts and dumped as it ends (``callgrind_control``
on each of the host's processes), summed over the processes and divided by the
financial transactions answered in the window; the server's counters, read at the same
moments, give the groups committed in it. ``callgrind_control`` takes a moment to
reach a process: how long the zeroing and the dump took is printed (work in that time
is counted on one side of the division only).

With ``--fit-connections`` (default 10) 1 worker runs a second time with that many
connections (smaller groups); from its two windows, instructions a transaction =
per request + per group / requests a group, solved for both.

    .venv/bin/python -m bench.host_instructions [--connections 100] [--seconds 30]
                                                [--fit-connections 10] [--dir DIR]

Target (issue 10's "the host's CPU per transaction does not grow with workers (no
cross-process contention)", counted in instructions): 2 workers' instructions a
transaction <= 1.10x 1 worker's at the same connections. Needs valgrind (apt-get install
valgrind) and PostgreSQL; takes ~2 minutes a configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._proc import tree
from bench._util import work_dir
from bench.host_load import (
    CPU_GROWTH_TOLERANCE,
    Host,
    _drive,
    pg_cluster,
    pg_database,
    pg_missing,
)

#: seconds serve may take to listen under valgrind (Python's start runs ~50x slower)
START_TIMEOUT = 600.0
#: what a callgrind dump's total line looks like ("summary: 123" or "totals: 123")
_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def valgrind_missing() -> str | None:
    """Why callgrind cannot run here, or None."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return "valgrind is not installed: apt-get install valgrind (Debian)"
    return None


def dump_total(text: str) -> int:
    """The instructions a callgrind dump counted (its ``summary:`` or ``totals:`` line)."""
    found = _TOTAL.search(text)
    if found is None:
        raise ValueError("no summary or totals line: not a callgrind dump")
    return int(found.group(1))


@dataclass
class Window:
    """One configuration's closed-loop window under callgrind."""

    name: str
    workers: int
    connections: int
    transactions: int = 0
    groups: int = 0
    by_process: dict[str, int] = field(default_factory=dict)  # command -> instructions
    zero_s: float = 0.0  # how long callgrind_control took to zero the counts
    dump_s: float = 0.0  # and to dump them
    error: str | None = None

    @property
    def instructions(self) -> int:
        return sum(self.by_process.values())

    @property
    def per_transaction(self) -> float:
        return self.instructions / self.transactions if self.transactions else 0.0

    @property
    def group_size(self) -> float:
        return self.transactions / self.groups if self.groups else 0.0


def fit(small: Window, large: Window) -> tuple[float, float] | None:
    """(instructions a request, a group) from two windows of one configuration whose group
    sizes differ: per_transaction = a + g / group_size, solved; None when they cannot
    tell the two apart (same group size, or a window without groups)."""
    if not (small.groups and large.groups):
        return None
    x1, x2 = 1 / small.group_size, 1 / large.group_size
    if abs(x1 - x2) < 1e-9:
        return None
    per_group = (small.per_transaction - large.per_transaction) / (x1 - x2)
    return large.per_transaction - per_group * x2, per_group


def measure(name: str, connections: int, seconds: float, work: Path, dsn: str,
            postmaster: int) -> Window:
    """``name`` (pg1, pg2) at ``connections``: one closed-loop window under callgrind."""
    workers = int(name[2:])
    window = Window(name, workers, connections)
    out = work / f"{name}-{connections}"
    out.mkdir()
    wrapper = ("valgrind", "--tool=callgrind", "--trace-children=yes",
               f"--callgrind-out-file={out}/cg.%p")
    ledger = pg_database(dsn, f"instr_{name}_{connections}")
    host = Host(name, ledger, work / f"admin-{name}-{connections}.sock", connections,
                postmaster, wrapper, START_TIMEOUT)
    if host.serve is None:
        window.error = host.result.error
        return window
    serve = host.serve
    pids: list[int] = []
    marks: list[dict[str, float]] = []

    def control(action: str) -> float:
        started = time.perf_counter()
        subprocess.run(["callgrind_control", action, *map(str, pids)], check=False,
                       capture_output=True, timeout=120)
        return time.perf_counter() - started

    def read() -> dict[str, float]:
        if not pids:  # the window starts: every process of the host (the workers are up)
            pids.extend(stat.pid for stat in tree(serve.proc.pid))
            window.zero_s = control("--zero")
        else:
            window.dump_s = control("--dump")
        stats = serve.stats()
        marks.append({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        return {}

    try:
        # sales built before the clock: a handful each (every one goes through the host)
        closed, _ = asyncio.run(_drive(serve.port, connections, seconds, 5.0, 0.0, 3, read))
    finally:
        host.stop()  # (callgrind writes each process's last dump at exit: not read)
    window.transactions = closed.load.sales + closed.load.refunds
    if len(marks) == 2:
        window.groups = int(marks[1].get("commits", 0) - marks[0].get("commits", 0))
    for pid in pids:
        dump = out / f"cg.{pid}.1"
        if dump.exists():
            text = dump.read_text(errors="replace")
            command = next((line[5:].strip() for line in text.splitlines()
                            if line.startswith("cmd:")), str(pid))
            window.by_process[_process_name(command, pid)] = dump_total(text)
    if not window.by_process:
        window.error = "no callgrind dump was written"
    return window


def _process_name(command: str, pid: int) -> str:
    """What a dump's ``cmd:`` line was, in a word: the serve process or a worker."""
    if "emulator.workers" in command:
        return f"worker (pid {pid})"
    return "serve" if " serve " in f" {command} " else f"pid {pid}"


def run(connections: int = 100, seconds: float = 30.0, fit_connections: int | None = 10,
        directory: Path | None = None) -> tuple[list[Window], str | None]:
    """Every window (pg1 and pg2 at ``connections``, then pg1 at ``fit_connections``), or
    why none could run."""
    missing = valgrind_missing() or pg_missing()
    if missing is not None:
        return [], missing
    base = directory if directory is not None else Path.cwd()
    runs = [("pg1", connections), ("pg2", connections)]
    if fit_connections:
        runs.append(("pg1", fit_connections))
    with tempfile.TemporaryDirectory(dir=base, prefix="host-instr-") as tmp:
        work = Path(tmp)
        with pg_cluster(work / "pg") as (dsn, postmaster):
            return [measure(name, n, seconds, work, dsn, postmaster) for name, n in runs], None


def report(windows: list[Window], missing: str | None, seconds: float) -> list[str]:
    """The lines the benchmark prints."""
    if missing is not None:
        return [f"host_instructions: not run: {missing}"]
    lines = [f"host_instructions: callgrind, one closed-loop window of {seconds:.0f} s per "
             "configuration (the host under valgrind: its groups as large as its lanes allow)"]
    for w in windows:
        title = f"PostgreSQL, {w.workers} worker{'s' if w.workers > 1 else ''}, " \
                f"{w.connections} connections"
        if w.error is not None:
            lines.append(f"  {title}: {w.error}")
            continue
        parts = ", ".join(f"{who} {n / 1e6:,.1f}M" for who, n in w.by_process.items())
        lines.append(f"  {title}: {w.transactions:,} transactions, {w.groups:,} groups "
                     f"({w.group_size:.1f} requests a group): {w.instructions:,} instructions "
                     f"= {w.per_transaction / 1e3:,.0f}k a transaction ({parts}; zeroed in "
                     f"{w.zero_s:.2f} s, dumped in {w.dump_s:.2f} s)")
    ok = [w for w in windows if w.error is None and w.transactions]
    one = next((w for w in ok if w.workers == 1), None)
    two = next((w for w in ok if w.workers == 2 and one is not None
                and w.connections == one.connections), None)
    small = next((w for w in ok if w.workers == 1 and one is not None
                  and w.connections != one.connections), None)
    if one is not None and small is not None:
        solved = fit(small, one)
        if solved is not None:
            lines.append(f"  fit, 1 worker at {small.connections} and {one.connections} "
                         f"connections: {solved[0] / 1e3:,.0f}k instructions a request + "
                         f"{solved[1] / 1e3:,.0f}k a group")
    lines.append("targets:")
    label = (f"host instructions per transaction do not grow with workers (2 <= 1 x "
             f"{CPU_GROWTH_TOLERANCE:.2f}, same connections)")
    if one is None or two is None:
        lines.append(f"  {label}: not measured: NOT MEASURED")
    else:
        ratio = two.per_transaction / one.per_transaction
        met = ratio <= CPU_GROWTH_TOLERANCE
        lines.append(f"  {label}: {two.per_transaction / 1e3:,.0f}k vs "
                     f"{one.per_transaction / 1e3:,.0f}k = {ratio:.3f}x (groups of "
                     f"{two.group_size:.1f} vs {one.group_size:.1f} requests): "
                     f"{'MET' if met else 'MISSED'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="the measured closed-loop window of each configuration")
    parser.add_argument("--fit-connections", type=int, default=10,
                        help="1 worker again at this many connections (0: not)")
    parser.add_argument("--dir", type=work_dir, default=None,
                        help="where the cluster and the dumps live (default: here)")
    args = parser.parse_args(argv)
    windows, missing = run(args.connections, args.seconds, args.fit_connections or None,
                           args.dir)
    for line in report(windows, missing, args.seconds):
        print(line)
    return 0 if missing is None and all(w.error is None for w in windows) else 1


if __name__ == "__main__":
    sys.exit(main())
