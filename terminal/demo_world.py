"""The emulated world a training till or the demo runs against (the one place, with the
demo, where the terminal side starts emulator parts next to itself).

:class:`EmulatedWorld` starts, on this machine:

* the acquirer emulator (the real asyncio server on 127.0.0.1, SQLite ledger in
  the data directory), with the terminal provisioned;
* a card slot: a virtual EMV card served through a private pcscd + vpcd and
  read with pyscard like a real card in a real reader, or, where pcscd/vpcd are
  missing or this is not root, attached in-process (``reader_mode`` says which
  and why);
* a virtual PIN pad on a pty whose cardholder types the presented card's PIN
  (or the wrong PIN a trainer sets);
* a virtual ESC/POS printer on a pty.

:func:`open_world_till` wires a :class:`~terminal.core.till.Till` to it: real
TCP host link, EMV kernel over the slot, serial PIN pad driver over the pty.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from drivers.errors import CardTimeoutError, DriverError
from drivers.pinpad import PinPad
from drivers.printer import ReceiptPrinter
from drivers.transport import CardTransport
from emulator.card import InProcessCardTransport, VirtualCard
from emulator.catalogue import CARDS, TestCard, card_by_name
from emulator.faults import FaultPlan
from emulator.host.core import AcquirerHost
from emulator.host.ledger import SqliteLedgerStore
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.pinpad import VirtualPinPad
from emulator.pinpad.cardholder import EnterPin, WalkAway
from emulator.printer import VirtualPrinter
from emulator.server import ServerConfig, acquirer_server
from iso8583.dialects import get_dialect
from terminal.core.config import TerminalSettings, init_terminal
from terminal.core.devices import EmvCardReader, EscPosPrinter, SerialPinPad
from terminal.core.errors import DeviceError
from terminal.core.journal import Journal
from terminal.core.ports import Purpose
from terminal.core.session import Session
from terminal.core.till import Till
from terminal.hostlink import IsoTraceFile, TcpHostLink

TPDU = bytes.fromhex("6000030000")


class HostThread:
    """The acquirer emulator's asyncio server, running in a background thread."""

    def __init__(self, ledger: Path, dialect: str = "cup") -> None:
        self.dialect = get_dialect(dialect)
        self.store = SqliteLedgerStore(ledger)
        self.host = AcquirerHost.from_store(self.store, self.dialect)
        if not any(t.tid == DEMO_TID for t in self.host.terminals()):
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
    """Where the cardholder's card goes: a PC/SC reader (pcscd + vpcd) or in-process.

    A presented card stays until :meth:`remove` (or the next :meth:`present`);
    :meth:`source` waits for one, so a screen can ask for the card before the
    trainer presents it. Removing the card while the till still holds it (a chip
    sale waiting for the host) makes the held card answer as removed, in-process
    as through pcscd.
    """

    def __init__(self, workdir: Path, *, in_process: bool) -> None:
        self.mode = "in-process"
        self.reason = "asked for with --in-process" if in_process else ""
        self._harness: Any = None
        self._reader: Any = None
        self._server: Any = None
        self._card: TestCard | None = None
        self._contactless = False
        self._cancelled = False
        self._changed = threading.Condition()
        self._powered: list[VirtualCard] = []  # in-process cards the till may still hold
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

    @property
    def card(self) -> TestCard | None:
        return self._card

    def present(self, card: TestCard | str, *, contactless: bool = False) -> None:
        """The cardholder inserts (or taps) ``card``."""
        card = card_by_name(card) if isinstance(card, str) else card
        self.remove()
        with self._changed:
            self._card, self._contactless = card, contactless
            if self._harness is not None:
                from emulator.card.vpcd import VpcdCardServer
                self._server = VpcdCardServer(VirtualCard(card), port=self._harness.port(0))
                self._server.insert(wait=5.0)
            self._changed.notify_all()

    def remove(self) -> None:
        with self._changed:
            if self._server is not None:
                self._server.stop()
                self._server = None
                with contextlib.suppress(DriverError):
                    self._reader.wait_for_removal(5.0)
            for powered in self._powered:
                powered.power_off()
            self._powered.clear()
            self._card = None
            self._changed.notify_all()

    @contextlib.contextmanager
    def source(self, timeout: float) -> Iterator[CardTransport]:
        """Wait up to ``timeout`` s for a card, then an open transport to it."""
        with self._changed:
            self._cancelled = False
            if not self._changed.wait_for(lambda: self._card is not None or self._cancelled,
                                          timeout):
                raise CardTimeoutError(f"no card presented within {timeout:g} s")
            if self._cancelled:
                raise CardTimeoutError("waiting for the card was cancelled",
                                       cashier_zh="已取消", cashier_en="Cancelled")
            card, contactless = self._card, self._contactless
        assert card is not None
        virtual: VirtualCard | None = None
        if self._harness is None:
            virtual = VirtualCard(card)
            transport: CardTransport = InProcessCardTransport(virtual, contactless=contactless)
            with self._changed:
                self._powered.append(virtual)
        else:
            self._reader.wait_for_card(timeout)
            transport = self._reader.connect()
        try:
            yield transport
        finally:
            transport.close()
            if virtual is not None:
                with self._changed:
                    if virtual in self._powered:
                        self._powered.remove(virtual)

    def cancel(self) -> None:
        """Wake a :meth:`source` waiting for a card (the cashier pressed Esc)."""
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()
        if self._reader is not None:
            self._reader.cancel()

    def close(self) -> None:
        self.remove()
        if self._reader is not None:
            with contextlib.suppress(DriverError):
                self._reader.close()
        if self._harness is not None:
            self._harness.stop()


@dataclass(frozen=True)
class CardChoice:
    """A test card as the demo panel lists it (no full PAN)."""

    name: str
    label: str
    masked_pan: str
    has_pin: bool
    contactless: bool


class EmulatedWorld:
    """Acquirer emulator, card slot, virtual PIN pad and printer for one training till."""

    def __init__(self, workdir: Path, *, in_process: bool = False, dialect: str = "cup") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.host = HostThread(workdir / "acquirer-ledger.db", dialect)
        self.host.start()
        self.slot: CardSlot | None = None
        self.pad: VirtualPinPad | None = None
        self.printer: VirtualPrinter | None = None
        try:
            self.slot = CardSlot(workdir, in_process=in_process)
            self.pad = VirtualPinPad(master_key=DEMO_TMK).start()
            self.printer = VirtualPrinter().start()
        except BaseException:
            self.stop()
            raise
        self._wrong_pin: str | None = None

    @property
    def reader_mode(self) -> str:
        assert self.slot is not None
        return self.slot.mode + (f" (in-process because: {self.slot.reason})"
                                 if self.slot.reason else "")

    def cards(self) -> list[CardChoice]:
        from iso8583.masking import mask_pan
        return [CardChoice(c.name, c.label, mask_pan(c.pan), c.pin is not None, c.contactless)
                for c in CARDS if c.aid is not None]

    def present(self, name: str, *, contactless: bool = False) -> None:
        """Insert (or tap) a test card; the cardholder will type its PIN when asked."""
        assert self.slot is not None
        card = card_by_name(name)
        self.slot.present(card, contactless=contactless)
        self.cardholder_pin(self._wrong_pin or card.pin)

    def remove(self) -> None:
        assert self.slot is not None
        self.slot.remove()

    def cardholder_pin(self, pin: str | None) -> None:
        """What the cardholder types at every PIN request (None: walks away)."""
        assert self.pad is not None
        self.pad.cardholder.clear()
        self.pad.cardholder.default = EnterPin(pin) if pin else WalkAway()

    def wrong_pin(self, pin: str | None) -> None:
        """A trainer makes the cardholder type ``pin`` instead of the card's PIN (None: right)."""
        self._wrong_pin = pin
        card = self.slot.card if self.slot else None
        self.cardholder_pin(pin or (card.pin if card else None))

    def stop(self) -> None:
        for part in (self.slot, self.pad, self.printer):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close() if isinstance(part, CardSlot) else part.stop()
        self.host.stop()


def open_world_till(world: EmulatedWorld, data_dir: Path, *, training: bool = True,
                    lang: str = "zh", clock: Callable[[], datetime] = datetime.now,
                    trace: IsoTraceFile | None = None) -> Till:
    """A till in ``data_dir`` wired to ``world`` (initialised as the demo terminal if new).

    ``trace`` records the till's ISO 8583 conversation with the emulator."""
    assert world.slot is not None
    assert world.pad is not None
    assert world.printer is not None
    journal = Journal.open(data_dir, clock)
    try:
        if journal.get("setting.tid") is None:
            init_terminal(journal, TerminalSettings(tid=DEMO_TID, mid=DEMO_MID,
                                                    training=training, lang=lang), DEMO_TMK)
    finally:
        journal.close()
    dialect = world.host.dialect
    link = TcpHostLink(dialect, "127.0.0.1", world.host.port, timeout=3.0, tpdu=TPDU,
                       trace=trace)
    reader = EmvCardReader(world.slot.source, description=world.reader_mode,
                           f55_tags=dialect.settings.f55_tags, timeout=60.0,
                           cancel=world.slot.cancel)
    pinpad = SerialPinPad(PinPad.open(world.pad.path), description=f"virtual PIN pad on "
                          f"{world.pad.path}")
    till = Till.open(data_dir, link=link, reader=reader, pinpad=pinpad, clock=clock)
    till.printer = EscPosPrinter(ReceiptPrinter.open(world.printer.path, code_page="gb18030"))
    return till


def virtual_card_reader(name: str, *, contactless: bool = False,
                        f55_tags: tuple[int, ...] = (), timeout: float = 60.0) -> EmvCardReader:
    """``--reader virtual:CARD``: the test card presented in-process to the real EMV kernel."""
    card = card_by_name(name)
    if card.aid is None:
        raise DeviceError(f"test card {name} is stripe-only: this reader reads chips",
                          cashier_zh="磁条卡，请使用芯片卡", cashier_en="No chip on this card")
    if contactless and not card.contactless:
        raise DeviceError(f"test card {name} has no contactless interface",
                          cashier_zh="此卡不支持非接", cashier_en="Card cannot be tapped")

    @contextlib.contextmanager
    def source(timeout: float) -> Iterator[CardTransport]:
        del timeout
        transport = InProcessCardTransport(VirtualCard(card), contactless=contactless)
        try:
            yield transport
        finally:
            transport.close()

    return EmvCardReader(source, description=f"virtual card {name} (in-process)",
                         f55_tags=f55_tags, timeout=timeout)


def test_card_pin(name: str) -> str | None:
    """The PIN the cardholder of a test card types on a virtual PIN pad."""
    return card_by_name(name).pin


class VirtualPinPadPort(SerialPinPad):
    """``--pinpad virtual``: the virtual PIN pad on a pty, driven by the real serial driver."""

    def __init__(self, master_key: bytes, pin: str | None, *, timeout: float = 60.0) -> None:
        self._device = VirtualPinPad(master_key=master_key).start()
        self._device.cardholder.default = EnterPin(pin) if pin else WalkAway()
        super().__init__(PinPad.open(self._device.path),
                         description=f"virtual PIN pad on {self._device.path}", timeout=timeout)

    def close(self) -> None:
        super().close()
        self._device.stop()


#: Operators of a training till, printed on the login screen in training mode only.
TRAINING_OPERATORS: tuple[tuple[str, str, str], ...] = (
    ("99", "12345678", "administrator"),
    ("00", "123456", "supervisor"),
    ("01", "0000", "cashier"),
)
#: Sales a new training till starts with, so a refund can be tried at once.
TRAINING_SALES: tuple[tuple[str, int], ...] = (
    ("cup-debit", 128_00), ("cup-credit", 388_00), ("visa-credit", 59_90),
    ("cup-debit", 1_200_00),
)


def training_session(data_dir: Path, *, lang: str = "zh", in_process: bool = False,
                     clock: Callable[[], datetime] = datetime.now
                     ) -> tuple[Session, EmulatedWorld]:
    """A training till: the emulated world, its own journal, operators, signed on, with sales.

    ``data_dir`` keeps the training journal and the acquirer ledger apart from any
    real terminal's data; run it again and the same till, ledger and sales are there.
    """
    world = EmulatedWorld(data_dir / "world", in_process=in_process)
    try:
        till = open_world_till(world, data_dir / "terminal", training=True, lang=lang,
                               clock=clock)
        session = Session(till)
        if not session.has_operators:
            admin, supervisor, cashier = TRAINING_OPERATORS
            session.operators.bootstrap(admin[1], supervisor[1])
            session.operators.add(cashier[0], cashier[1], by=session.operators.get("99"),
                                  name="training")
        till.prepare()
        if not till.journal.records("kind = 'sale'"):
            for name, amount in TRAINING_SALES:
                world.present(name)
                card = till.read_card(Purpose.SALE, amount)
                till.sale(amount, card, operator=TRAINING_OPERATORS[2][0])
            world.remove()
    except BaseException:
        world.stop()
        raise
    return session, world
