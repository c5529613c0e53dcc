"""End-to-end refund benchmark: from "card presented" to "approved and journaled".

One till of the real terminal core (:class:`terminal.core.till.Till`, journal in a
temporary data directory, WAL + ``synchronous=FULL``) refunds through:

* the card: the virtual ``cup-debit`` card in a vpcd slot of a private pcscd, read with
  pyscard and the EMV kernel like a card in a real reader (the card slot of the training
  world, :class:`terminal.demo_world.CardSlot`); and, beside it, the same card attached
  in-process (no pcscd, no socket): the anchor that shows what the PC/SC path costs;
* the PIN pad: the virtual PIN pad on a pty through the serial driver; the till's
  ``pin_on_refund`` setting is switched on so every refund asks for the PIN (the
  scripted cardholder types it at once: cardholder time is not counted);
* the host: ``pos-emulator serve`` in its own process on 127.0.0.1 (SQLite ledger, durable
  before it answers), over the till's TCP host link.

Sales are made first (not timed) to create originals; each original is then refunded
in parts. A refund is timed from the moment the card sits in the reader and the till
starts reading it, through the quote (rules), the PIN, the 0220 exchange, to
:meth:`Till.refund` returning with the answer committed to the journal. The stages are
measured by wrapping the till's ports and journal methods with timers (the core is not
changed): card read, PIN, host exchange (connect + send + answer), journal writes,
journal reads, and the rest (rules, message building, MAC, answer checks). Shares are of
the summed time of all refunds.

    .venv/bin/python -m bench.e2e [N]        (default N = 200 refunds per card path)

The PC/SC part needs root, pcscd and the vpcd driver; without them it is skipped with
the reason and the in-process figures are still printed. Target: median <= 20 ms.
Benchmarks print, they never assert.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.pinpad import PinPad
from emulator.card.pcscd_harness import unavailable_reason
from emulator.catalogue import card_by_name
from emulator.pinpad import VirtualPinPad
from emulator.pinpad.cardholder import EnterPin
from iso8583.dialects import get_dialect
from terminal.core.config import TerminalSettings, init_terminal
from terminal.core.devices import EmvCardReader, SerialPinPad
from terminal.core.journal import Journal
from terminal.core.ports import Purpose
from terminal.core.records import RefundReason, TxnRecord, TxnStatus
from terminal.core.till import Till
from terminal.demo_world import CardSlot
from terminal.hostlink import TcpHostLink

TARGET_MS = 20.0
CARD = "cup-debit"  # its CVM list asks for an online PIN
MID = "123456789012345"
TMK = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")
TPDU = bytes.fromhex("6000030000")
SALE_AMOUNT = 100_00
PARTS = 4  # each original is refunded in this many parts
WARMUP = 3  # refunds per path before the clock runs (connections, caches, first PIN key)
STAGES = ("card read", "PIN (pty pad)", "host exchange", "journal writes", "journal reads")
JOURNAL_WRITES = frozenset({
    "take_stan", "begin", "begin_new", "answered", "no_answer", "after_approval_failure",
    "attempt_failed", "resolved", "put", "put_many", "put_secret", "save_keys",
    "forget_keys", "set_batch", "close_batch", "new_settlement", "settlement_result",
    "settlement_refused"})
JOURNAL_READS = frozenset({
    "get", "get_secret", "peek_stan", "load_keys", "request_of", "open_items", "open_count",
    "record", "records", "by_voucher", "by_rrn", "children", "sales_for_card",
    "batch_records", "last"})


# --- the host in its own process -----------------------------------------------------------
class HostProcess:
    """``pos-emulator serve`` on 127.0.0.1 (a free port) with ``tids`` provisioned."""

    def __init__(self, work: Path, tids: list[str]) -> None:
        self.ledger = work / "ledger.db"
        emulator = [sys.executable, "-m", "emulator"]
        for tid in tids:
            subprocess.run([*emulator, "terminal", "add", "--tid", tid, "--mid", MID,
                            "--tmk", TMK.hex(), "--ledger", str(self.ledger)],
                           check=True, capture_output=True, timeout=60)
        self.proc = subprocess.Popen([*emulator, "serve", "--port", "0", "--ledger",
                                      str(self.ledger)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.port = 0
        assert self.proc.stdout is not None
        for text in self.proc.stdout:  # the line saying where it listens
            match = re.search(r"listening on [\d.]+:(\d+)", text)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.stop()
            raise RuntimeError("pos-emulator serve did not start")
        # keep draining its stdout so it never blocks on a full pipe
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- stage timers ----------------------------------------------------------------------------
@dataclass
class Stopwatch:
    """Time spent per stage in the current refund; nested timed calls count once (outer)."""

    spent: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _depth: int = 0

    def reset(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)
        self.calls = {}

    def wrap(self, obj: object, name: str, stage: str) -> None:
        """Replace ``obj.name`` (a bound method) with a timed call charged to ``stage``."""
        inner: Callable[..., Any] = getattr(obj, name)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return inner(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.spent[stage] = self.spent.get(stage, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1
                self._depth -= 1

        setattr(obj, name, timed)

    def instrument(self, till: Till) -> None:
        assert till.reader is not None
        assert till.pinpad is not None
        self.wrap(till.reader, "read_card", "card read")
        self.wrap(till.pinpad, "get_pin_block", "PIN (pty pad)")
        self.wrap(till.link, "open", "host exchange")
        self.wrap(till.link, "exchange", "host exchange")
        for name in JOURNAL_WRITES:
            self.wrap(till.journal, name, "journal writes")
        for name in JOURNAL_READS:
            self.wrap(till.journal, name, "journal reads")
        self.reset()


# --- the anchor ------------------------------------------------------------------------------
class CommitAnchor:
    """One INSERT + COMMIT in a bare SQLite file (WAL, synchronous=FULL) in the same
    directory: what each of the journal's commits costs at least on this disk. Sampled
    between the rounds of refunds, so it sees the same disk load."""

    def __init__(self, directory: Path) -> None:
        self.db = sqlite3.connect(directory / "anchor.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        self.samples: list[float] = []
        self.sample(20)
        self.samples.clear()  # the file's first growth is not what a journal in use pays

    def sample(self, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO t (body) VALUES (?)", (b"x" * 300,))
            self.db.execute("COMMIT")
            self.samples.append(time.perf_counter() - t0)

    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000 if self.samples else 0.0

    def close(self) -> None:
        self.db.close()


# --- one card path ---------------------------------------------------------------------------
@dataclass
class PathResult:
    name: str
    totals: list[float] = field(default_factory=list)  # seconds per refund
    stages: dict[str, list[float]] = field(default_factory=dict)
    not_approved: int = 0
    sales: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # timed calls by method, all refunds

    def median_ms(self) -> float:
        return statistics.median(self.totals) * 1000

    def p95_ms(self) -> float:
        ordered = sorted(self.totals)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000

    def stage_median_ms(self, stage: str) -> float:
        return statistics.median(self.stages[stage]) * 1000

    def share(self, stage: str) -> float:
        total = sum(self.totals)
        return sum(self.stages[stage]) / total if total else 0.0

    def rest(self) -> list[float]:
        return [total - sum(self.stages[s][i] for s in STAGES)
                for i, total in enumerate(self.totals)]


class TillRig:
    """A till wired to a card slot, a virtual PIN pad on a pty and the host process."""

    def __init__(self, name: str, work: Path, tid: str, port: int, slot: CardSlot) -> None:
        self.name = name
        self.slot = slot
        data = work / f"till-{tid}"
        journal = Journal.open(data)
        try:
            init_terminal(journal, TerminalSettings(tid=tid, mid=MID, lang="en"), TMK)
        finally:
            journal.close()
        dialect = get_dialect("cup")
        self.pad = VirtualPinPad(master_key=TMK).start()
        self.pad.cardholder.default = EnterPin(card_by_name(CARD).pin or "")
        reader = EmvCardReader(slot.source, description=name,
                               f55_tags=dialect.settings.f55_tags, timeout=10.0)
        pinpad = SerialPinPad(PinPad.open(self.pad.path), description=f"pad {self.pad.path}",
                              timeout=10.0)
        link = TcpHostLink(dialect, "127.0.0.1", port, timeout=10.0, tpdu=TPDU)
        self.till = Till.open(data, link=link, reader=reader, pinpad=pinpad)
        self.till.settings = dataclasses.replace(self.till.settings, pin_on_refund=True)
        self.till.sign_on()
        self.watch = Stopwatch()
        self.result = PathResult(name, stages={s: [] for s in STAGES})
        self.originals: list[tuple[TxnRecord, int]] = []  # sale and parts left to refund

    def close(self) -> None:
        self.till.close()
        self.pad.stop()

    def sell(self, count: int) -> None:
        """Make ``count`` approved sales (not timed) to refund later."""
        for _ in range(count):
            card = self.till.read_card(Purpose.SALE, SALE_AMOUNT)
            outcome = self.till.sale(SALE_AMOUNT, card)
            if outcome.status is TxnStatus.APPROVED:
                self.originals.append((outcome.record, PARTS))
                self.result.sales += 1
        if not self.originals:
            raise RuntimeError(f"{self.name}: no sale was approved")
        self.watch.instrument(self.till)

    def refund_once(self) -> None:
        """One timed refund of a part of the next original."""
        original, left = self.originals[0]
        amount = SALE_AMOUNT // PARTS
        self.watch.reset()
        t0 = time.perf_counter()  # the card sits in the reader: "card presented"
        card = self.till.read_card(Purpose.REFUND, amount)
        quote = self.till.quote_refund(original, card, amount, RefundReason.DAMAGED)
        outcome = self.till.refund(quote)
        took = time.perf_counter() - t0
        if left > 1:
            self.originals[0] = (original, left - 1)
        else:
            self.originals.pop(0)
        if outcome.status is not TxnStatus.APPROVED:
            self.result.not_approved += 1
            return
        self.result.totals.append(took)
        for stage in STAGES:
            self.result.stages[stage].append(self.watch.spent[stage])
        for name, count in self.watch.calls.items():
            self.result.calls[name] = self.result.calls.get(name, 0) + count


@dataclass
class E2EResult:
    paths: list[PathResult]
    skipped: str | None  # why the pcscd + vpcd path did not run
    pad: str  # the PIN pad's pty
    commit_floor_ms: float
    load_average: tuple[float, float]  # 1-minute load average before and after


def run(n: int = 200, rounds: int = 5, *, pcsc: bool = True) -> E2EResult:
    """Measure ``n`` refunds per card path, alternating the paths in ``rounds``."""
    sales = -(-(n + WARMUP) // PARTS)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    host: HostProcess | None = None
    slots: list[CardSlot] = []
    try:
        host = HostProcess(work, ["80000001", "80000002"])
        skipped = unavailable_reason() if pcsc else "not asked for"
        if skipped is None:
            slot = CardSlot(work / "pcsc", in_process=False)
            slots.append(slot)
            if not slot.mode.startswith("PC/SC"):
                skipped = slot.reason
                slot.close()
                slots.pop()
        slots.append(CardSlot(work / "local", in_process=True))
        for slot in slots:
            slot.present(CARD)  # inserted once; it stays in the reader
        names = (["pcscd + vpcd card"] if len(slots) == 2 else []) + ["in-process card"]
        rigs: list[TillRig] = []
        try:
            for i, (name, slot) in enumerate(zip(names, slots, strict=True)):
                rigs.append(TillRig(name, work, f"8000000{i + 1}", host.port, slot))
            for rig in rigs:
                rig.sell(sales)
                for _ in range(WARMUP):  # not counted
                    rig.refund_once()
                rig.result = PathResult(rig.name, stages={s: [] for s in STAGES},
                                        sales=rig.result.sales)
            per_round = -(-n // rounds)
            anchor = CommitAnchor(work)
            for _ in range(rounds):  # alternate, so a burst of load hits both paths alike
                for rig in rigs:
                    done = len(rig.result.totals) + rig.result.not_approved
                    for _ in range(min(per_round, n - done)):
                        if rig.originals:
                            rig.refund_once()
                anchor.sample(max(10, per_round // 2))
            anchor.close()
            return E2EResult([rig.result for rig in rigs], skipped, rigs[0].pad.path,
                             anchor.median_ms(), (load_before, os.getloadavg()[0]))
        finally:
            for rig in rigs:
                rig.close()
    finally:
        for slot in slots:
            slot.close()
        if host is not None:
            host.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(result: E2EResult, n: int) -> None:
    paths = result.paths
    print(f"bench.e2e: refund from card presented to approved and journaled; {CARD}, online "
          f"PIN asked on refunds; {n} refunds per card path, each {SALE_AMOUNT // PARTS / 100:.2f} "
          f"of a {SALE_AMOUNT / 100:.2f} sale; PIN pad on {result.pad}; host pos-emulator serve "
          "on loopback in its own process", flush=True)
    if result.skipped is not None:
        print(f"  pcscd + vpcd path SKIPPED: {result.skipped}", flush=True)
    print(f"  {'stage':<28}" + "".join(f"{r.name:>26}" for r in paths))
    print(f"  {'':<28}" + "".join(f"{'median ms   share':>26}" for _ in paths))
    for stage in STAGES:
        print(f"  {stage:<28}" + "".join(
            f"{r.stage_median_ms(stage):>16.3f} {r.share(stage) * 100:7.1f} %" for r in paths))
    print(f"  {'rest (rules, messages, MAC)':<28}" + "".join(
        f"{statistics.median(r.rest()) * 1000:>16.3f} "
        f"{(1 - sum(r.share(s) for s in STAGES)) * 100:7.1f} %" for r in paths))
    print(f"  {'TOTAL median / p95 (ms)':<28}" + "".join(
        f"{r.median_ms():>16.2f} / {r.p95_ms():6.2f}  " for r in paths))
    for r in paths:
        count = len(r.totals) or 1
        commits = sum(v for k, v in r.calls.items() if k in JOURNAL_WRITES)
        extra = f"; {r.not_approved} NOT APPROVED (left out)" if r.not_approved else ""
        print(f"  {r.name}: {len(r.totals)} refunds timed after {r.sales} sales; min "
              f"{min(r.totals, default=0) * 1000:.2f} ms, max {max(r.totals, default=0) * 1000:.2f}"
              f" ms; per refund {commits / count:.1f} journal commits, "
              f"{r.calls.get('exchange', 0) / count:.1f} host exchanges{extra}")
    print(f"  anchor: bare SQLite INSERT+COMMIT (WAL, synchronous=FULL) in the same directory, "
          f"sampled between rounds: median {result.commit_floor_ms:.3f} ms per commit")
    print(f"  machine: {os.cpu_count()} CPUs shared with pcscd, the host process and anything "
          f"else running; 1-min load average {result.load_average[0]:.2f} before, "
          f"{result.load_average[1]:.2f} after")
    if len(paths) == 2 and paths[1].totals:
        print(f"  ratio median pcscd+vpcd / in-process: "
              f"x{paths[0].median_ms() / paths[1].median_ms():.2f}")
    for r in paths:
        if r.totals:
            verdict = "MET" if r.median_ms() <= TARGET_MS else "MISSED"
            print(f"  target median <= {TARGET_MS:g} ms, {r.name}: {r.median_ms():.2f} ms "
                  f"{verdict}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 200
    if n < 1:
        print("bench.e2e: N must be at least 1", file=sys.stderr)
        return 2
    report(run(n, rounds=min(5, n)), n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
