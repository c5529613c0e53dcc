"""Kill: SIGKILL a host worker, or restart PostgreSQL, while terminals are busy.

A real ``pos-emulator serve --workers N --ledger postgresql://...`` and a dozen
terminal tasks (one connection each, as a terminal dials) doing sales, refunds
and voids. Recovery is a terminal's: a refund advice is resent unchanged (same
STAN) until answered, an unanswered sale or void is reversed (the reversal
resent until answered). Afterwards: every approval a terminal saw is in the
ledger with the answer it saw (a resent advice got the stored answer: one row,
the same RRN), every reversed sale is reversed or was never booked, and the
money rules hold over the whole ledger.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.client import (
    HostClient,
    NoAnswerError,
    recovery_policy,
    resend_until_answered,
    sign_on,
)
from emulator.simterminal import Approved, Declined, Result, SimTerminal
from iso8583.errors import ResponseError, ResponseMacError
from iso8583.message import Message
from iso8583.responses import ISSUER_TIMEOUT, MAC_ERROR, TerminalAction, explain
from tests import pgcluster
from tests.emulator.workerhost import (
    WorkerHost,
    check_money,
    demo_terminal,
    fresh_database,
    ledger_rows,
    shared_ledger,
)

CARDS = (("cup-debit", "123456"), ("cup-nopin", None))


@dataclass
class Seen:
    """What the terminals saw: approvals, reversed requests, how often they had to resend."""

    approved: list[Approved] = field(default_factory=list)
    reversed: list[str] = field(default_factory=list)  # ledger keys of reversed requests
    resent: int = 0
    lost: int = 0  # requests that got no answer at the first try
    declined: Counter[str] = field(default_factory=Counter)  # by response code

    def count(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for a in self.approved:
            kinds[a.kind] = kinds.get(a.kind, 0) + 1
        return kinds


async def _pause(attempt: int) -> None:
    await asyncio.sleep(min(0.05 * attempt, 0.5))


async def exchange(term: SimTerminal, client: HostClient, request: Message,
                   seen: Seen) -> Result | None:
    """Send ``request`` and recover as a terminal does, pausing between tries."""
    if recovery_policy(term.dialect, request) == "resend":
        result, attempts = await resend_until_answered(term, client, request,
                                                       max_attempts=400, pause=_pause)
        seen.resent += attempts - 1
        seen.lost += attempts > 1
    else:
        try:
            frame = await client.exchange(request)
            result = term.check_response(request, frame.message, body=frame.body)
        except (NoAnswerError, ResponseError) as exc:
            await client.close()
            seen.lost += 1
            reason = MAC_ERROR if isinstance(exc, ResponseMacError) else ISSUER_TIMEOUT
            reversal = term.reversal(request, reason)
            answer, attempts = await resend_until_answered(term, client, reversal,
                                                           max_attempts=400, pause=_pause)
            seen.resent += attempts - 1
            assert not isinstance(answer, Declined), answer
            seen.reversed.append(f"{term.tid}/{term.batch}/{request.stan}/{request.mti}")
            return None
    if isinstance(result, Approved):
        seen.approved.append(result)
        return result
    seen.declined[result.response_code] += 1
    if explain(result.response_code).terminal_action is TerminalAction.SIGN_ON_AGAIN:
        await sign_on(term, client, max_attempts=400)
    return result


async def terminal_task(term: SimTerminal, port: int, seen: Seen, stop: asyncio.Event,
                        rng: random.Random) -> None:
    """Sales; a refund of part of most of them; a void of some.

    Amounts of 0.20-1.80 yuan (refunds of half: never a magic ending), so the test cards'
    balances outlast any run: at whole tens of yuan a fast machine spent cup-debit's and
    cup-nopin's 100,000 each while six kills were under way, every sale after was
    declined 51, and the test timed out waiting for approvals."""
    client = HostClient("127.0.0.1", port, "cup", timeout=3, connect_timeout=2)
    try:
        while not stop.is_set():
            name, pin = CARDS[rng.randrange(len(CARDS))]
            amount = rng.randrange(1, 10) * 20
            sale = await exchange(term, client, term.sale(card_by_name(name), amount, pin=pin),
                                  seen)
            if not isinstance(sale, Approved):
                continue
            if rng.random() < 0.25:
                await exchange(term, client, term.void(sale), seen)
            else:
                await exchange(term, client, term.refund(sale, amount // 2), seen)
    finally:
        await client.close()


async def until(condition: Callable[[], bool], what: str | Callable[[], str],
                timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            text = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out waiting for {text}")
        await asyncio.sleep(0.02)


async def load(port: int, terminals: int, disturb: Callable[[], None], *, warm: int,
               cool: int, seed: int) -> tuple[Seen, SimTerminal]:
    """Run the terminals; ``disturb()`` (in a thread) once ``warm`` approvals were seen;
    stop once ``cool`` more came after it returned, letting every terminal finish what
    it started. (Counted, not timed: the same test on a busy machine.)"""
    term = await demo_terminal(port)
    seen = Seen()
    stop = asyncio.Event()
    rng = random.Random(seed)
    tasks = [asyncio.create_task(terminal_task(term, port, seen, stop,
                                               random.Random(rng.random())))
             for _ in range(terminals)]
    try:
        await until(lambda: len(seen.approved) >= warm, "load before the disturbance")
        await asyncio.to_thread(disturb)
        after = len(seen.approved)
        await until(lambda: len(seen.approved) >= after + cool,
                    lambda: f"approvals after it ({len(seen.approved) - after} of {cool}; "
                            f"lost {seen.lost}, resent {seen.resent}, "
                            f"reversed {len(seen.reversed)}, declined "
                            f"{dict(seen.declined)} in all)")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return seen, term


def check_after(url: str, seen: Seen) -> None:
    rows = ledger_rows(url)
    check_money(rows, seen.approved)
    by_key = {r.key: r for r in rows}
    for key in seen.reversed:  # reversed by the terminal: never left standing
        row = by_key.get(key)
        assert row is None or row.status in ("reversed", "declined"), row


# --- SIGKILL one worker ---------------------------------------------------------------------
@pytest.fixture(params=["postgresql", "sqlite"])
def three_workers(request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[tuple[WorkerHost, str]]:
    url = shared_ledger(request.param, request, tmp_path)
    with WorkerHost(url, 3) as host:
        yield host, url


async def run_kill(host: WorkerHost, url: str, *, terminals: int, kills: int, warm: int,
                   cool: int, seed: int) -> Seen:
    killed: list[int] = []
    opened: list[list[int]] = []  # connections open on each worker before each kill

    def kill_one() -> None:
        for _ in range(kills):
            workers = host.stats()["per_worker"]
            # the busiest worker: the kill must cut connections in use
            victim = max(workers, key=lambda w: w["stats"]["connections_open"])["pid"]
            opened.append([w["stats"]["connections_open"] for w in workers])
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the supervisor replaced it
                stats = host.stats()
                if "unanswered" not in stats and victim not in host.worker_pids():
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"worker {victim} was not replaced")
            if len(killed) < kills:
                time.sleep(0.5)

    try:
        seen, _ = await load(host.port, terminals, kill_one, warm=warm, cool=cool, seed=seed)
    except AssertionError as exc:  # what the workers said is the evidence of a flake
        tail = "".join(host.stderr_lines[-40:])
        raise AssertionError(f"{exc}\nthe workers' last lines:\n{tail}") from None
    check_after(url, seen)
    assert seen.lost > 0, f"the kill hit no request in flight (connections {opened})"
    assert host.stderr.count("was killed by SIGKILL") == kills
    assert sum(w["restarts"] for w in host.stats()["per_worker"]) == kills
    assert host.stop() == 0, host.stderr
    return seen


async def test_sigkill_a_worker_under_load(three_workers: tuple[WorkerHost, str]) -> None:
    host, url = three_workers
    await run_kill(host, url, terminals=12, kills=1, warm=24, cool=24, seed=20)


@pytest.mark.slow
async def test_sigkill_workers_again_and_again(three_workers: tuple[WorkerHost, str]) -> None:
    host, url = three_workers
    seen = await run_kill(host, url, terminals=24, kills=6, warm=200, cool=400, seed=21)
    assert seen.count().get("refund", 0) > 50


# --- restart PostgreSQL ---------------------------------------------------------------------
@pytest.fixture
def restartable(pg_dsn: str) -> str:
    """The session's private cluster (tests run one at a time: no other test holds a
    connection while this one restarts it); a server given by POS_TEST_PG_DSN is not ours
    to restart."""
    if os.environ.get(pgcluster.DSN_ENV):
        pytest.skip("POS_TEST_PG_DSN names a server these tests may not restart")
    return pg_dsn


async def run_pg_restart(dsn: str, *, terminals: int, restarts: int, down: float, warm: int,
                         cool: int, seed: int, reconnect: bool) -> Seen:
    """``reconnect``: the workers ride out the outage on their own (the store reconnects
    and the server retries the group), none dies and is restarted by the supervisor."""
    url = fresh_database(dsn, "pgr")
    with WorkerHost(url, 2) as host:
        def restart() -> None:
            for i in range(restarts):
                if i:
                    time.sleep(1.0)
                pgcluster.restart(dsn, mode="fast", down=down)

        seen, term = await load(host.port, terminals, restart, warm=warm, cool=cool,
                                seed=seed)
        # the host serves again: a sale on a fresh connection is approved
        async with HostClient("127.0.0.1", host.port, "cup", timeout=10) as client:
            sale = await exchange(term, client, term.sale(card_by_name("cup-nopin"), 1_000),
                                  seen)
        assert isinstance(sale, Approved)
        check_after(url, seen)
        if reconnect:
            assert [w["restarts"] for w in host.stats()["per_worker"]] == [0, 0], host.stderr
        assert host.stop() == 0, host.stderr
    return seen


async def test_restart_postgresql_under_load(restartable: str) -> None:
    await run_pg_restart(restartable, terminals=10, restarts=1, down=0.3, warm=24, cool=24,
                         seed=30, reconnect=True)


@pytest.mark.slow
async def test_restart_postgresql_again_and_again(restartable: str) -> None:
    await run_pg_restart(restartable, terminals=20, restarts=4, down=2.0, warm=200,
                         cool=400, seed=31, reconnect=False)
