"""``serve --workers N``: what it refuses, how the supervisor merges its workers' answers,
and a real supervisor (admin relay, restart of a killed worker with its faults, SIGTERM
answering the requests in flight, SIGINT, workers stopping when the supervisor dies).

The supervisor's tests run on a SQLite file (fast, and no PostgreSQL needed); the race
and kill tests (test_race.py, test_kill.py) run on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import cli
from emulator.catalogue import card_by_name
from emulator.client import HostClient
from emulator.server import UNAVAILABLE_FOR
from emulator.simterminal import Approved
from emulator.workers import (
    Supervisor,
    WorkerSpec,
    claim_once,
    hung_reason,
    merge_faults,
    merge_stats,
    workers_refusal,
)
from iso8583.trace import parse_trace
from tests.emulator.workerhost import WorkerHost, demo_terminal, fresh_database


# --- what --workers accepts -------------------------------------------------------------
def test_one_worker_takes_any_ledger() -> None:
    for ledger in (":memory:", "x.db", "postgresql://h/db"):
        assert workers_refusal(ledger, 1) is None


def test_postgresql_takes_several_workers() -> None:
    assert workers_refusal("postgresql://u@/db?host=/tmp/s", 4) is None
    assert workers_refusal("postgres://u@h/db", 2) is None


def test_a_memory_ledger_or_no_worker_is_refused() -> None:
    assert "memory ledger lives in one process" in str(workers_refusal(":memory:", 2))
    assert "at least 1" in str(workers_refusal("x.db", 0))


def test_sqlite_with_several_workers_follows_the_store() -> None:
    from emulator.host.ledger import SqliteLedgerStore

    refusal = workers_refusal("x.db", 2)
    if getattr(SqliteLedgerStore, "multi_process", False):
        assert refusal is None
    else:
        assert refusal is not None
        assert "postgresql://" in refusal


@pytest.mark.parametrize("argv", [
    ["serve", "--workers", "0"], ["serve", "--workers", "x"],
    ["serve", "--workers", "2", "--ledger", ":memory:"],
])
def test_bad_workers_is_one_line_and_exit_2(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


# --- merging the workers' answers -------------------------------------------------------
def test_stats_are_summed_and_the_slowest_is_the_max() -> None:
    one: dict[str, object] = {"requests": 3, "commit_seconds": 0.5, "largest_batch": 4,
                              "slowest_commit_ms": 9.0, "faults": {"drop": 1}}
    two: dict[str, object] = {"requests": 5, "commit_seconds": 0.25, "largest_batch": 2,
                              "slowest_commit_ms": 12.5, "faults": {"drop": 2, "delay": 1}}
    assert merge_stats([one, two]) == {"requests": 8, "commit_seconds": 0.75,
                                       "largest_batch": 4, "slowest_commit_ms": 12.5,
                                       "faults": {"drop": 3, "delay": 1}}
    assert merge_stats([]) == {}


def test_fault_lists_sum_fired_and_stay_armed_while_any_worker_is() -> None:
    first = [{"spec": "drop@once", "fired": 1, "armed": False},
             {"spec": "delay=5", "fired": 2, "armed": True}]
    second = [{"spec": "drop@once", "fired": 0, "armed": True},
              {"spec": "delay=5", "fired": 3, "armed": True}]
    assert merge_faults([first, second]) == [
        {"spec": "drop@once", "fired": 1, "armed": True},
        {"spec": "delay=5", "fired": 5, "armed": True}]
    assert merge_faults([None, "x"]) == []


async def test_stats_name_a_worker_that_got_ready_while_the_others_answered(
        tmp_path: Path) -> None:
    # worker 1 is restarting when the stats are asked for, and ready by the time worker 0
    # answered: it was not asked, so the answer has one per_worker entry and says why
    # (it had neither: the relay test read a second entry that was not there)
    supervisor = Supervisor(WorkerSpec(str(tmp_path / "ledger.db")), 2)
    supervisor.slots[0].ready = True

    async def ask(slot: Any, request: Any, **_: Any) -> dict[str, object]:
        supervisor.slots[1].ready = True  # the restarted worker said it listens meanwhile
        return {"ok": True, "stats": {"requests": 1}, "faults": []}

    supervisor._ask = ask  # type: ignore[method-assign]
    answer = await supervisor.handle_admin({"cmd": "stats"})
    assert [w["worker"] for w in answer["per_worker"]] == [0]  # type: ignore[attr-defined]
    assert answer["unanswered"] == ["worker 1: restarting"]
    again = await supervisor.handle_admin({"cmd": "stats"})  # both ready now: both asked
    assert len(again["per_worker"]) == 2  # type: ignore[arg-type]
    assert "unanswered" not in again


# --- a real supervisor --------------------------------------------------------------------
@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[WorkerHost]:
    """Two workers on a SQLite file (the supervisor does not care which shared ledger)."""
    if workers_refusal(str(tmp_path / "ledger.db"), 2) is not None:
        pytest.skip("the SQLite ledger is one process's")
    with WorkerHost(str(tmp_path / "ledger.db"), 2, "--faults", "code=05@amount=4321") as host:
        yield host


def _wait(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_admin_relay_restart_and_clean_stop(two_workers: WorkerHost) -> None:
    host = two_workers
    assert "workers 2" in host.banner
    assert "(group commit), workers 2" in host.banner
    assert "faults: code=05@amount=4321" in host.banner
    added = host.admin({"cmd": "add", "spec": "drop@card=cup-credit"})
    assert added["added"] == ["drop@card=cup-credit"]
    assert host.admin({"cmd": "add", "spec": "nonsense"})["ok"] is False
    stats = host.stats()
    assert stats["workers"] == 2
    assert len(stats["per_worker"]) == 2
    for worker in stats["per_worker"]:
        assert [f["spec"] for f in worker["faults"]] == ["code=05@amount=4321",
                                                         "drop@card=cup-credit"]
    assert {"requests", "commits", "connections_total"} <= set(stats["stats"])

    # a killed worker is logged and replaced, with the faults now in force
    victim = stats["per_worker"][1]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        now = host.stats()
        ready = "unanswered" not in now and now["per_worker"][1]["pid"] != victim
        return now if ready else None

    after = _wait(replaced)
    assert after["per_worker"][1]["restarts"] == 1
    assert [f["spec"] for f in after["per_worker"][1]["faults"]] == [
        "code=05@amount=4321", "drop@card=cup-credit"]
    _wait(lambda: "is back" in host.stderr)
    assert "was killed by SIGKILL" in host.stderr

    cleared = host.admin({"cmd": "clear"})
    assert cleared["cleared"] == 2
    assert host.admin({"cmd": "list"})["faults"] == []
    assert host.stop() == 0
    assert "Traceback" not in host.stderr
    assert host.proc.stdout is not None
    assert "2 workers" in host.proc.stdout.read()
    assert not host.admin_path.exists()


async def test_sigterm_answers_the_requests_in_flight(two_workers: WorkerHost) -> None:
    host = two_workers
    assert host.admin({"cmd": "add", "spec": "delay=1500@amount=4400"})["ok"]
    term = await demo_terminal(host.port)
    clients = [HostClient("127.0.0.1", host.port, "cup", timeout=15) for _ in range(6)]
    await asyncio.gather(*(c.connect() for c in clients))  # on both workers, most likely
    requests = [term.sale(card_by_name("cup-nopin"), 4_400) for _ in clients]
    await asyncio.gather(*(c.send(r) for c, r in zip(clients, requests, strict=True)))
    await asyncio.sleep(0.5)  # booked, answers held back by the delay
    host.proc.send_signal(signal.SIGTERM)
    frames = await asyncio.gather(*(c.receive() for c in clients))
    for request, frame in zip(requests, frames, strict=True):
        assert isinstance(term.check_response(request, frame.message, body=frame.body),
                          Approved)
    await asyncio.gather(*(c.close() for c in clients))
    assert await asyncio.to_thread(host.proc.wait, 30) == 0


def test_sigint_stops_every_worker(two_workers: WorkerHost) -> None:
    pids = two_workers.worker_pids()
    two_workers.proc.send_signal(signal.SIGINT)
    assert two_workers.proc.wait(30) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_stop_when_the_supervisor_is_killed(two_workers: WorkerHost) -> None:
    pids = two_workers.worker_pids()
    two_workers.proc.kill()
    two_workers.proc.wait(10)

    def gone() -> bool:
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            return False
        return True

    _wait(gone)
    _wait(lambda: two_workers.stderr.count("the supervisor is gone") == 2)


def test_a_ledger_that_cannot_be_opened_is_exit_2(pg_dsn: str, tmp_path: Path) -> None:
    url = fresh_database(pg_dsn, "gone")
    import psycopg

    base = url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(f"DROP DATABASE {base}")
    proc = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--port", "0", "--workers", "2",
         "--ledger", url, "--admin", "none"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert base in proc.stderr


@pytest.mark.parametrize(("workers", "env", "commits"), [
    (1, {}, "commits ahead"),
    (2, {}, "one round trip a group"),
    (2, {"POS_PG_COMMIT_AHEAD": "1"}, "commits ahead"),
])
def test_serve_says_how_postgresql_commits_one_process_ahead_several_one_trip(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch, workers: int, env: dict[str, str],
        commits: str) -> None:
    from emulator.host.pgledger import COMMIT_AHEAD_ENV, ONE_TRIP_ENV
    for name in (COMMIT_AHEAD_ENV, ONE_TRIP_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with WorkerHost(fresh_database(pg_dsn, "modes"), workers) as host:
        assert re.search(rf"ledger postgresql://\S+ \({commits}\), "
                         rf"{'workers 2, ' if workers > 1 else ''}loop ", host.banner), \
            host.banner


def test_port_in_use_is_exit_2(two_workers: WorkerHost) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--port", str(two_workers.port),
         "--workers", "2", "--ledger", two_workers.ledger, "--admin", "none"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the watchdog and the counters of replaced workers ------------------------------------
def test_hung_means_silent_for_the_timeout_or_a_session_past_the_ledger_retry_window() -> None:
    assert hung_reason(0.2, 0.0, 10) is None
    assert hung_reason(9.9, None, 10) is None  # no answer yet, not for long enough
    assert hung_reason(10.0, None, 10) == "has not answered for 10.0 s"
    # a ledger that is down is retried for UNAVAILABLE_FOR: that is not a hang
    assert hung_reason(0.5, UNAVAILABLE_FOR + 9.0, 10) is None
    assert hung_reason(0.5, UNAVAILABLE_FOR + 10.0, 10) == (
        f"has been in one ledger session for {UNAVAILABLE_FOR + 10:.1f} s")
    assert hung_reason(0.5, "x", 10) is None


def test_a_hung_worker_is_killed_and_restarted(tmp_path: Path) -> None:
    if workers_refusal(str(tmp_path / "ledger.db"), 2) is not None:
        pytest.skip("the SQLite ledger is one process's")
    with WorkerHost(str(tmp_path / "ledger.db"), 2, "--worker-timeout", "2") as host:
        victim = host.worker_pids()[0]
        os.kill(victim, signal.SIGSTOP)  # alive, but it answers nothing: hung
        started = time.monotonic()

        def replaced() -> dict[str, Any] | None:
            now = host.stats()
            first = now["per_worker"][0]
            fresh = "unanswered" not in now and first["pid"] != victim
            return now if fresh else None

        after = _wait(replaced, timeout=30)
        took = time.monotonic() - started
        assert after["per_worker"][0]["restarts"] == 1
        assert 1.5 < took < 20, took  # not before the timeout, not long after it
        with pytest.raises(ProcessLookupError):
            os.kill(victim, 0)
        _wait(lambda: "is back" in host.stderr)
        assert f"worker 0 (pid {victim}) has not answered for" in host.stderr
        assert "killing it" in host.stderr
        assert host.stop() == 0
        assert "Traceback" not in host.stderr


async def test_a_worker_waiting_for_another_process_s_write_lock_is_not_hung(
        tmp_path: Path) -> None:
    """Another process holds the SQLite file's write lock for twice ``--worker-timeout``
    while a worker has a sale to book: the worker waits for the lock without blocking its
    event loop, so it answers the supervisor's heartbeats (and the admin's stats) all along
    and is not killed; the sale is approved once the lock is free. (Before: the worker
    waited in SQLite's busy handler on its loop's thread, went silent and was killed.)"""
    ledger = tmp_path / "ledger.db"
    if workers_refusal(str(ledger), 2) is not None:
        pytest.skip("the SQLite ledger is one process's")
    with WorkerHost(str(ledger), 2, "--worker-timeout", "1.5") as host:
        term = await demo_terminal(host.port)
        other = sqlite3.connect(ledger, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        async with HostClient("127.0.0.1", host.port, "cup", timeout=20) as client:
            sale = asyncio.create_task(
                client.exchange(term.sale(card_by_name("cup-nopin"), 1_300)))
            held = time.monotonic()
            while time.monotonic() - held < 3.0:
                stats = await asyncio.to_thread(host.stats)  # relayed to the worker
                assert "unanswered" not in stats, (stats, host.stderr)
                assert not sale.done()  # it waits for the lock
                await asyncio.sleep(0.2)
            other.execute("ROLLBACK")
            other.close()
            frame = await sale
        assert frame.message.get(39) == "00"
        assert [w["restarts"] for w in host.stats()["per_worker"]] == [0, 0], host.stderr
        assert host.stop() == 0
    assert "killing it" not in host.stderr


async def test_a_replaced_workers_requests_still_count(two_workers: WorkerHost) -> None:
    host = two_workers
    term = await demo_terminal(host.port)
    clients = [HostClient("127.0.0.1", host.port, "cup", timeout=10) for _ in range(6)]
    for client in clients:  # new connections: the kernel spreads them over both workers
        async with client:
            frame = await client.exchange(term.sale(card_by_name("cup-nopin"), 1_200))
            assert frame.message.get(39) == "00"
    before = await asyncio.to_thread(host.stats)  # also what the supervisor last heard
    busiest = max(before["per_worker"], key=lambda w: w["stats"]["requests"])
    assert busiest["stats"]["requests"] > 0
    os.kill(busiest["pid"], signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        now = host.stats()
        back = "unanswered" not in now and busiest["pid"] not in (
            w["pid"] for w in now["per_worker"])
        return now if back else None

    after = await asyncio.to_thread(_wait, replaced)
    assert after["replaced_workers"] == 1
    assert after["stats"]["requests"] >= before["stats"]["requests"] == 7
    assert after["stats"]["commits"] >= before["stats"]["commits"]
    assert await asyncio.to_thread(host.stop) == 0
    assert host.proc.stdout is not None
    assert "7 requests" in host.proc.stdout.read()


async def test_a_once_fault_fires_once_for_the_host_and_stays_spent_in_a_restarted_worker(
        two_workers: WorkerHost) -> None:
    host = two_workers
    assert host.admin({"cmd": "add", "spec": "code=96@amount=1300,once"})["ok"]
    term = await demo_terminal(host.port)
    before = [w["stats"]["requests"]
              for w in (await asyncio.to_thread(host.stats))["per_worker"]]
    codes = []
    for _ in range(8):  # one connection each, one after the other: spread over both workers
        async with HostClient("127.0.0.1", host.port, "cup", timeout=10) as client:
            frame = await client.exchange(term.sale(card_by_name("cup-nopin"), 1_300))
            codes.append(frame.message.get(39))
    served = [w["stats"]["requests"] - n for w, n in zip(
        (await asyncio.to_thread(host.stats))["per_worker"], before, strict=True)]
    if 0 in served:
        pytest.skip(f"the kernel gave every connection to one worker ({served})")
    # both workers saw the amount: without the relay each would have fired the rule
    assert codes.count("96") == 1, codes
    assert codes[0] == "96"  # the first one, wherever it landed

    def spent(answer: dict[str, Any]) -> bool:
        rule = [f for f in answer["faults"] if f["spec"] == "code=96@amount=1300,once"]
        return rule == [{"spec": "code=96@amount=1300,once", "fired": 1, "armed": False}]

    assert spent(host.admin({"cmd": "list"}))
    # a worker started afterwards does not arm it again
    victim = host.worker_pids()[1]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        now = host.stats()
        back = "unanswered" not in now and now["per_worker"][1]["pid"] != victim
        return now if back else None

    after = await asyncio.to_thread(_wait, replaced)
    for worker in after["per_worker"]:
        rule = [f for f in worker["faults"] if f["spec"] == "code=96@amount=1300,once"]
        assert rule[0]["armed"] is False
    assert host.admin({"cmd": "clear"})["ok"]
    assert host.admin({"cmd": "add", "spec": "code=96@amount=1300,once"})["ok"]
    listed: Any = host.admin({"cmd": "list"})["faults"]
    assert listed[0]["armed"] is True  # a new rule, armed


async def test_a_once_fault_matched_by_both_workers_at_the_same_moment_fires_once(
        two_workers: WorkerHost) -> None:
    host = two_workers
    spec = "code=96@amount=1400,once"
    term = await demo_terminal(host.port)
    for round_ in range(3):  # each round: armed anew, then matched on every connection at once
        assert host.admin({"cmd": "clear"})["ok"]
        assert host.admin({"cmd": "add", "spec": spec})["ok"]
        before = [w["stats"]["requests"]
                  for w in (await asyncio.to_thread(host.stats))["per_worker"]]
        clients = [HostClient("127.0.0.1", host.port, "cup", timeout=10) for _ in range(16)]
        for client in clients:
            await client.__aenter__()
        try:
            sales = [term.sale(card_by_name("cup-nopin"), 1_400) for _ in clients]
            frames = await asyncio.gather(*(c.exchange(m) for c, m in zip(clients, sales,
                                                                          strict=True)))
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
        codes = [f.message.get(39) for f in frames]
        served = [w["stats"]["requests"] - n for w, n in zip(
            (await asyncio.to_thread(host.stats))["per_worker"], before, strict=True)]
        if 0 in served:
            continue  # the kernel gave every connection to one worker: no race this round
        assert codes.count("96") == 1, (round_, codes, served)
        listed: Any = host.admin({"cmd": "list"})["faults"]
        assert listed == [{"spec": spec, "fired": 1, "armed": False}], listed


async def test_both_workers_record_whole_lines_to_one_iso_trace(tmp_path: Path) -> None:
    trace = tmp_path / "host.jsonl"
    with WorkerHost(str(tmp_path / "ledger.db"), 2, "--trace", str(trace)) as host:
        term = await demo_terminal(host.port)
        before = [w["stats"]["requests"]
                  for w in (await asyncio.to_thread(host.stats))["per_worker"]]
        clients = [HostClient("127.0.0.1", host.port, "cup", timeout=10) for _ in range(12)]
        for client in clients:
            await client.__aenter__()
        try:  # all at once: the workers write at the same moments
            sales = [term.sale(card_by_name("cup-nopin"), 2_000 + 100 * i) for i in range(12)]
            frames = await asyncio.gather(*(c.exchange(m) for c, m in zip(clients, sales,
                                                                          strict=True)))
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
        assert [f.message.get(39) for f in frames] == ["00"] * 12
        served = [w["stats"]["requests"] - n for w, n in zip(
            (await asyncio.to_thread(host.stats))["per_worker"], before, strict=True)]
        assert await asyncio.to_thread(host.stop) == 0
    lines = [json.loads(raw) for raw in trace.read_text().splitlines()]  # each one whole
    metas = [line for line in lines if line["kind"] == "meta"]
    assert sorted(m["worker"] for m in metas) == [0, 1]
    entries = parse_trace(trace.read_text(), name="host.jsonl")
    assert len(entries) == 2 * (1 + 12)  # the sign-on and the sales, each asked and answered
    amounts = sorted(e.view["4"] for e in entries if e.mti == "0210")
    assert amounts == [f"{2_000 + 100 * i:012d}" for i in range(12)]
    if 0 not in served:  # the kernel spread the connections: both recorded frames
        assert len({m["pid"] for m in metas}) == 2


def test_a_once_rule_is_claimed_by_one_process_only(tmp_path: Path) -> None:
    assert claim_once(tmp_path, 0, "drop@once")
    assert not claim_once(tmp_path, 0, "drop@once")  # the second process to ask
    assert claim_once(tmp_path, 1, "drop@once")  # another rule: another index
    assert claim_once(tmp_path, 0, "code=96@once")  # or another text at that index
    assert claim_once(tmp_path / "gone", 0, "drop@once")  # no directory: fires, as alone
