"""bench.host_load and bench.host_soak: their /proc readings, targets and bad arguments.

The benches themselves take minutes (they start servers and PostgreSQL); these checks
are the cheap parts: the CPU/RSS readings of a process tree, the MET/MISSED verdicts,
the one-line refusal of bad options, and host_load's load generator (its lanes) against
an in-process host for a fraction of a second, with and without faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench import _proc, host_load, host_soak
from emulator.host import AcquirerHost, SqliteLedgerStore
from emulator.host.faults import FaultPlan
from emulator.host.ledger import LedgerSession
from emulator.server import HostServer, ServerConfig, acquirer_server


def test_tree_cpu_counts_a_busy_child() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\n"
                              "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _proc.tree_cpu(child.pid) >= 0.25:
                break
            time.sleep(0.05)
        tree = _proc.tree(child.pid)
        assert [p.pid for p in tree] == [child.pid]
        assert _proc.tree_cpu(child.pid) >= 0.25
        assert _proc.tree_rss(child.pid) > 1_000_000
    finally:
        child.kill()
        child.wait()
    assert _proc.tree(child.pid) == []  # gone: nothing to count
    assert _proc.proc_stat(child.pid) is None


def _phase(tps: float, p99: float, host_s: float, failures: int = 0) -> host_load.PhaseResult:
    n = int(tps * 10)
    return host_load.PhaseResult(n, n, 0, n, failures, tps, 1.0, p99, 2.0, p99, host_s, None, 0.0)


def test_targets_met_and_missed() -> None:
    sq = host_load.ConfigResult("sqlite", "sqlite", 1, _phase(1000, 10, 10), _phase(1000, 40, 10))
    pg1 = host_load.ConfigResult("pg1", "postgresql", 1, _phase(600, 10, 12),
                                 _phase(1000, 60, 12))
    pg2 = host_load.ConfigResult("pg2", "postgresql", 2, _phase(500, 10, 10),
                                 _phase(0, 0, 1, failures=3))
    result = host_load.HostLoadResult(100, 10, 1000, [sq, pg1, pg2], 3000, None, None,
                                      10_000, 60)
    verdicts = {label.split(",")[-1].strip() if "paced" in label else label.split(" (")[0]: met
                for label, _, met in result.targets()}
    assert verdicts == {
        "PostgreSQL 1 worker >= 0.5x the SQLite host's TPS": True,  # 600 / 1000
        "sqlite": True,  # p99 40 ms
        "pg1": False,  # p99 60 ms
        "pg2": False,  # nothing answered: never MET
        "2 workers not slower than 1": False,  # 500 < 600
        "host CPU per transaction does not grow with workers": True,  # 2.0 <= 2.0 x 1.1
    }


def test_targets_not_measured_without_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    sq = host_load.ConfigResult("sqlite", "sqlite", 1, _phase(1000, 10, 10), None)
    missing = "PostgreSQL is not installed: apt-get install postgresql"
    pg1 = host_load.ConfigResult("pg1", "postgresql", 1, error=missing)
    result = host_load.HostLoadResult(100, 10, 0, [sq, pg1], 3000, None, missing, 10_000, 60)
    assert result.targets()[0][2] is None
    host_load.print_result(result)
    out = capsys.readouterr().out
    assert "not run: PostgreSQL is not installed" in out
    assert "NOT MEASURED" in out
    assert "10,000 terminals = 167 TPS at peak" in out


def _raw(latencies_ms: list[float], host_s: float, sales: int) -> host_load.Phase:
    phase = host_load.Phase(interval=0.1)
    phase.load.sales = sales
    phase.load.approved = len(latencies_ms)
    phase.load.latencies = [ms / 1000 for ms in latencies_ms]
    phase.cpu = {"host": host_s, "generator": 1.0}
    return phase


def _round(tps: float, p99: float, host_s: float, commits: int,
           slowest: float) -> tuple[host_load.ConfigResult, host_load.Phase, host_load.Phase]:
    closed = _raw([1.0] * int(tps), host_s, int(tps))
    paced = _raw([p99] * 10 + [1.0] * 990, host_s, 1000)
    c = host_load.ConfigResult("pg1", "postgresql", 1, host_load.PhaseResult.of(closed, 1.0),
                               host_load.PhaseResult.of(paced, 1.0),
                               {"commits": commits, "slowest_commit_ms": slowest})
    c.rounds = [host_load.RoundFigures.of(c)]
    return c, closed, paced


def test_rounds_pool_every_request_and_keep_each_round(
        capsys: pytest.CaptureFixture[str]) -> None:
    # round 1: a bad minute (1% of its paced requests at 400 ms); round 2: calm
    runs = [_round(1000, 400.0, 0.5, 100, 80.0), _round(3000, 2.0, 1.5, 300, 20.0)]
    c = host_load.combine(runs, 1.0)
    assert c.closed_loop is not None
    assert c.paced is not None
    assert c.closed_loop.transactions == 4000
    assert c.closed_loop.tps == 2000
    assert c.closed_loop.host_ms_per_txn == pytest.approx(0.5)  # 2.0 s / 4,000
    assert c.paced.transactions == 2000
    # 2,000 pooled: 1,980 at 1 ms, 10 at 2 ms, 10 at 400 ms; the 99th percentile is 2 ms
    assert c.paced.p99_ms == pytest.approx(2.0)
    assert c.paced.max_ms == pytest.approx(400.0)
    assert c.stats == {"commits": 400, "slowest_commit_ms": 80.0}  # added / largest
    assert [r.paced_p99_ms for r in c.rounds] == [pytest.approx(400.0), pytest.approx(2.0)]
    result = host_load.HostLoadResult(100, 1, 1000, [c], 3000, None, None, 10_000, 60, 2)
    host_load.print_result(result)
    out = capsys.readouterr().out
    assert "2 rounds, the configurations interleaved" in out
    assert "by round: closed-loop TPS 1000 / 3000" in out
    assert "paced p99 400.0 / 2.0 ms" in out


def test_the_machines_steal_is_pooled_and_shown_by_round(
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_round(1000, 400.0, 0.5, 100, 80.0), _round(3000, 2.0, 1.5, 300, 20.0)]
    # round 1's paced window: 2 CPUs x 1 s, 0.5 s stolen, 0.4 s idle; round 2: 0.02 s stolen
    for (c, _, paced), steal, idle in zip(runs, (0.5, 0.02), (0.4, 1.0), strict=True):
        paced.cpu.update({"machine_total": 2.0, "machine_steal": steal, "machine_idle": idle})
        c.paced = host_load.PhaseResult.of(paced, 1.0)
        c.rounds = [host_load.RoundFigures.of(c)]
    assert runs[0][0].paced is not None
    assert runs[0][0].paced.steal_share == pytest.approx(0.25)
    c = host_load.combine(runs, 1.0)
    assert c.paced is not None
    assert c.paced.steal_share == pytest.approx(0.13)  # 0.52 s of 4 CPU-seconds
    assert c.paced.idle_share == pytest.approx(0.35)
    assert c.closed_loop is not None
    assert c.closed_loop.steal_share is None  # not read: unknown, not zero
    host_load.print_result(host_load.HostLoadResult(100, 1, 1000, [c], 3000, None, None,
                                                    10_000, 60, 2))
    out = capsys.readouterr().out
    assert "13.0% of its CPU time stolen by the hypervisor (steal), 35.0% idle" in out
    assert "steal 25.0 / 1.0 %" in out


def test_the_hosts_wait_for_a_cpu_is_pooled_and_shown_beside_its_cpu(
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_round(1000, 2.0, 0.5, 100, 1.0), _round(3000, 2.0, 1.5, 300, 1.0)]
    # round 1's closed loop: 0.5 s on a CPU, 0.1 s waiting for one; round 2: 1.5 s and 0.9 s
    for (c, closed, _), waited in zip(runs, (0.1, 0.9), strict=True):
        closed.cpu["host_waited"] = waited
        c.closed_loop = host_load.PhaseResult.of(closed, 1.0)
        c.rounds = [host_load.RoundFigures.of(c)]
    assert runs[0][0].closed_loop is not None
    assert runs[0][0].closed_loop.host_wait_share == pytest.approx(0.2)
    c = host_load.combine(runs, 1.0)
    assert c.closed_loop is not None
    assert c.paced is not None
    assert c.closed_loop.host_wait_share == pytest.approx(0.5)  # 1.0 s beside 2.0 s
    assert c.paced.host_wait_share is None  # not read: unknown, not zero
    pg2 = host_load.ConfigResult("pg2", "postgresql", 2, _phase(2000, 10, 5), None)
    pg2.closed_loop = host_load.PhaseResult.of(_raw([1.0] * 2000, 5.0, 2000), 1.0)
    pg2.closed_loop.host_waited_s = 3.5
    pg2.closed_loop.generator_cpu_s = 1.1  # the same lanes' work, on a busier machine
    result = host_load.HostLoadResult(100, 1, 1000, [c, pg2], 3000, None, None, 10_000, 60, 2)
    host_load.print_result(result)
    out = capsys.readouterr().out
    assert "host's threads runnable but waiting for a CPU: 1.0 s (50% of their time on one)" in out
    assert "(waiting for a CPU 20 / 60 %)" in out
    assert "(host's threads waiting for a CPU: 70% vs 50% of their time on one)" in out
    # the load generator's work is the same in both: the machine's own slowdown
    assert "(the load generator, the same work in both: 0.550 vs 0.500 ms = 1.10x)" in out


def test_tree_sched_counts_every_thread_of_a_busy_child() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import threading, time\n"
                              "def spin():\n"
                              "    t = time.thread_time()\n"
                              "    while time.thread_time() - t < 0.2: pass\n"
                              "worker = threading.Thread(target=spin)\n"
                              "worker.start(); spin(); worker.join()\n"
                              "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        sched = _proc.tree_sched(child.pid)
        while time.monotonic() < deadline and (sched is None or sched[0] < 0.35):
            time.sleep(0.05)
            sched = _proc.tree_sched(child.pid)
        if sched is None:
            pytest.skip("this kernel keeps no schedstat")
        ran, waited = sched
        assert ran >= 0.35  # both threads' 0.2 s, not the main thread's alone
        assert waited >= 0.0
    finally:
        child.kill()
        child.wait()
    assert _proc.tree_sched(child.pid) is None  # gone


def test_machine_cpu_reads_this_machine() -> None:
    first = _proc.machine_cpu()
    assert first["total"] > 0
    assert 0 <= first["steal"] <= first["total"]
    assert 0 <= first["idle"] <= first["total"]
    time.sleep(0.05)
    assert _proc.machine_cpu()["total"] >= first["total"]


def test_a_round_that_could_not_start_is_reported() -> None:
    failed = host_load.ConfigResult("pg2", "postgresql", 2, error="ServeError: no answer")
    ok = _round(1000, 2.0, 0.5, 100, 1.0)
    c = host_load.combine([(failed, None, None), ok], 1.0)
    assert c.error == "ServeError: no answer"
    assert c.closed_loop is not None
    assert c.closed_loop.transactions == 1000
    assert host_load.combine([(failed, None, None)], 1.0) is failed


@pytest.mark.parametrize("argv", [["--configs", "oracle"], ["--seconds", "0"],
                                  ["--peak-interval", "-1"], ["--rounds", "0"],
                                  ["--slices", "0"], ["--slices", "-3"]])
def test_host_load_refuses_bad_options(argv: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert host_load.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("host_load: ")
    assert "Traceback" not in err


def test_host_load_wants_a_whole_number_of_slices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        host_load.main(["--slices", "2.5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--slices: invalid int value: '2.5'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--first", "0"], ["--rows", "10", "--first", "20"],
                                  ["--chunk", "0"]])
def test_host_soak_refuses_bad_options(argv: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert host_soak.main(argv) == 2
    assert capsys.readouterr().err.startswith("host_soak: ")


# --- the load generator's lanes against an in-process host ------------------------------------
LANES = 4


@contextlib.asynccontextmanager
async def _host(path: Path, faults: list[str] | None = None,
                ) -> AsyncIterator[HostServer[LedgerSession]]:
    """An in-process host on a fresh SQLite ledger with the lanes' terminals provisioned."""
    path.mkdir(exist_ok=True)
    store = SqliteLedgerStore(path / "ledger.db")
    host = AcquirerHost.from_store(store, "cup")
    store.commit([host.provision(tid, host_load.MID, host_load.TMK)
                  for tid in host_load.lane_tids(LANES)])
    server = acquirer_server(host, store, faults=FaultPlan.from_specs(faults or []),
                             rng=random.Random(3), config=ServerConfig(port=0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.close()


async def _drive_host(path: Path, faults: list[str] | None = None, *, seconds: float = 0.4,
                      rate: float = 40.0) -> tuple[host_load.Phase, host_load.Phase | None]:
    async with _host(path, faults) as server:
        assert server.address is not None
        return await host_load._drive(server.address[1], LANES, seconds, 0.1, rate, 5,
                                      lambda: {})


async def test_lanes_count_every_checked_answer(tmp_path: Path) -> None:
    closed, paced = await _drive_host(tmp_path)
    assert paced is not None
    for phase in (closed, paced):
        load = phase.load
        assert load.failures == 0
        assert load.sales > 0
        assert len(load.latencies) == load.sales + load.refunds == load.approved
        assert not load.declined  # the cards' balances last: nothing declined
        assert all(latency >= 0 for latency in load.latencies)
    assert closed.load.refunds > 0  # refunds of the lanes' own approved sales
    # paced: 4 lanes offer 40 TPS, one request each 0.1 s, over 0.4 s
    assert 8 <= len(paced.load.latencies) <= 20


def test_the_lanes_amounts_are_processed_normally() -> None:
    from emulator.host.codes import forced_code
    assert host_load.SALE_FEN
    assert host_load.REFUND_FEN
    assert all(forced_code(a) is None for a in host_load.SALE_FEN + host_load.REFUND_FEN)
    assert max(host_load.SALE_FEN) <= 10  # fen: the test cards' balances last a run


async def test_lanes_count_declines_by_response_code(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(host_load, "SALE_FEN", (51,))  # .51: the host answers 51
    closed, _ = await _drive_host(tmp_path, rate=0.0)
    load = closed.load
    assert load.sales > 0
    assert load.failures == 0
    assert load.approved == load.refunds == 0  # no approved sale: nothing to refund
    assert load.declined == {"51": load.sales}
    result = host_load.PhaseResult.of(closed, 0.4)
    assert result.declined == {"51": load.sales}
    host_load._print_phase("closed loop", result)
    assert f"declined, by response code: 51 x {load.sales}" in capsys.readouterr().out


async def test_lanes_fail_bad_answers_and_go_on(tmp_path: Path) -> None:
    closed, paced = await _drive_host(tmp_path, ["bad-mac@p=0.2", "close-after@p=0.05",
                                                 "twice@p=0.1"])
    assert paced is not None
    failures = closed.load.failures + paced.load.failures
    assert failures > 0  # a bad MAC or a closed connection is no answer
    assert closed.load.approved > 0  # a new connection, and on
    assert paced.load.approved > 0


async def test_lanes_time_out_a_dropped_answer(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_load, "LANE_TIMEOUT", 0.2)
    closed, _ = await _drive_host(tmp_path, ["drop@mti=0200,once"], rate=0.0)
    assert closed.load.failures == 1
    assert closed.load.approved > 0


def test_sched_times_read_this_process() -> None:
    import os

    times = _proc.sched_times(os.getpid())
    assert times is not None
    ran, waited = times
    assert ran > 0
    assert waited >= 0
    assert _proc.sched_times(2**22 + 1) is None  # no such process


def test_the_soak_prints_what_serve_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    result = host_soak.SoakResult("postgresql", 1_000_000)
    result.restart = host_soak.Restart(1.044, True, 47 * 2**20, 0.381, 0.612)
    host_soak.print_result(result)
    out = capsys.readouterr().out
    assert "first echo test answered 1044 ms after the process started" in out
    assert "MISSED" in out
    assert "381 ms on a CPU, 612 ms runnable but waiting for one" in out


# --- the closed loop in slices, alternated between configurations -----------------------------
def test_slices_alternate_the_configurations_in_the_rounds_order() -> None:
    assert host_load.slice_order(["pg1", "pg2", "sqlite"], 2) == [
        ("pg1", True), ("pg2", True), ("sqlite", True),
        ("pg1", False), ("pg2", False), ("sqlite", False)]
    assert host_load.slice_order(["sqlite"], 3) == [("sqlite", True), ("sqlite", False),
                                                    ("sqlite", False)]
    plan = host_load.Plan(100, 10.0, slices=4)
    assert plan.window == 2.5


class _Clock:
    """A configuration's fake CPU counters: ``rate`` CPU seconds per second of the loop's
    clock (so a window's delta says how long it was read over, and whose it was); every
    reading is logged with its configuration's name."""

    def __init__(self, name: str, rate: float, log: list[tuple[str, float]]) -> None:
        self.name, self.rate, self.log = name, rate, log

    def __call__(self) -> dict[str, float]:
        now = asyncio.get_running_loop().time()
        self.log.append((self.name, now))
        return {"host": now * self.rate, "generator": 1.0}


async def _two_hosts(tmp_path: Path, plan: host_load.Plan,
                     ) -> tuple[dict[str, host_load.Windows], list[tuple[str, float]], int]:
    """Two in-process hosts, "a" (1 CPU s/s) and "b" (1,000), driven as one round; their
    windows, the CPU readings in order, and how many requests the hosts answered in all."""
    log: list[tuple[str, float]] = []
    async with _host(tmp_path / "a") as a, _host(tmp_path / "b") as b:
        assert a.address is not None
        assert b.address is not None
        targets = [host_load.Target("a", a.address[1], _Clock("a", 1.0, log)),
                   host_load.Target("b", b.address[1], _Clock("b", 1000.0, log))]
        windows = await host_load.drive_round(targets, plan)
        return windows, log, a.stats.requests + b.stats.requests


async def test_slices_alternate_and_each_configurations_cpu_is_its_own(tmp_path: Path) -> None:
    plan = host_load.Plan(LANES, 0.3, warmup=0.1, prebuilt=5, slices=3, lead_in=0.1)
    windows, log, _ = await _two_hosts(tmp_path, plan)
    # read at each window's start and end, for that window's configuration only: the
    # closed-loop slices alternate a b a b a b
    assert [name for name, _ in log] == ["a", "a", "b", "b"] * 3
    for name, rate in (("a", 1.0), ("b", 1000.0)):
        slices = windows[name].slices
        assert len(slices) == 3
        for phase in slices:
            # a's counter is 1 s/s, b's 1,000 s/s: a delta read from the other's counter
            # or over more than the window would show here
            assert phase.cpu["host"] / rate == pytest.approx(plan.window, abs=0.05)
            assert phase.load.approved > 0
        closed = windows[name].closed  # pooled: the sum of the slices
        assert closed.cpu["host"] == pytest.approx(sum(p.cpu["host"] for p in slices))
        assert closed.cpu["host"] / rate == pytest.approx(plan.seconds, abs=0.1)
        assert closed.load.approved == sum(p.load.approved for p in slices)
        assert len(closed.load.latencies) == sum(len(p.load.latencies) for p in slices)
        assert windows[name].paced is None  # rate 0: no paced phase
    a_ends = [t for name, t in log if name == "a"][1::2]
    b_starts = [t for name, t in log if name == "b"][::2]
    # b's window starts after a's ended and a lead-in passed (and the other way round)
    assert all(b - a >= plan.lead_in - 0.01 for a, b in zip(a_ends, b_starts, strict=True))


async def test_the_lead_in_is_not_measured(tmp_path: Path) -> None:
    # windows of 0.05 s, each after 0.25 s of lead-in: most answers arrive in the lead-ins
    plan = host_load.Plan(LANES, 0.1, warmup=0.25, prebuilt=5, slices=2, lead_in=0.25)
    windows, log, answered = await _two_hosts(tmp_path, plan)
    counted = sum(len(w.closed.load.latencies) for w in windows.values())
    assert answered > 4 * LANES  # sign-ons and many exchanges in the lead-ins
    assert 0 < counted < answered / 3  # ~1/6 of them are in the windows
    for name, rate in (("a", 1.0), ("b", 1000.0)):
        for phase in windows[name].slices:  # the CPU is read over the window alone
            assert phase.cpu["host"] / rate == pytest.approx(0.05, abs=0.04)
    # a window's counters are read at its start, a lead-in after the one before ended
    starts = [t for _, t in log[::2]]
    assert all(later - earlier >= 0.25 for earlier, later in itertools.pairwise(starts))


def test_the_header_says_how_the_closed_loop_was_measured(
        capsys: pytest.CaptureFixture[str]) -> None:
    sq = host_load.ConfigResult("sqlite", "sqlite", 1, _phase(1000, 10, 10), None)
    for slices, said in ((5, "closed loop: 5 slices of 2.0 s per configuration, alternated"),
                         (1, "closed loop: one window of 10.0 s per configuration")):
        host_load.print_result(host_load.HostLoadResult(100, 10, 0, [sq], 3000, None, None,
                                                        10_000, 60, 3, slices))
        out = capsys.readouterr().out
        assert said in out.splitlines()[0]
        assert ("compare the code, not the minute" in out) == (slices > 1)


def test_the_cpu_comparison_shows_each_rounds_ratio() -> None:
    def config(name: str, host_ms: list[float]) -> host_load.ConfigResult:
        c = host_load.ConfigResult(name, "postgresql", int(name[2:]), _phase(1000, 10, 10),
                                   None)
        c.rounds = [host_load.RoundFigures(1000, ms, None, None, 0.0) for ms in host_ms]
        return c

    pg1, pg2 = config("pg1", [0.4, 0.5]), config("pg2", [0.44, 0.5])
    result = host_load.HostLoadResult(100, 10, 0, [pg1, pg2], 3000, None, None, 10_000, 60, 2)
    figures = {label: text for label, text, _ in result.targets()}
    cpu = next(text for label, text in figures.items() if label.startswith("host CPU"))
    assert cpu.startswith("1.000 ms vs 1.000 ms = 1.00x (by round 1.10 / 1.00)")
    pg2.rounds.pop()  # a round that did not run: no round-by-round pairs to show
    figures = {label: text for label, text, _ in result.targets()}
    cpu = next(text for label, text in figures.items() if label.startswith("host CPU"))
    assert cpu == "1.000 ms vs 1.000 ms = 1.00x"


_Spec = host_load.ConfigSpec


@pytest.mark.parametrize(("name", "parsed"), [
    ("sqlite", _Spec("sqlite", 1)), ("pg1", _Spec("postgresql", 1)),
    ("pg12", _Spec("postgresql", 12)), ("pg1+busy", _Spec("postgresql", 1, busy=True)),
    ("sqlite+busy", _Spec("sqlite", 1, busy=True)),
    ("pg1@50", _Spec("postgresql", 1, terminals=50)),
    ("pg2+busy@7", _Spec("postgresql", 2, busy=True, terminals=7)),
    ("pg0", None), ("pg", None), ("pg1+idle", None), ("pg+busy", None), ("+busy", None),
    ("pg1+busy+busy", None), ("oracle", None), ("pg1@", None), ("pg1@0", None),
    ("pg1@x", None), ("pg1@5@5", None), ("pg1@50+busy", None), ("@50", None)])
def test_configuration_names(name: str, parsed: host_load.ConfigSpec | None) -> None:
    assert host_load.parse_config(name) == parsed
    if parsed is not None:
        assert parsed.control == (parsed.busy or parsed.terminals is not None)


def test_the_default_run_has_both_controls() -> None:
    assert host_load.default_configs(100) == ("sqlite", "pg1", "pg2", "pg1+busy", "pg1@50")
    assert host_load.default_configs(7)[-1] == "pg1@3"
    assert host_load.default_configs(1)[-1] == "pg1@1"


def test_host_load_refuses_an_unknown_control(capsys: pytest.CaptureFixture[str]) -> None:
    assert host_load.main(["--configs", "pg1,pg1+idle,pg1@0"]) == 2
    assert "unknown configuration pg1+idle, pg1@0" in capsys.readouterr().err


def _state(pid: int, wanted: str) -> str:
    """``pid``'s state letter, once it is one of ``wanted`` (a signal is delivered
    asynchronously) or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        text = Path(f"/proc/{pid}/stat").read_text()
        state = text[text.rindex(")") + 2]
        if state in wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def test_the_neighbour_is_busy_only_when_asked() -> None:
    neighbour = host_load.Neighbour()
    pid = neighbour.proc.pid
    try:
        assert _state(pid, "T") == "T"  # made stopped: it runs in its windows only
        time.sleep(0.2)
        before = _proc.tree_cpu(pid)
        time.sleep(0.3)
        assert _proc.tree_cpu(pid) - before < 0.05
        neighbour.busy(True)
        assert _state(pid, "RS") in "RS"
        deadline = time.monotonic() + 20
        while _proc.tree_cpu(pid) - before < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _proc.tree_cpu(pid) - before >= 0.2  # it spins
        neighbour.busy(False)
        assert _state(pid, "T") == "T"
    finally:
        neighbour.stop()
    assert neighbour.proc.returncode is not None  # reaped, stopped or not
    neighbour.busy(True)  # a neighbour that is gone: nothing to signal, no error


async def test_a_control_is_busy_in_its_own_windows_and_not_paced(tmp_path: Path) -> None:
    plan = host_load.Plan(LANES, 0.2, warmup=0.05, rate=LANES / 0.05, prebuilt=8, slices=2,
                          lead_in=0.05)
    log: list[tuple[str, float]] = []
    switched: list[tuple[bool, int]] = []

    def busy(on: bool) -> None:  # what the neighbour is told, and how many CPU reads before
        switched.append((on, len(log)))

    async with _host(tmp_path / "a") as a, _host(tmp_path / "b") as b:
        assert a.address is not None
        assert b.address is not None
        targets = [host_load.Target("pg1", a.address[1], _Clock("pg1", 1.0, log)),
                   host_load.Target("pg1+busy", b.address[1], _Clock("pg1+busy", 1.0, log),
                                    busy=busy)]
        windows = await host_load.drive_round(targets, plan)
    # the control's slices alternate with pg1's; its neighbour is on from before each of
    # its windows' first CPU reading to after its last, and off in pg1's
    names = [name for name, _ in log]
    assert names[:8] == ["pg1", "pg1", "pg1+busy", "pg1+busy"] * 2
    assert switched == [(True, 2), (False, 4), (True, 6), (False, 8)]
    assert windows["pg1"].paced is not None  # pg1 is paced; the control is not
    assert windows["pg1+busy"].paced is None
    assert len(windows["pg1+busy"].slices) == 2


def test_the_control_is_shown_beside_the_cpu_verdict_and_nowhere_else(
        capsys: pytest.CaptureFixture[str]) -> None:
    def config(name: str, host_s: float, paced: bool) -> host_load.ConfigResult:
        spec = host_load.parse_config(name)
        assert spec is not None
        return host_load.ConfigResult(name, spec.kind, spec.workers, _phase(1000, 10, host_s),
                                      _phase(1000, 10, host_s) if paced else None)

    pg1, pg2 = config("pg1", 10, True), config("pg2", 11.5, True)
    busy, share = config("pg1+busy", 10.5, False), config("pg1@50", 10.8, False)
    result = host_load.HostLoadResult(100, 10, 1000, [pg1, pg2, busy, share], 3000, None,
                                      None, 10_000, 60)
    targets = result.targets()
    cpu = next((text, met) for label, text, met in targets if label.startswith("host CPU"))
    assert cpu == ("1.150 ms vs 1.000 ms = 1.15x (the control, 1 worker beside a busy "
                   "neighbour that shares nothing with it but the cores: 1.050 ms = 1.05x "
                   "1 worker) (the control, 1 worker with each of 2 workers' share of the "
                   "terminals, 50: 1.080 ms = 1.08x 1 worker)", False)  # still 2 vs 1
    assert not [label for label, _, _ in targets if "pg1+busy" in label or "@" in label]
    host_load.print_result(result)
    out = capsys.readouterr().out
    assert ("PostgreSQL, 1 worker, beside a busy neighbour (a process spinning on a CPU, "
            "sharing nothing with the host but the cores); a control") in out
    assert "PostgreSQL, 1 worker, 50 terminals; a control of the closed loop's CPU" in out
    projection = out.split("projection", 1)[1]
    assert "PostgreSQL, 1 worker:" in projection
    assert "control" not in projection  # no cores projected from a control
    result.configs.remove(busy)
    cpu = next((text, met) for label, text, met in result.targets()
               if label.startswith("host CPU"))
    assert cpu == ("1.150 ms vs 1.000 ms = 1.15x (the control, 1 worker with each of 2 "
                   "workers' share of the terminals, 50: 1.080 ms = 1.08x 1 worker)", False)
    result.configs.remove(share)
    cpu = next((text, met) for label, text, met in result.targets()
               if label.startswith("host CPU"))
    assert cpu == ("1.150 ms vs 1.000 ms = 1.15x", False)


async def test_a_control_with_its_own_terminals_has_them_and_the_same_sales(
        tmp_path: Path) -> None:
    plan = host_load.Plan(LANES, 0.1, warmup=0.05, rate=LANES / 0.05, prebuilt=6, slices=1,
                          lead_in=0.05)
    async with _host(tmp_path / "a") as a, _host(tmp_path / "b") as b:
        assert a.address is not None
        assert b.address is not None
        targets = [host_load.Target("pg1", a.address[1], lambda: {"host": 0.0}),
                   host_load.Target("pg1@2", b.address[1], lambda: {"host": 0.0},
                                    connections=LANES // 2)]
        lanes = await host_load._open_lanes(targets, plan)
        try:
            assert len(lanes["pg1"]) == LANES
            assert len(lanes["pg1@2"]) == LANES // 2
            # the same sales built for each configuration, however many lanes share them
            assert [len(lane.queue) for lane in lanes["pg1"]] == [6] * LANES
            assert [len(lane.queue) for lane in lanes["pg1@2"]] == [12] * (LANES // 2)
            windows = await host_load._measure(targets, lanes, plan)
        finally:
            for lane in lanes["pg1"] + lanes["pg1@2"]:
                lane.close()
    assert windows["pg1"].paced is not None
    assert windows["pg1@2"].paced is None  # a control: closed loop only
    assert windows["pg1@2"].closed.load.approved > 0
