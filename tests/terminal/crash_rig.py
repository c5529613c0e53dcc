"""The crash campaign's rig: a real ``pos-emulator serve``, ``pos-terminal`` processes
killed with SIGKILL at random points, ``recover``, and the invariants checked after each.

Two ways to kill a terminal process:

* ``named``: ``POS_TERMINAL_CRASH_AT=point:n`` (:mod:`terminal.core.crashpoints`) kills it
  the n-th time the flow passes a named point (inside or after a journal write, after
  sending, after the answer, inside recovery);
* ``external``: this process watches the journal's WAL file and, once the terminal's
  first write of the command shows there, sends SIGKILL after a random 0-40 ms: the
  window in which the STAN, the request with its armed follow-up and the answer are
  written (about 20-30 ms on a 2-core machine).

After every kill ``pos-terminal recover`` runs (again while it exits 3; sometimes it is
itself killed inside recovery first, sometimes the next sale/refund/void runs before it
and has to resolve what the crash left open), then :func:`check_invariants` compares the
terminal's journal with the host's ledger (both SQLite files, read directly).

Everything random comes from one seeded :class:`random.Random` per terminal lane, so a
failure names the seed that replays it (timing of external kills aside).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.catalogue import card_by_name
from iso8583.masking import mask_pan
from terminal.core.crashpoints import ENV as CRASH_ENV
from terminal.core.crashpoints import POINTS

BIN = Path(sys.executable).parent
TERMINAL = str(BIN / "pos-terminal")
EMULATOR = str(BIN / "pos-emulator")
MID = "123456789012345"
TMK = "CA5D92598DCA48CE8A4C76361A9269E9"
CARDS = ("cup-debit", "cup-credit", "visa-credit", "cup-nopin")
CARD_OF_MASK = {mask_pan(card_by_name(name).pan): name for name in CARDS}
REASONS = ("damaged", "not_received", "wrong_transaction", "duplicate_charge",
           "customer_cancelled")
FLOW_POINTS = ("in_begin", "after_begin", "after_send", "after_answer", "after_record")
RESOLVE_POINTS = ("in_resolve", "after_resolve_send")
assert set(FLOW_POINTS + RESOLVE_POINTS) == set(POINTS), "crash points changed: update the rig"
MONEY_KINDS = ("sale", "refund", "void")
KILLED = -signal.SIGKILL
COMMAND_TIMEOUT = 60.0


# --- the host ---------------------------------------------------------------------------
class Emulator:
    """``pos-emulator serve`` in a subprocess on 127.0.0.1, a free port, ledger in ``work``."""

    def __init__(self, work: Path, tids: list[str], dialect: str = "cup") -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.ledger = work / "ledger.db"
        for tid in tids:
            subprocess.run([EMULATOR, "terminal", "add", "--tid", tid, "--mid", MID,
                            "--tmk", TMK, "--ledger", str(self.ledger)],
                           check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
        self.log = (work / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [EMULATOR, "serve", "--port", "0", "--ledger", str(self.ledger),
             "--dialect", dialect],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        assert self.proc.stdout is not None
        found: list[int] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for text in self.proc.stdout:
                match = re.search(r"listening on [\d.]+:(\d+)", text)
                if match and not found:
                    found.append(int(match.group(1)))
                self.log.write(text)
                self.log.flush()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not found:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("pos-emulator serve did not start (see serve.log)")
            time.sleep(0.02)
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def batches(self, tid: str) -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(self.ledger, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute("SELECT * FROM batches WHERE tid = ?", (tid,)))

    def rows(self, tid: str) -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(self.ledger, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute("SELECT * FROM transactions WHERE tid = ? ORDER BY seq",
                                   (tid,)))


# --- one terminal ---------------------------------------------------------------------------
@dataclass
class Run:
    """One ``pos-terminal`` command as it ended."""

    argv: list[str]
    returncode: int
    out: str
    err: str

    @property
    def killed(self) -> bool:
        return self.returncode == KILLED

    @property
    def result(self) -> dict[str, Any]:
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(self.out.strip().splitlines()[-1]) if self.out.strip() else {}
            if isinstance(data, dict):
                return data
        return {}


@dataclass
class Stats:
    """What the campaign did, for the report."""

    kills: Counter[str] = field(default_factory=Counter)  # by "named:point" / "external"
    kills_by_op: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # armed, but the command ended first
    ops: Counter[str] = field(default_factory=Counter)  # commands run, by op and exit code
    recovers: int = 0
    recover_retries: int = 0  # recover exited 3 and was run again
    checks: int = 0  # invariant checks run (one per kill, and one at the end of each lane)
    assertions: int = 0  # individual row/sum comparisons made by the checks
    violations: list[str] = field(default_factory=list)
    journal_rows: Counter[str] = field(default_factory=Counter)  # at the end, "kind status"
    host_rows: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        self.kills.update(other.kills)
        self.kills_by_op.update(other.kills_by_op)
        self.missed.update(other.missed)
        self.ops.update(other.ops)
        self.recovers += other.recovers
        self.recover_retries += other.recover_retries
        self.checks += other.checks
        self.assertions += other.assertions
        self.violations.extend(other.violations)
        self.journal_rows.update(other.journal_rows)
        self.host_rows.update(other.host_rows)

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    def summary(self, seed: int, lanes: int, seconds: float) -> str:
        def fmt(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"

        return "\n".join([
            f"crash campaign: seed {seed}, {lanes} terminal(s), {seconds:.1f} s",
            f"  crash points (SIGKILLs): {self.total_kills} -- {fmt(self.kills)}",
            f"  killed during: {fmt(self.kills_by_op)}",
            f"  armed but finished first: {sum(self.missed.values())} -- {fmt(self.missed)}",
            f"  commands: {fmt(self.ops)}",
            f"  recovers: {self.recovers} ({self.recover_retries} re-run after exit 3)",
            f"  invariant checks: {self.checks} ({self.assertions} comparisons), "
            f"violations: {len(self.violations)}",
            f"  journals at the end: {fmt(self.journal_rows)}",
            f"  host ledger at the end: {fmt(self.host_rows)}",
        ])


class Lane:
    """One terminal (own TID and data directory) driven by one seeded RNG."""

    def __init__(self, work: Path, tid: str, emulator: Emulator, rng: random.Random,
                 dialect: str = "cup") -> None:
        self.data = work / f"terminal-{tid}"
        self.dialect = dialect
        self.tid = tid
        self.emulator = emulator
        self.rng = rng
        self.stats = Stats()
        self.env = {**{k: v for k, v in os.environ.items() if k != CRASH_ENV},
                    "POS_TERMINAL_DATA": str(self.data), "LANG": "C"}
        self.log: list[str] = []  # the commands of this lane, for a failure message
        self._deck: list[str] = []

    # --- running commands ---------------------------------------------------------
    def run(self, args: list[str], *, crash_at: str | None = None,
            kill_after_write: float | None = None) -> Run:
        """Run ``pos-terminal --json ARGS``; arm a named crash point or an external kill."""
        env = dict(self.env)
        if crash_at is not None:
            env[CRASH_ENV] = crash_at
        argv = [TERMINAL, "--json", "--timeout", "5", *args]
        wal = self.data / "journal.db-wal"
        before = _stat(wal)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        if kill_after_write is not None:
            self._kill_after_write(proc, wal, before, kill_after_write)
        try:
            out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        run = Run(argv[1:], proc.returncode, out, err)
        tag = f" [{crash_at}]" if crash_at else (f" [kill +{kill_after_write * 1000:.0f} ms "
                                                  "after first write]"
                                                  if kill_after_write is not None else "")
        self.log.append(f"{' '.join(args)}{tag} -> {run.returncode} "
                        f"{run.result.get('result', '')}")
        return run

    @staticmethod
    def _kill_after_write(proc: subprocess.Popen[str], wal: Path,
                          before: tuple[int, int] | None, delay: float) -> None:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            now = _stat(wal)
            if now is not None and now[0] > 0 and now != before:
                time.sleep(delay)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.0002)

    def init(self) -> None:
        done = self.run(["--dialect", self.dialect, "init", "--tid", self.tid, "--mid", MID,
                         "--tmk", TMK, "--host", f"127.0.0.1:{self.emulator.port}"])
        if done.returncode != 0:
            raise RuntimeError(f"init failed: {done.err}")

    # --- the journal as the campaign sees it -----------------------------------------
    def journal(self) -> tuple[list[sqlite3.Row], list[sqlite3.Row], str]:
        """(txn rows, pending rows, open batch), read straight from the SQLite file."""
        with contextlib.closing(sqlite3.connect(self.data / "journal.db", timeout=10)) as db:
            db.row_factory = sqlite3.Row
            txns = list(db.execute("SELECT * FROM txn ORDER BY id"))
            pending = list(db.execute("SELECT * FROM pending ORDER BY id"))
            row = db.execute("SELECT value FROM meta WHERE key = 'batch'").fetchone()
        return txns, pending, f"{int(row[0]) if row else 1:06d}"

    def settlements(self) -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(self.data / "journal.db", timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute("SELECT * FROM settlement ORDER BY id"))

    # --- choosing the next command ----------------------------------------------------
    def next_command(self) -> tuple[str, list[str]]:
        txns, _, batch = self.journal()
        sales = [t for t in txns if t["kind"] == "sale" and t["status"] == "approved"]
        children: dict[int, list[sqlite3.Row]] = {}
        for t in txns:
            if t["original_id"] is not None:
                children.setdefault(t["original_id"], []).append(t)
        refundable: list[tuple[sqlite3.Row, int]] = []
        voidable: list[sqlite3.Row] = []
        for sale in sales:
            kids = children.get(sale["id"], [])
            if any(k["kind"] == "void" and k["status"] == "approved" for k in kids):
                continue
            refunded = sum(k["amount"] for k in kids
                           if k["kind"] == "refund" and k["status"] == "approved")
            if sale["amount"] - refunded > 0:
                refundable.append((sale, sale["amount"] - refunded))
            if sale["batch"] == batch and not any(k["status"] == "approved" for k in kids):
                voidable.append(sale)
        roll = self.rng.random()
        if refundable and roll < 0.45:
            sale, left = self.rng.choice(refundable)
            amount = left if self.rng.random() < 0.25 else self.rng.randint(1, left)
            card = CARD_OF_MASK[sale["pan_masked"]]
            return "refund", [f"--reader=virtual:{card}", "--pinpad", "virtual", "refund",
                              _money(amount), "--voucher", str(int(sale["stan"])),
                              "--reason", self.rng.choice(REASONS), "--yes"]
        if voidable and roll < 0.65:
            sale = self.rng.choice(voidable)
            reader = ([f"--reader=virtual:{CARD_OF_MASK[sale['pan_masked']]}"]
                      if self.rng.random() < 0.5 else [])
            return "void", [*reader, "void", "--voucher", str(int(sale["stan"]))]
        if len(sales) > 4 and roll > 0.94:
            return "settle", ["settle"]
        card = self.rng.choice(CARDS)
        amount = self.rng.randint(1, 200) * 100 + self.rng.choice((0, 0, 0, 0, 0, 0, 50, 99, 5))
        return "sale", [f"--reader=virtual:{card}", "--pinpad", "virtual", "sale",
                        _money(amount)]

    def _draw(self) -> str:
        """The next named flow point, from a shuffled deck: every point comes up once in
        every five draws, so even a short run hits each of them."""
        if not self._deck:
            self._deck = list(FLOW_POINTS)
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    # --- one crash point -------------------------------------------------------------------
    def step(self) -> None:
        """One command with a crash armed; recover and check when the crash hit."""
        op, args = self.next_command()
        # a settlement (it moves the batch on) only passes after_send: the settlement
        # itself, then the batch upload items when the totals differ
        if self.rng.random() < 0.7:
            point = self._draw() if op != "settle" else "after_send"
            count = self.rng.choice((1, 1, 1, 1, 2)) if point == "after_send" else 1
            label = f"named:{point}"
            done = self.run(args, crash_at=f"{point}:{count}")
        else:
            label = "external"
            done = self.run(args, kill_after_write=self.rng.uniform(0.0, 0.040))
        self.stats.ops[f"{op}:{'killed' if done.killed else done.returncode}"] += 1
        if not done.killed:
            self.stats.missed[label] += 1
            if done.returncode not in (0, 1, 2):
                self.stats.violations.append(f"{self.tid}: {op} exited {done.returncode} "
                                             f"without a crash: {done.err.strip()[-300:]}")
            return
        self.stats.kills[label] += 1
        self.stats.kills_by_op[op] += 1
        if op != "settle" and self.rng.random() < 0.2:
            # restarted straight into the next transaction: it must resolve what the
            # crash left open before it sends anything of its own
            next_op, next_args = self.next_command()
            if next_op != "settle":
                after = self.run(next_args)
                self.stats.ops[f"{next_op} after a kill:{after.returncode}"] += 1
                if after.returncode not in (0, 1, 2, 3):
                    self.stats.violations.append(
                        f"{self.tid}: {next_op} after a kill exited {after.returncode}: "
                        f"{after.err.strip()[-300:]}")
        self.recover()
        self.check()

    def recover(self) -> None:
        """``recover``, sometimes first killed inside recovery; again while it exits 3."""
        _, pending, _ = self.journal()
        owed = (any(p["state"] in ("armed", "due") for p in pending)
                or any(row["status"] == "open" for row in self.settlements()))
        roll = self.rng.random()
        if owed and roll < 0.35:
            point = self.rng.choice(RESOLVE_POINTS)
            first = self.run(["recover"], crash_at=f"{point}:1")
            self.stats.recovers += 1
            if first.killed:
                self.stats.kills[f"named:{point}"] += 1
                self.stats.kills_by_op["recover"] += 1
            else:
                self.stats.missed[f"named:{point}"] += 1
        elif owed and roll < 0.45:
            first = self.run(["recover"], kill_after_write=self.rng.uniform(0.0, 0.040))
            self.stats.recovers += 1
            if first.killed:
                self.stats.kills["external"] += 1
                self.stats.kills_by_op["recover"] += 1
            else:
                self.stats.missed["external"] += 1
        for attempt in range(6):
            done = self.run(["recover"])
            self.stats.recovers += 1
            if done.returncode == 0:
                return
            self.stats.recover_retries += 1
            if done.returncode != 3:
                break
            time.sleep(0.2 * (attempt + 1))
        self.stats.violations.append(f"{self.tid}: recover did not finish: exit "
                                     f"{done.returncode} {done.out.strip()[-300:]} "
                                     f"{done.err.strip()[-300:]}")

    def check(self, *, final: bool = False) -> None:
        txns, pending, batch = self.journal()
        host = self.emulator.rows(self.tid)
        found = check_invariants(txns, pending, host)
        check_settlements(found, self.settlements(), batch, self.emulator.batches(self.tid))
        if final:
            self.stats.journal_rows.update(f"{t['kind']} {t['status']}" for t in txns)
            self.stats.host_rows.update(f"{h['kind']} {h['status']}" for h in host)
        self.stats.checks += 1
        self.stats.assertions += found.comparisons
        for problem in found.problems:
            self.stats.violations.append(
                f"{self.tid}: {problem}\n    last commands:\n      "
                + "\n      ".join(self.log[-8:]))


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _money(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


# --- the invariants ----------------------------------------------------------------------
@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    comparisons: int = 0

    def expect(self, ok: bool, problem: str) -> None:
        self.comparisons += 1
        if not ok:
            self.problems.append(problem)


def check_invariants(txns: list[sqlite3.Row], pending: list[sqlite3.Row],
                     host: list[sqlite3.Row]) -> Findings:
    """DESIGN.md section 5 between one terminal's journal and the host's ledger.

    * no journal row stays pending/uncertain, and nothing is still owed to the host;
    * every sale/refund/void the host processed is in the journal (same batch, STAN, MTI,
      kind and amount: no STAN used twice);
    * host approved (a sale later voided counts) <=> journal approved, with the same RRN
      and amount;
    * no refund booked twice at the host; every original's approved refunds <= its amount
      at the host (and its ``refunded`` column says the same) and in the journal; a voided
      sale has no approved refund, a sale at most one approved void.
    """
    f = Findings()
    by_id = {t["id"]: t for t in txns}
    journal_key = {(t["batch"], t["stan"], t["mti"]): t for t in txns}
    f.expect(len({(t["batch"], t["stan"]) for t in txns}) == len(txns),
             "the journal used a STAN twice in one batch")
    for t in txns:
        f.expect(t["status"] not in ("pending", "uncertain"),
                 f"journal row {t['id']} ({t['kind']} STAN {t['stan']}) is still {t['status']}")
    status_of = {t["id"]: t["status"] for t in txns}
    for p in pending:
        owed = p["state"] == "due" or (p["state"] == "armed"
                                       and status_of.get(p["txn_id"]) == "pending")
        f.expect(not owed, f"journal still owes a {p['action']} ({p['state']}) for row "
                           f"{p['txn_id']}")
    money = [h for h in host if h["kind"] in MONEY_KINDS]
    host_key = {(h["batch"], h["stan"], h["mti"]): h for h in money}
    for key, booked in host_key.items():
        mine = journal_key.get(key)
        f.expect(mine is not None, f"host booked {booked['kind']} {key} ({booked['status']}) "
                                   "that the journal does not know")
        if mine is None:
            continue
        # the same request, not a STAN used again for another one
        f.expect((mine["kind"], mine["amount"]) == (booked["kind"], booked["amount"]),
                 f"{key}: host booked {booked['kind']} {booked['amount']}, the journal sent "
                 f"{mine['kind']} {mine['amount']}")
        host_ok = booked["status"] in ("approved", "voided")
        f.expect(host_ok == (mine["status"] == "approved"),
                 f"{booked['kind']} {key}: host {booked['status']}, journal {mine['status']}")
        if host_ok:
            f.expect(mine["rrn"] == booked["rrn"], f"{booked['kind']} {key}: RRN host "
                                                   f"{booked['rrn']}, journal {mine['rrn']}")
            f.expect(mine["amount"] == booked["amount"],
                     f"{booked['kind']} {key}: amount host {booked['amount']}, journal "
                     f"{mine['amount']}")
    for key, mine in journal_key.items():
        if mine["kind"] in MONEY_KINDS and mine["status"] == "approved":
            seen = host_key.get(key)
            f.expect(seen is not None and seen["status"] in ("approved", "voided"),
                     f"journal approved {mine['kind']} {key} the host has "
                     f"{'no row for' if seen is None else seen['status']}")
    # refunds and voids per original, at the host
    refunds = [h for h in money if h["kind"] == "refund" and h["status"] == "approved"]
    f.expect(len({h["rrn"] for h in refunds}) == len(refunds), "two host refunds share an RRN")
    journal_refunds = [t for t in txns if t["kind"] == "refund" and t["status"] == "approved"]
    f.expect(len(refunds) == len(journal_refunds),
             f"host booked {len(refunds)} refunds, the journal approved {len(journal_refunds)}")
    for sale in (h for h in money if h["kind"] == "sale"):
        name = f"{sale['tid']}/{sale['batch']}/{sale['stan']}/{sale['mti']}"
        its = [h for h in refunds if h["original"] == name]
        total = sum(h["amount"] for h in its)
        f.expect(total <= sale["amount"], f"host refunded {total} of sale {name} "
                                          f"({sale['amount']})")
        f.expect(total == sale["refunded"], f"host sale {name} says refunded "
                                            f"{sale['refunded']}, its refunds add up to {total}")
        voids = [h for h in money if h["kind"] == "void" and h["original"] == name
                 and h["status"] == "approved"]
        f.expect(len(voids) <= 1, f"host approved {len(voids)} voids of {name}")
        f.expect(not (voids and its), f"host sale {name} was both voided and refunded")
        f.expect((sale["status"] == "voided") == bool(voids),
                 f"host sale {name} is {sale['status']} with {len(voids)} approved void(s)")
    # and in the journal
    for sale in (t for t in txns if t["kind"] == "sale"):
        kids = [t for t in txns if t["original_id"] == sale["id"] and t["status"] == "approved"]
        total = sum(t["amount"] for t in kids if t["kind"] == "refund")
        voids = [t for t in kids if t["kind"] == "void"]
        f.expect(total <= sale["amount"], f"journal refunded {total} of sale row {sale['id']} "
                                          f"({sale['amount']})")
        f.expect(len(voids) <= 1 and not (voids and total),
                 f"journal sale row {sale['id']}: {len(voids)} voids, refunded {total}")
        f.expect(not kids or sale["status"] == "approved",
                 f"journal sale row {sale['id']} is {sale['status']} but has approved children")
    for t in journal_refunds:
        original = by_id.get(t["original_id"])
        f.expect(original is not None and original["rrn"] == t["original_rrn"],
                 f"journal refund row {t['id']} names RRN {t['original_rrn']}, its original "
                 f"has {None if original is None else original['rrn']}")
    return f


def check_settlements(f: Findings, settlements: list[sqlite3.Row], open_batch: str,
                      host_batches: list[sqlite3.Row]) -> None:
    """After recover no settlement is left open; the batches the journal closed are the
    batches the host settled, and the terminal's open batch is not settled at the host."""
    for row in settlements:
        f.expect(row["status"] != "open", f"settlement of batch {row['batch']} is still open")
    closed = {row["batch"] for row in settlements if row["status"] == "settled"}
    settled = {row["batch"] for row in host_batches if row["settled"]}
    f.expect(closed == settled, f"journal closed batches {sorted(closed)}, the host settled "
                                f"{sorted(settled)}")
    f.expect(open_batch not in settled, f"the open batch {open_batch} is settled at the host")


# --- the campaign --------------------------------------------------------------------------
@contextlib.contextmanager
def emulator(work: Path, tids: list[str], dialect: str = "cup") -> Iterator[Emulator]:
    host = Emulator(work, tids, dialect)
    try:
        yield host
    finally:
        host.stop()


def run_campaign(work: Path, *, seed: int, kills: int, lanes: int = 2,
                 max_steps: int | None = None, dialect: str = "cup") -> tuple[Stats, float]:
    """Drive ``lanes`` terminals in parallel until ``kills`` SIGKILLs in all; (stats, seconds).

    Each lane does a couple of unharmed sales first (originals to refund and void), then
    steps until its share of the kills is reached, then a last check.
    """
    started = time.monotonic()
    tids = [f"{90000001 + i}" for i in range(lanes)]
    total = Stats()
    with emulator(work, tids, dialect) as host:
        lane_objs = [Lane(work, tid, host, random.Random(f"{seed}/{tid}"), dialect)
                     for tid in tids]
        share = [kills // lanes + (1 if i < kills % lanes else 0) for i in range(lanes)]
        limit = max_steps if max_steps is not None else max(20, 4 * kills)
        errors: list[BaseException] = []

        def drive(lane: Lane, target: int) -> None:
            try:
                lane.init()
                for card, amount in (("cup-debit", "150.00"), ("visa-credit", "80.00")):
                    lane.run([f"--reader=virtual:{card}", "--pinpad", "virtual", "sale",
                              amount])
                steps = 0
                while lane.stats.total_kills < target and steps < limit:
                    lane.step()
                    steps += 1
                lane.check(final=True)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(lane, target))
                   for lane, target in zip(lane_objs, share, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        for lane in lane_objs:
            total.merge(lane.stats)
    return total, time.monotonic() - started
