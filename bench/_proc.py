"""Process figures from /proc (Linux): CPU time and RSS of a process and its descendants.

``tree_cpu(pid)`` is user+system time of ``pid`` and every live descendant, plus
what their reaped children used (``cutime``/``cstime``), so the difference of two
readings is the CPU the whole tree spent between them -- a server's supervisor
and its workers, or a PostgreSQL postmaster and its backends. No psutil: it is not
a dependency of the project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = float(os.sysconf("SC_CLK_TCK"))
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: waited-for children
    rss_bytes: int


def proc_stat(pid: int) -> ProcStat | None:
    """One process's figures, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(pid, int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK,
                    int(fields[21]) * _PAGE)


def _all() -> dict[int, ProcStat]:
    out: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None:
                out[stat.pid] = stat
    return out


def tree(root: int) -> list[ProcStat]:
    """``root`` and its live descendants (empty when ``root`` is gone)."""
    procs = _all()
    if root not in procs:
        return []
    children: dict[int, list[int]] = {}
    for stat in procs.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(procs[pid])
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root``, its live descendants and their reaped children."""
    return sum(p.cpu_s + p.reaped_s for p in tree(root))


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its live descendants (shared pages counted per process)."""
    return sum(p.rss_bytes for p in tree(root))


def machine_cpu() -> dict[str, float]:
    """The whole machine's CPU seconds so far, summed over its CPUs (/proc/stat's first
    line): ``total``, ``idle`` (idle + I/O wait) and ``steal`` (time the hypervisor ran
    something else while this VM had work: on a shared VM, the CPU a latency figure lost
    to neighbours). Empty off Linux."""
    try:
        with open("/proc/stat") as stat:
            head = stat.readline().split()
    except OSError:
        return {}
    ticks = [int(v) for v in head[1:9]]  # user nice system idle iowait irq softirq steal
    ticks += [0] * (8 - len(ticks))
    return {"total": sum(ticks) / _TICK, "idle": (ticks[3] + ticks[4]) / _TICK,
            "steal": ticks[7] / _TICK}


def sched_times(pid: int) -> tuple[float, float] | None:
    """Seconds ``pid``'s main thread ran on a CPU and waited, runnable, for one
    (/proc/PID/schedstat); None when it is gone or the kernel keeps no schedstat."""
    try:
        run_ns, wait_ns, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def tree_sched(root: int) -> tuple[float, float] | None:
    """Seconds every thread of ``root`` and of its live descendants ran on a CPU and
    waited, runnable, for one (summed over /proc/PID/task/TID/schedstat): the wait is
    what an oversubscribed machine costs the tree. None when ``root`` is gone or the
    kernel keeps no schedstat."""
    run = wait = 0.0
    found = False
    for stat in tree(root):
        try:
            tids = os.listdir(f"/proc/{stat.pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                text = Path(f"/proc/{stat.pid}/task/{tid}/schedstat").read_text()
                run_ns, wait_ns, _ = text.split()
            except (OSError, ValueError):
                continue
            run += int(run_ns) / 1e9
            wait += int(wait_ns) / 1e9
            found = True
    return (run, wait) if found else None
