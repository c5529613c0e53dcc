"""The scripted walkthrough: a cashier's original-route refund, end to end, with no hardware.

The till is the real terminal core (:class:`terminal.core.till.Till`) with a real
journal in a temporary data directory; around it
:class:`terminal.demo_world.EmulatedWorld`
starts the acquirer emulator on 127.0.0.1 (SQLite ledger), a virtual EMV card read
through a private pcscd + vpcd with pyscard (in-process where pcscd/vpcd are
missing or this is not root, and it says so), a virtual PIN pad and a virtual
ESC/POS printer on ptys.

Then it plays a day at the till: sign-on, a sale, a partial refund to the same
card, a refund attempt with a different card and one over the refundable amount
(both refused by the terminal, nothing sent), a refund of the rest, a void of the
refunded sale (refused by the terminal), a sale whose answer is lost (fault
injection: the terminal reverses it), a sale voided the same day, and
settlement with totals that agree with the host. ``--verbose`` names every step
the till takes. Exit code 0 when every step ended as it should.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from drivers.errors import DriverError
from emulator.catalogue import card_by_name
from terminal.core.errors import RuleError, TerminalError
from terminal.core.money import format_amount
from terminal.core.ports import Purpose, Step
from terminal.core.receipts import Copy, MerchantInfo, build_receipt, render_text
from terminal.core.records import RefundReason, TxnRecord
from terminal.core.refund_status import ArrivalWindows, card_type
from terminal.core.till import Outcome, Till
from terminal.demo_world import EmulatedWorld, open_world_till
from terminal.hostlink import IsoTraceFile


@dataclass
class StepResult:
    title: str
    expected: str
    outcome: str
    ok: bool


class Walkthrough:
    """The cashier's steps, each checked against what should happen."""

    def __init__(self, till: Till, world: EmulatedWorld, *, verbose: bool,
                 out: Callable[[str], None]) -> None:
        self.till = till
        self.world = world
        self.verbose = verbose
        self.out = out
        self.results: list[StepResult] = []
        self.merchant = MerchantInfo(till.settings.merchant_name, till.settings.mid,
                                     till.settings.tid)

    def progress(self, step: Step) -> None:
        if self.verbose:
            self.out(f"      ... {step.value}")

    def record(self, title: str, expected: str, outcome: str, ok: bool) -> None:
        self.results.append(StepResult(title, expected, outcome, ok))
        self.out(f"   => {outcome}   [{'ok ' if ok else 'UNEXPECTED'}]")

    def header(self, text: str) -> None:
        self.out(f"\n[{len(self.results) + 1}] {text}")

    def card(self, name: str, purpose: Purpose, amount: int):  # type: ignore[no-untyped-def]
        self.world.present(name)
        read = self.till.read_card(purpose, amount, self.progress)
        self.out(f"   card: {read.label or name} {read.masked_pan} "
                 f"({'contactless' if read.contactless else 'chip'}"
                 f"{', ' + read.cryptogram_type if read.cryptogram_type else ''})")
        return read

    def receipt(self, record: TxnRecord) -> None:
        window = ArrivalWindows().text(card_type(record), "both") \
            if record.kind.value == "refund" else None
        slip = build_receipt(record, self.merchant, Copy.CARDHOLDER, "both",
                             training=self.till.settings.training, arrival_window=window)
        text = render_text(slip, 42)
        printer = self.world.printer
        before = len(printer.receipts) if printer else 0
        if self.till.printer is not None:
            self.till.printer.print_text(text)
        printed = printer.wait_for_receipts(before + 1, timeout=3.0) if printer else []
        shown = printed[-1] if printed else text
        self.out("\n".join("   | " + line for line in shown.rstrip("\n").splitlines()))

    def outcome_text(self, outcome: Outcome) -> str:
        r = outcome.record
        if outcome.approved:
            return (f"APPROVED, RRN {r.rrn}, auth {r.auth_code}, voucher {r.voucher}"
                    + (", card TC" if r.cryptogram_type == "TC" else ""))
        if outcome.card_refused is not None:
            zh, en = outcome.next_step
            return f"CARD DECLINED, {outcome.status.value.upper()}: {zh} / {en}"
        if outcome.response is not None and r.response_code:
            return f"DECLINED {r.response_code}: {outcome.response.zh} / {outcome.response.en}"
        zh, en = outcome.next_step
        return f"{outcome.status.value.upper()}: {zh} / {en}"

    # --- the steps -------------------------------------------------------------------
    def sign_on(self) -> None:
        self.header("签到 SIGN-ON")
        self.till.sign_on(self.progress)
        self.record("sign-on", "keys loaded", "签到成功 SIGNED ON: working keys checked by "
                    "their check values, the PIK loaded into the PIN pad", True)

    def sale(self, card: str, amount: int, *, expect: str = "approved") -> TxnRecord | None:
        self.header(f"消费 SALE {format_amount(amount)} CNY, card {card}")
        read = self.card(card, Purpose.SALE, amount)
        outcome = self.till.sale(amount, read, progress=self.progress)
        self.record("sale", expect, self.outcome_text(outcome),
                    outcome.status.value == expect)
        if outcome.approved:
            self.receipt(outcome.record)
            return outcome.record
        return None

    def refund(self, original: TxnRecord, card: str, amount: int, *, expect: str) -> None:
        self.header(f"退货 REFUND {format_amount(amount)} CNY of voucher {original.voucher} "
                    f"(RRN {original.rrn}), card {card}")
        try:
            read = self.card(card, Purpose.REFUND, amount)
            quote = self.till.quote_refund(original, read, amount, RefundReason.DAMAGED)
            self.out(f"   quote: original {format_amount(quote.original_amount or 0)}, "
                     f"refunded {format_amount(quote.already_refunded or 0)}, refundable "
                     f"{format_amount(quote.refundable or 0)}, this refund "
                     f"{format_amount(amount)}, card {quote.masked_pan}")
            outcome = self.till.refund(quote, progress=self.progress)
        except RuleError as exc:
            self.record("refund", expect, f"终端拒绝 REFUSED BY TERMINAL (nothing sent): "
                        f"{exc.cashier_zh} / {exc.cashier_en}", expect == "refused")
            return
        self.record("refund", expect, "退款成功 REFUND " + self.outcome_text(outcome)
                    if outcome.approved else self.outcome_text(outcome),
                    outcome.status.value == expect)
        if outcome.approved:
            self.receipt(outcome.record)

    def void(self, original: TxnRecord, *, expect: str) -> None:
        self.header(f"撤销 VOID of voucher {original.voucher} (RRN {original.rrn})")
        try:
            quote = self.till.quote_void(original)
            outcome = self.till.void(quote, progress=self.progress)
        except RuleError as exc:
            self.record("void", expect, f"终端拒绝 REFUSED BY TERMINAL (nothing sent): "
                        f"{exc.cashier_zh} / {exc.cashier_en}", expect == "refused")
            return
        self.record("void", expect, "撤销 VOID " + self.outcome_text(outcome),
                    outcome.status.value == expect)

    def lost_answer_sale(self, card: str, amount: int) -> None:
        self.world.host.faults.add("drop@once")
        try:
            self.sale(card, amount, expect="reversed")
        finally:
            self.world.host.faults.clear()

    def settle(self) -> None:
        self.header("结算 SETTLEMENT")
        result = self.till.settle(self.progress)
        dom = result.totals.domestic
        self.out(f"   terminal totals: debits {dom.debit_count} / "
                 f"{format_amount(dom.debit_amount)}, credits {dom.credit_count} / "
                 f"{format_amount(dom.credit_amount)}")
        self.record("settlement", "balanced",
                    "结算平 TOTALS AGREE with the host" if result.balanced else
                    f"结算不平 TOTALS DIFFER: batch uploaded ({result.uploaded} items)",
                    result.balanced)


def play(walk: Walkthrough, card: str, other_card: str) -> None:
    walk.sign_on()
    sale = walk.sale(card, 100_00)
    if sale is None:
        return
    walk.refund(sale, card, 30_00, expect="approved")
    walk.refund(sale, other_card, 10_00, expect="refused")
    walk.refund(sale, card, 80_00, expect="refused")
    walk.refund(sale, card, 70_00, expect="approved")
    walk.void(sale, expect="refused")
    walk.lost_answer_sale(card, 20_00)
    second = walk.sale(card, 15_00)
    if second is not None:
        walk.void(second, expect="approved")
    walk.settle()


def ledger_view(world: EmulatedWorld, till: Till, out: Callable[[str], None]) -> None:
    out("\nThe acquirer's ledger (what the host booked):")
    for row in world.host.host.transactions():
        if row.kind not in ("sale", "refund", "void", "reversal"):
            continue
        extra = f", refunded {format_amount(row.refunded)}" if row.kind == "sale" else ""
        out(f"   {row.kind:<8} STAN {row.stan} {row.pan_masked or '':<18} "
            f"{format_amount(row.amount or 0):>8}  {row.status:<9} code {row.response_code}"
            f"{extra}")
    out("\nThe terminal's journal:")
    for rec in till.journal.iter_all():
        out(f"   {rec.kind.value:<8} voucher {rec.voucher} {rec.pan_masked:<18} "
            f"{format_amount(rec.amount):>8}  {rec.status.value:<9} code "
            f"{rec.response_code or '--'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pos-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--card", default="cup-debit", help="test card for the sale")
    parser.add_argument("--other-card", default="visa-credit",
                        help="the wrong card the cardholder tries for a refund")
    parser.add_argument("--in-process", action="store_true",
                        help="attach the virtual card in-process instead of through pcscd")
    parser.add_argument("--verbose", "-v", action="store_true", help="name every step")
    parser.add_argument("--trace", type=Path, metavar="FILE",
                        help="record the till's ISO 8583 conversation with the emulator to "
                             "FILE (masked JSONL, started afresh; pos-iso trace show FILE)")
    parser.add_argument("--keep", type=Path,
                        help="keep the terminal journal and the acquirer ledger in this new "
                             "directory (default: a temporary one)")
    args = parser.parse_args(argv)
    out = print
    try:
        card_by_name(args.card)
        card_by_name(args.other_card)
    except KeyError as exc:
        print(f"pos-demo: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep.exists():
        print(f"pos-demo: {args.keep} exists; give a new directory", file=sys.stderr)
        return 2
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="pos-demo-"))
    world: EmulatedWorld | None = None
    till: Till | None = None
    trace: IsoTraceFile | None = None
    try:
        world = EmulatedWorld(workdir / "world", in_process=args.in_process)
        trace = (IsoTraceFile(args.trace, world.host.dialect, append=False)
                 if args.trace is not None else None)
        till = open_world_till(world, workdir / "terminal", training=True, lang="zh",
                               trace=trace)
        out("pos-refund demo: an original-route refund (原路退款) with no hardware")
        out(f"   terminal journal   {workdir / 'terminal'} (training terminal "
            f"{till.settings.tid})")
        out(f"   acquirer emulator  127.0.0.1:{world.host.port}, ledger "
            f"{workdir / 'world' / 'acquirer-ledger.db'}")
        out(f"   card reader        {world.reader_mode}")
        out(f"   PIN pad            {till.pinpad.describe() if till.pinpad else 'none'}")
        printer_path = world.printer.path if world.printer else "-"
        out(f"   receipt printer    virtual ESC/POS on {printer_path}")
        walk = Walkthrough(till, world, verbose=args.verbose, out=out)
        play(walk, args.card, args.other_card)
        ledger_view(world, till, out)
        bad = [r for r in walk.results if not r.ok]
        out(f"\n{len(walk.results) - len(bad)} of {len(walk.results)} steps ended as expected.")
        return 1 if bad else 0
    except (TerminalError, DriverError) as exc:
        print(f"pos-demo: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if till is not None:
            till.close()
        if world is not None:
            world.stop()
        if trace is not None:
            trace.close()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
