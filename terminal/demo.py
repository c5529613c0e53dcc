"""The demo: a cashier's original-route refund, end to end, with no hardware.

This is the demo wiring, the one place where the terminal side starts the
emulator parts next to itself. It starts, on this machine:

* the acquirer emulator: the real asyncio server on 127.0.0.1 with a SQLite
  ledger in a temporary directory;
* a virtual EMV card, served through a private pcscd + vpcd and read with
  pyscard like a real card in a real reader (when pcscd/vpcd are not
  installed or this is not root, the card is attached in-process and the demo
  says so);
* a virtual PIN pad on a pty, whose scripted cardholder types the PIN;
* a virtual ESC/POS receipt printer on a pty.

Then it plays a day at the till: sign-on, a sale, a partial refund to the same
card, a refund attempt with a different card (refused by the terminal), a
refund over the refundable amount (refused by the terminal, then shown refused
by the host too), a refund of the rest, a void of the refunded sale (the host
refuses), a sale whose answer is lost (fault injection: the terminal reverses
it), and settlement, with totals that agree. ``--verbose`` lists every message
(PANs masked). Exit code 0 when every step ended as it should.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.emv import EmvKernel, TerminalConfig, TransactionData, TransactionType
from drivers.errors import DriverError
from drivers.pinpad import PinPad
from drivers.printer import ReceiptPrinter
from drivers.transport import CardTransport
from emulator.card import InProcessCardTransport, VirtualCard
from emulator.catalogue import TestCard, card_by_name
from emulator.faults import FaultPlan
from emulator.host.core import AcquirerHost
from emulator.host.ledger import SqliteLedgerStore
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.pinpad import VirtualPinPad
from emulator.printer import VirtualPrinter
from emulator.server import ServerConfig, acquirer_server
from emulator.simterminal import Approved, Declined, SimTerminal
from iso8583.dialects import get_dialect
from iso8583.masking import mask_pan
from iso8583.message import Message
from iso8583.pretty import format_message
from iso8583.responses import explain
from terminal.errors import CardMismatchError, HostTimeoutError, RefundAmountError, TerminalError
from terminal.hostlink import TcpHostLink

DIALECT = get_dialect("cup")
TPDU = bytes.fromhex("6000030000")


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


# --- the emulated world ----------------------------------------------------------------
class HostThread:
    """The acquirer emulator's asyncio server, running in a background thread."""

    def __init__(self, ledger: Path) -> None:
        self.store = SqliteLedgerStore(ledger)
        self.host = AcquirerHost.from_store(self.store, DIALECT)
        if not self.host.terminals():
            self.store.commit([self.host.provision(DEMO_TID, DEMO_MID, DEMO_TMK)])
        self.faults = FaultPlan()
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="acquirer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the acquirer emulator did not start")

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = acquirer_server(self.host, self.store,
                                 config=ServerConfig(host="127.0.0.1", port=0),
                                 faults=self.faults)
        _, self.port = await server.start()
        self._loop = asyncio.get_running_loop()
        self._stop = server.request_stop
        self._ready.set()
        await server.serve_until_stopped()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(timeout=10)
        self.store.close()


class CardSlot:
    """Where the cardholder's card goes: a PC/SC reader (pcscd + vpcd) or in-process."""

    def __init__(self, workdir: Path, *, in_process: bool) -> None:
        self.mode = "in-process"
        self.reason = "asked for with --in-process" if in_process else ""
        self._harness: Any = None
        self._server: Any = None
        self._reader: Any = None
        if in_process:
            return
        from emulator.card.pcscd_harness import PcscdHarness, unavailable_reason
        why = unavailable_reason()
        if why is not None:
            self.reason = why
            return
        try:
            harness = PcscdHarness(workdir / "pcscd")
            harness.start()
            harness.export_socket_env()
            from drivers.pcsc import PcscReader
            self._reader = PcscReader(harness.reader_name(0))
            self._harness = harness
            self.mode = f"PC/SC reader '{harness.reader_name(0)}' (private pcscd + vpcd, pyscard)"
        except (OSError, RuntimeError, DriverError) as exc:
            self.reason = f"private pcscd did not start: {exc}"

    @contextlib.contextmanager
    def present(self, card: TestCard, *, contactless: bool = False) -> Iterator[CardTransport]:
        """The cardholder inserts (or taps) ``card``; it is removed afterwards."""
        virtual = VirtualCard(card)
        if self._harness is None:
            transport = InProcessCardTransport(virtual, contactless=contactless)
            try:
                yield transport
            finally:
                transport.close()
            return
        from emulator.card.vpcd import VpcdCardServer
        server = VpcdCardServer(virtual, port=self._harness.port(0))
        server.insert(wait=5.0)
        try:
            self._reader.wait_for_card(5.0)
            transport = self._reader.connect()
            try:
                yield transport
            finally:
                transport.close()
        finally:
            server.stop()
            with contextlib.suppress(DriverError):
                self._reader.wait_for_removal(5.0)

    def close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(DriverError):
                self._reader.close()
        if self._harness is not None:
            self._harness.stop()


# --- the cashier's steps ---------------------------------------------------------------
@dataclass
class StepResult:
    title: str
    expected: str
    outcome: str
    ok: bool


class Till:
    """The terminal side of the demo: card, PIN pad, host link, printer, journal of approvals."""

    def __init__(self, host_port: int, slot: CardSlot, pinpad: PinPad,
                 pad: VirtualPinPad, printer: ReceiptPrinter, virtual_printer: VirtualPrinter,
                 *, verbose: bool, out: Callable[[str], None]) -> None:
        self.sim = SimTerminal(DIALECT, DEMO_TID, DEMO_MID, DEMO_TMK, dt.datetime.now)
        self.link = TcpHostLink(DIALECT, "127.0.0.1", host_port, timeout=3.0, tpdu=TPDU)
        self.slot = slot
        self.pinpad = pinpad
        self.pad = pad
        self.printer = printer
        self.virtual_printer = virtual_printer
        self.kernel = EmvKernel(TerminalConfig(refund_ends_with="aac"))
        self.verbose = verbose
        self.out = out
        self.refunded: dict[str, int] = {}  # original RRN -> approved refunds (terminal journal)
        self.results: list[StepResult] = []

    # exchanges ---------------------------------------------------------------------
    def send(self, request: Message) -> Approved | Declined:
        if self.verbose:
            self.out(_indent(">> " + format_message(request, DIALECT)))
        frame = self.link.exchange(request)
        if self.verbose:
            self.out(_indent("<< " + format_message(frame.message, DIALECT)))
        return self.sim.check_response(request, frame.message, body=frame.body)

    def read_card(self, card: TestCard, kind: TransactionType, amount: int) -> dict[int, Any]:
        """Card read through the EMV kernel; returns the card's message fields."""
        with self.slot.present(card) as transport:
            now = dt.datetime.now()
            result = self.kernel.read_card(transport, TransactionData(
                kind, amount, now.date(), now.time().replace(microsecond=0),
                sequence_counter=int(self.sim.stan)))
        self.out(f"   card: {result.label or card.name} {result.masked_pan} "
                 f"({'contactless' if result.contactless else 'chip'}, "
                 f"{result.apdu_count} APDUs"
                 f"{', ' + result.cryptogram.type.value if result.cryptogram else ''})")
        fields: dict[int, Any] = dict(result.message_fields(pin_entered=card.pin is not None))
        return fields

    def pin_block(self, card: TestCard, amount: int) -> bytes | None:
        if card.pin is None:
            return None
        self.pad.cardholder.enter_pin(card.pin, per_digit=0.01)
        result = self.pinpad.get_pin_block(card.pan, amount, timeout=10.0)
        self.out("   PIN: entered on the PIN pad (format 0 block, never shown)")
        return result.pin_block

    def card_present(self, request: Message, card_fields: dict[int, Any],
                     pin_block: bytes | None, *, f55: bool) -> Message:
        for number, value in card_fields.items():
            if number == 55 and not f55:
                continue
            request[number] = value
        if pin_block is not None:
            request[52] = pin_block
            request[26] = "06"
            request[53] = "2600000000000000"
        return self.sim.remac(request)

    def receipt(self, title: str, lines: list[str]) -> None:
        before = len(self.virtual_printer.receipts)
        self.printer.print_receipt(lines, title=title)
        printed = self.virtual_printer.wait_for_receipts(before + 1, timeout=3.0)
        text = printed[-1] if printed else "(the printer printed nothing)"
        self.out(_indent(text.rstrip("\n"), "   | "))

    def record(self, title: str, expected: str, outcome: str, ok: bool) -> None:
        self.results.append(StepResult(title, expected, outcome, ok))
        mark = "ok " if ok else "UNEXPECTED"
        self.out(f"   => {outcome}   [{mark}]")

    # the steps ---------------------------------------------------------------------
    def sign_on(self) -> None:
        self.out("\n[1] 签到 SIGN-ON")
        request = self.sim.sign_on_request(form=3)
        frame = self.link.exchange(request)
        self.sim.accept_sign_on(frame.message)
        f62 = frame.message[62]
        assert isinstance(f62, bytes)
        # the PIK arrives under the TMK, which is also the PIN pad's master key
        self.pinpad.load_working_key(f62[0:16], f62[16:20])
        self.record("sign-on", "keys loaded", "签到成功 SIGNED ON: working keys checked "
                    "(check values match) and the PIK loaded into the PIN pad", True)

    def sale(self, card: TestCard, amount: int, *, lost_answer: bool = False
             ) -> Approved | None:
        self.out(f"\n[{len(self.results) + 1}] 消费 SALE {yuan(amount)} CNY, card {card.name}")
        fields = self.read_card(card, TransactionType.SALE, amount)
        block = self.pin_block(card, amount)
        request = self.card_present(self.sim.sale(card, amount), fields, block, f55=True)
        try:
            result = self.send(request)
        except HostTimeoutError as exc:
            self.out(f"   no answer from the host ({exc.message}): reversing (0400, F39=98)")
            reversal = self.sim.reversal(request, "98")
            answer = self.send(reversal)
            ok = lost_answer and isinstance(answer, Approved)
            self.record("sale, answer lost", "reversed", "冲正成功 REVERSED: nothing was "
                        "charged", ok)
            return None
        if isinstance(result, Approved):
            self.record("sale", "approved", f"交易成功 APPROVED, RRN {result.rrn}, "
                        f"auth {result.auth_code}", not lost_answer)
            self.receipt("签购单 SALE", [
                f"商户 MID {DEMO_MID}", f"终端 TID {DEMO_TID}", f"卡号 {mask_pan(card.pan)}",
                f"金额 AMOUNT CNY {yuan(amount)}", f"参考号 RRN {result.rrn}",
                f"授权码 AUTH {result.auth_code}"])
            return result
        text = explain(result.response_code)
        self.record("sale", "approved", f"{text.zh} {text.en} ({result.response_code})", False)
        return None

    def refund(self, original: Approved, card: TestCard, amount: int, *, expect: str,
               bypass_terminal_checks: bool = False) -> None:
        """退货: the card presented must be the original card; amount <= refundable."""
        rrn = original.rrn or ""
        refundable = (original.amount or 0) - self.refunded.get(rrn, 0)
        self.out(f"\n[{len(self.results) + 1}] 退货 REFUND {yuan(amount)} CNY of sale RRN {rrn} "
                 f"(refundable {yuan(refundable)}), card {card.name}")
        try:
            fields = self.read_card(card, TransactionType.REFUND, amount)
            if not bypass_terminal_checks:
                if fields.get(2) != original.pan:
                    raise CardMismatchError("card PAN differs from the original sale's PAN")
                if not 0 < amount <= refundable:
                    raise RefundAmountError(f"{amount} fen asked, {refundable} refundable")
            else:
                self.out("   (QA: terminal checks bypassed to show that the host enforces "
                         "the rule too)")
            block = self.pin_block(card, amount)
            with_f55 = DIALECT.settings.refund_carries_f55
            request = self.card_present(self.sim.refund(original, amount), fields, block,
                                        f55=with_f55)
            result = self.send(request)
        except TerminalError as exc:
            self.record("refund", expect, f"终端拒绝 REFUSED BY TERMINAL: {exc.cashier_zh} / "
                        f"{exc.cashier_en}", expect == "terminal refuses")
            return
        if isinstance(result, Approved):
            self.refunded[rrn] = self.refunded.get(rrn, 0) + amount
            left = (original.amount or 0) - self.refunded[rrn]
            self.record("refund", expect, f"退款成功 REFUND APPROVED, RRN {result.rrn}; "
                        f"still refundable {yuan(left)}", expect == "approved")
            self.receipt("退货单 REFUND", [
                f"商户 MID {DEMO_MID}", f"终端 TID {DEMO_TID}", f"卡号 {mask_pan(card.pan)}",
                f"退货金额 REFUND CNY {yuan(amount)}", f"原参考号 ORIG RRN {rrn}",
                f"参考号 RRN {result.rrn}", "款项将原路退回 Money goes back to this card"])
            return
        text = explain(result.response_code)
        self.record("refund", expect, f"主机拒绝 DECLINED BY HOST {result.response_code}: "
                    f"{text.zh} / {text.en}", expect == f"host {result.response_code}")

    def void(self, original: Approved, card: TestCard, *, expect: str) -> None:
        self.out(f"\n[{len(self.results) + 1}] 撤销 VOID of sale RRN {original.rrn}")
        result = self.send(self.sim.void(original))
        if isinstance(result, Approved):
            self.record("void", expect, f"撤销成功 VOID APPROVED, RRN {result.rrn}",
                        expect == "approved")
            return
        text = explain(result.response_code)
        self.record("void", expect, f"主机拒绝 DECLINED BY HOST {result.response_code}: "
                    f"{text.zh} / {text.en}", expect == f"host {result.response_code}")
        del card

    def settle(self) -> None:
        self.out(f"\n[{len(self.results) + 1}] 结算 SETTLEMENT")
        totals = self.sim.totals()
        result = self.send(self.sim.settlement(totals))
        balanced = isinstance(result, Approved) and result.balanced is True
        self.record("settlement", "balanced", "结算平 TOTALS AGREE with the host" if balanced
                    else f"结算不平 TOTALS DIFFER ({getattr(result, 'response_code', '?')})",
                    balanced)


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def play(till: Till, host: HostThread, card_name: str, other_card_name: str) -> None:
    card = card_by_name(card_name)
    other = card_by_name(other_card_name)
    till.sign_on()
    sale = till.sale(card, 100_00)
    if sale is None:
        return
    till.refund(sale, card, 30_00, expect="approved")
    till.refund(sale, other, 10_00, expect="terminal refuses")
    till.refund(sale, card, 80_00, expect="terminal refuses")
    till.refund(sale, card, 80_00, expect="host 64", bypass_terminal_checks=True)
    till.refund(sale, card, 70_00, expect="approved")
    till.void(sale, card, expect="host 12")
    host.faults.add("drop@once")
    till.sale(card, 20_00, lost_answer=True)
    host.faults.clear()
    till.settle()


def ledger_view(host: HostThread, out: Callable[[str], None]) -> None:
    out("\nThe acquirer's ledger (what the host booked):")
    for row in host.host.transactions():
        if row.kind not in ("sale", "refund", "void", "reversal"):
            continue
        extra = f", refunded {yuan(row.refunded)}" if row.kind == "sale" else ""
        out(f"   {row.kind:<8} STAN {row.stan} {row.pan_masked or '':<18} "
            f"{yuan(row.amount or 0):>8}  {row.status:<9} code {row.response_code}{extra}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pos-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--card", default="cup-debit", help="test card for the sale")
    parser.add_argument("--other-card", default="visa-credit",
                        help="the wrong card the cardholder tries for a refund")
    parser.add_argument("--in-process", action="store_true",
                        help="attach the virtual card in-process instead of through pcscd")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every message")
    parser.add_argument("--ledger", type=Path,
                        help="keep the acquirer's ledger in this file (default: a temporary one); "
                             "inspect it with: pos-emulator ledger --ledger FILE")
    args = parser.parse_args(argv)
    out = print
    try:
        card_by_name(args.card)
        card_by_name(args.other_card)
    except KeyError as exc:
        print(f"pos-demo: {exc.args[0]}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pos-demo-"))
    ledger = args.ledger if args.ledger is not None else workdir / "ledger.db"
    if args.ledger is not None and args.ledger.exists():
        print(f"pos-demo: {args.ledger} exists; give a new file for the demo ledger",
              file=sys.stderr)
        return 2
    host = HostThread(ledger)
    slot: CardSlot | None = None
    try:
        host.start()
        slot = CardSlot(workdir, in_process=args.in_process)
        with VirtualPinPad(master_key=DEMO_TMK) as pad, VirtualPrinter() as vprinter:
            out("pos-refund demo: an original-route refund (原路退款) with no hardware")
            kept = "" if args.ledger is not None else " (temporary)"
            out(f"   acquirer emulator  127.0.0.1:{host.port}, ledger {ledger}{kept}")
            out(f"   card reader        {slot.mode}"
                + (f"\n                      (in-process because: {slot.reason})"
                   if slot.reason else ""))
            out(f"   PIN pad            virtual, on {pad.path}")
            out(f"   receipt printer    virtual ESC/POS, on {vprinter.path}")
            pinpad = PinPad.open(pad.path)
            printer = ReceiptPrinter.open(vprinter.path, code_page="gb18030")
            till = Till(host.port, slot, pinpad, pad, printer, vprinter,
                        verbose=args.verbose, out=out)
            try:
                play(till, host, args.card, args.other_card)
            finally:
                till.link.close()
                pinpad.close()
                printer.close()
            ledger_view(host, out)
            bad = [r for r in till.results if not r.ok]
            out(f"\n{len(till.results) - len(bad)} of {len(till.results)} steps ended as "
                f"expected.")
            return 1 if bad else 0
    except (TerminalError, DriverError) as exc:
        print(f"pos-demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if slot is not None:
            slot.close()
        host.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
