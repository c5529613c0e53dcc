"""Many terminals, random host faults, terminal-style recovery: the money still adds up.

At least 50 concurrent simulated terminals (each its own provisioned TID, its own
connection) run a few hundred sales, voids, refunds and duplicates each against
the real server + host core + a ledger (memory, SQLite or PostgreSQL: the soak runs
over each), while the server injects every
fault kind at random (delay, late answer, drop, close before/after booking, bad
MAC, answer twice, garbled frame). Each terminal recovers as DESIGN.md section 4
says (reverse sales/voids with 98 or A0 and sign on again, resend refund
advices and reversals). Each then settles its batch with its own totals.

Afterwards the ledger is compared with what the terminals saw:
* the approved, standing sales/voids/refunds are exactly the ones the terminals
  were told were approved (nothing lost, nothing extra, nothing booked twice);
* every original's refunded total equals its approved refunds and is <= its amount;
* ledger totals equal the sum of approved answers, and every settlement balanced.

The default run soaks 50 terminals x 300 transactions over SQLite and 50 x 60 over
memory and PostgreSQL (a private cluster; skipped with an install hint without it);
``-m slow`` runs 50 x 300 over the other two as well, and 100 x 500 over each.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from emulator import catalogue
from emulator.client import Exchange, HostClient, NoAnswerError, run_terminal, sign_on
from emulator.host import AcquirerHost, MemoryLedgerStore, SqliteLedgerStore, security
from emulator.host.faults import FaultPlan
from emulator.host.ledger import LedgerSnapshot, LedgerStore, TransactionRow, key_text
from emulator.server import ServerConfig, acquirer_server
from emulator.simterminal import Approved, SimTerminal
from iso8583.message import Message

MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CARDS: tuple[tuple[catalogue.TestCard, str | None], ...] = tuple(
    (catalogue.card_by_name(name), pin) for name, pin in (
        ("cup-debit", "123456"), ("cup-credit", "111111"), ("cup-nopin", None),
        ("visa-credit", None), ("mastercard", "4315"), ("cup-magstripe", "888888")))
FAULTS = ("delay=20@p=0.03;delay=900@p=0.004;drop@p=0.008;close-before@p=0.008;"
          "close-after@p=0.008;bad-mac@p=0.008;twice@p=0.01;garble@p=0.008")
ANSWER_TIMEOUT = 0.5


@dataclass
class SaleState:
    approved: Approved
    refunded: int = 0
    voided: bool = False


@dataclass
class Lane:
    """One terminal and what it was told."""

    tid: str
    term: SimTerminal
    client: HostClient
    rng: random.Random
    sales: dict[str, SaleState] = field(default_factory=dict)  # by STAN
    refunds: dict[str, int] = field(default_factory=dict)  # approved refund STAN -> amount
    voids: set[str] = field(default_factory=set)  # STANs of approved voids
    reversals: Counter[str] = field(default_factory=Counter)  # by reason
    duplicates: int = 0
    settled_balanced: bool | None = None
    last: Exchange | None = None

    def standing(self) -> list[SaleState]:
        return [s for s in self.sales.values() if not s.voided]


async def duplicate(lane: Lane, sent: Exchange) -> None:
    """Resend an answered request unchanged: the host must repeat its stored answer."""
    assert sent.result is not None
    request: Message = sent.request
    for _ in range(100):
        try:
            frame = await lane.client.exchange(request)
        except NoAnswerError:
            await lane.client.close()
            continue
        keys = lane.term.keys
        assert keys is not None
        if not security.received_mac_ok(lane.term.dialect, keys.mak, frame.body, frame.message):
            await lane.client.close()
            continue  # a bad-MAC fault on the repeat: ask again
        answer = frame.message
        assert answer.response_code == sent.result.response_code
        if isinstance(sent.result, Approved):
            assert answer.rrn == sent.result.rrn
        lane.duplicates += 1
        return
    raise AssertionError("duplicate never answered")


async def one_transaction(lane: Lane) -> None:
    rng, term = lane.rng, lane.term
    roll = rng.random()
    standing = lane.standing()
    if roll < 0.08 and lane.last is not None and lane.last.result is not None:
        await duplicate(lane, lane.last)
        return
    if roll < 0.22 and standing:
        target = rng.choice(standing)
        if target.refunded == 0:
            exchange = await run_terminal(term, lane.client, term.void(target.approved))
            if exchange.approved:
                target.voided = True
                lane.voids.add(exchange.request.stan or "")
            record(lane, exchange)
            return
    if roll < 0.50 and standing:
        target = rng.choice(standing)
        left = (target.approved.amount or 0) - target.refunded
        if left > 0:
            amount = rng.randint(1, left)
            exchange = await run_terminal(term, lane.client, term.refund(target.approved, amount))
            if exchange.approved:
                target.refunded += amount
                lane.refunds[exchange.request.stan or ""] = amount
            record(lane, exchange)
            return
    card, pin = rng.choice(CARDS)
    amount = rng.randint(1, 40) * 100 + rng.choice((0, 0, 0, 0, 1, 37, 51))
    exchange = await run_terminal(term, lane.client, term.sale(card, amount, pin=pin))
    if isinstance(exchange.result, Approved):
        lane.sales[exchange.result.stan] = SaleState(exchange.result)
    record(lane, exchange)


def record(lane: Lane, exchange: Exchange) -> None:
    lane.last = exchange
    if exchange.reversal_reason is not None:
        assert isinstance(exchange.reversal, Approved), "a reversal must be acknowledged"
        lane.reversals[exchange.reversal_reason] += 1


async def run_lane(lane: Lane, count: int) -> None:
    await sign_on(lane.term, lane.client)
    for _ in range(count):
        await one_transaction(lane)
    settle = await run_terminal(lane.term, lane.client, lane.term.settlement())
    assert isinstance(settle.result, Approved)
    lane.settled_balanced = settle.result.balanced
    await lane.client.close()


def check_ledger(snapshot: LedgerSnapshot, lanes: list[Lane]) -> None:
    rows: dict[str, list[TransactionRow]] = {}
    for row in snapshot.transactions:
        rows.setdefault(row.tid, []).append(row)
    rrns = [r.rrn for r in snapshot.transactions if r.rrn is not None]
    assert len(rrns) == len(set(rrns)), "an RRN was issued twice"
    for lane in lanes:
        mine = rows.get(lane.tid, [])
        keys = [(r.batch, r.stan, r.mti) for r in mine]
        assert len(keys) == len(set(keys)), "a request was booked twice"
        sales = {r.stan: r for r in mine if r.kind == "sale"}
        standing = {s for s, r in sales.items() if r.status == "approved"}
        voided = {s for s, r in sales.items() if r.status == "voided"}
        told_standing = {s for s, st in lane.sales.items() if not st.voided}
        told_voided = {s for s, st in lane.sales.items() if st.voided}
        assert standing == told_standing, f"{lane.tid}: approved sales differ"
        assert voided == told_voided, f"{lane.tid}: voided sales differ"
        for stan, state in lane.sales.items():
            assert sales[stan].amount == state.approved.amount
            assert sales[stan].refunded == state.refunded
        refunds = {r.stan: r for r in mine if r.kind == "refund" and r.status == "approved"}
        assert {s: r.amount for s, r in refunds.items()} == lane.refunds
        voids = {r.stan for r in mine if r.kind == "void" and r.status == "approved"}
        assert voids == lane.voids
        # every original: refunded total = its approved refunds, and never above its amount
        by_original: Counter[str] = Counter()
        for r in refunds.values():
            assert r.original is not None
            by_original[r.original] += r.amount or 0
        for sale in sales.values():
            key = key_text(sale.key)
            assert sale.refunded == by_original.get(key, 0), key
            assert 0 <= sale.refunded <= (sale.amount or 0)
        ledger_net = (sum(r.amount or 0 for r in sales.values() if r.status == "approved")
                      - sum(r.amount or 0 for r in refunds.values()))
        told_net = (sum(st.approved.amount or 0 for st in lane.sales.values() if not st.voided)
                    - sum(lane.refunds.values()))
        assert ledger_net == told_net
        assert lane.settled_balanced is True, f"{lane.tid}: settlement did not balance"
    settled = {(b.tid, b.balanced) for b in snapshot.batches if b.settled}
    assert settled == {(lane.tid, True) for lane in lanes}


BACKENDS = ("memory", "sqlite", "postgresql")


def soak_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> LedgerStore:
    """A fresh ledger of ``kind`` (PostgreSQL: a schema of its own in the session's cluster)."""
    if kind == "memory":
        return MemoryLedgerStore()
    if kind == "sqlite":
        return SqliteLedgerStore(tmp_path / "soak.db")
    dsn: str = request.getfixturevalue("pg_dsn")
    from emulator.host.pgledger import PostgresLedgerStore
    return PostgresLedgerStore(dsn, schema=f"soak_{tmp_path.name.lower()}")


async def soak(store: LedgerStore, *, clients: int, per_client: int, seed: int) -> None:
    host = AcquirerHost.from_store(store, "cup", random_bytes=random.Random(seed).randbytes)
    tids = [f"5{i:07d}" for i in range(clients)]
    store.commit([host.provision(tid, MID, TMK) for tid in tids])
    plan = FaultPlan.from_specs([FAULTS])
    server = acquirer_server(host, store, faults=plan, rng=random.Random(seed), config=ServerConfig(
        port=0, idle_timeout=30, read_timeout=5, shutdown_timeout=10))
    _, port = await server.start()
    lanes = [Lane(tid, SimTerminal("cup", tid, MID, TMK, datetime.now,
                                   rng=random.Random(seed * 1000 + i)),
                  HostClient("127.0.0.1", port, "cup", timeout=ANSWER_TIMEOUT),
                  random.Random(seed * 7919 + i))
             for i, tid in enumerate(tids)]
    try:
        await asyncio.gather(*(run_lane(lane, per_client) for lane in lanes))
    finally:
        await server.stop()
    snapshot = store.load()
    store.close()
    assert server.fatal is None
    fired = server.stats.faults
    for kind in ("delay", "drop", "close-before", "close-after", "bad-mac", "twice", "garble"):
        assert fired.get(kind, 0) > 0, f"fault {kind} never fired: {fired}"
    reversals: Counter[str] = sum((lane.reversals for lane in lanes), Counter())
    assert reversals["98"] > 0
    assert reversals["A0"] > 0
    assert sum(lane.duplicates for lane in lanes) > 0
    assert sum(len(lane.refunds) for lane in lanes) > 0
    assert sum(len(lane.voids) for lane in lanes) > 0
    check_ledger(snapshot, lanes)
    print(f"soak ({type(store).__name__}): {clients} terminals x {per_client} tx; "
          f"faults fired {dict(fired)}; "
          f"reversals {dict(reversals)}; duplicates {sum(lane.duplicates for lane in lanes)}; "
          f"sales {sum(len(lane.sales) for lane in lanes)}, voids "
          f"{sum(len(lane.voids) for lane in lanes)}, refunds "
          f"{sum(len(lane.refunds) for lane in lanes)}; ledger rows {len(snapshot.transactions)}; "
          f"commits {server.stats.commits} (largest batch {server.stats.largest_batch})")


#: transactions per terminal in the default run: the full 300 over SQLite (the embedded
#: default), fewer over the other two to keep the default run short
QUICK = {"memory": 60, "sqlite": 300, "postgresql": 60}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_fault_soak_50_terminals(kind: str, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    await soak(soak_store(kind, tmp_path, request), clients=50, per_client=QUICK[kind], seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", "postgresql"])  # SQLite runs 300 by default
async def test_fault_soak_50_terminals_300_each(kind: str, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    await soak(soak_store(kind, tmp_path, request), clients=50, per_client=300, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
async def test_fault_soak_100_terminals_500_each(kind: str, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    await soak(soak_store(kind, tmp_path, request), clients=100, per_client=500, seed=2)


def test_checks_catch_a_lost_refund() -> None:
    """The ledger check is not vacuous: a refund the terminal saw but the ledger lacks fails."""
    term = SimTerminal("cup", "50000000", MID, TMK, datetime.now)
    lane = Lane("50000000", term, HostClient("127.0.0.1", 1), random.Random(0))
    lane.refunds["000002"] = 100
    lane.settled_balanced = True
    with pytest.raises(AssertionError):
        check_ledger(LedgerSnapshot(b"k" * 32), [lane])
