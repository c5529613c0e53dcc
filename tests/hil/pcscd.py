"""HIL plumbing for card readers: our own pcscd + vpcd, virtual cards in its slots.

How the suite gets a PC/SC stack (see also :mod:`emulator.card.pcscd_harness`):

* ``POS_HIL_READER`` set: the machine's own pcscd and that real reader are
  used; nothing is started, and tests that need a virtual card (fault knobs,
  scripted insert/remove, a named catalogue card) skip with a reason.
* otherwise: the session starts a private pcscd under ``unshare -m`` with its
  socket in a per-run directory and its vpcd slots on free ports, so it never
  collides with a pcscd already running or another test run. The pyscard
  client in this process talks to it because :func:`configure_client` sets
  ``PCSCLITE_CSOCK_NAME`` at conftest import time, before any test creates a
  PC/SC context (libpcsclite reads it once per process). Where mount
  namespaces are not permitted (some containers) and no other pcscd runs,
  pcscd runs in the host's ``/run/pcscd`` and the same socket path is a
  symbolic link to it. When pcscd/vpcd are missing or we are not root, the
  tests skip with what to install.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from drivers.errors import DriverError
from drivers.pcsc import PcscReader, list_readers
from emulator.card import VirtualCard, parse_card_faults
from emulator.card.faults import CardFaults
from emulator.card.pcscd_harness import SOCKET_ENV, PcscdHarness, socket_path_for
from emulator.card.vpcd import VpcdCardServer
from emulator.catalogue import card_by_name

__all__ = [
    "REAL_READER_ENV",
    "WORKDIR",
    "VirtualCardSlot",
    "configure_client",
    "real_reader",
    "wait_for_readers",
]

REAL_READER_ENV = "POS_HIL_READER"
WORKDIR = Path(tempfile.gettempdir()) / f"pos-hil-pcscd-{os.getpid()}"


def real_reader() -> str | None:
    """The real reader named by ``POS_HIL_READER`` (a name or a piece of it), if any."""
    return os.environ.get(REAL_READER_ENV) or None


def configure_client() -> None:
    """Point this process's libpcsclite at the private pcscd (virtual mode only)."""
    if real_reader() is None:
        os.environ[SOCKET_ENV] = str(socket_path_for(WORKDIR))


def wait_for_readers(names: list[str], timeout: float = 10.0) -> None:
    """Poll pcscd's reader list until every name is present (pcscd adds readers
    asynchronously after its socket appears)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            seen = list_readers()
        except DriverError:
            seen = []
        if all(n in seen for n in names):
            return
        time.sleep(0.02)
    raise TimeoutError(f"readers {names} did not appear in {timeout} s (seen: {seen})")


class VirtualCardSlot:
    """One vpcd slot of the private pcscd, into which a test puts catalogue cards.

    ``insert("cup-debit", contactless=True, faults="remove@read_record:2")``
    connects a fresh :class:`VirtualCard` to the slot; :meth:`remove` pulls it
    out. :meth:`close` (done by the fixture) removes the card and waits until
    pcscd has seen the slot empty, so the next test starts clean.
    """

    def __init__(self, harness: PcscdHarness, slot: int = 0) -> None:
        self.harness = harness
        self.slot = slot
        self.reader_name = harness.reader_name(slot)
        self.card: VirtualCard | None = None
        self.server: VpcdCardServer | None = None

    def insert(self, name: str, *, contactless: bool = False, t0: bool = False,
               faults: str | CardFaults = "", atc: int = 0) -> VirtualCard:
        """Put a new virtual card personalised as catalogue card ``name`` in the slot."""
        self.remove()
        plan = parse_card_faults(faults) if isinstance(faults, str) else faults
        card = VirtualCard(card_by_name(name), t0=t0, faults=plan, atc=atc)
        card.power_on(contactless=contactless)
        card.power_off()
        self.card = card
        self.server = VpcdCardServer(card, port=self.harness.port(self.slot))
        if not self.server.insert(wait=10):
            raise TimeoutError(f"vpcd slot {self.slot} did not accept the card")
        return card

    def reinsert(self) -> None:
        """Put the same card object back (its ATC and fault counters are kept)."""
        if self.server is None:
            raise RuntimeError("no card was inserted in this slot")
        if not self.server.insert(wait=10):
            raise TimeoutError(f"vpcd slot {self.slot} did not accept the card")

    def remove(self) -> None:
        """Pull the card out (the server object is kept for :meth:`reinsert`)."""
        if self.server is not None:
            self.server.remove()

    def close(self, timeout: float = 5.0) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            # pcscd gone or slow: the next insert replaces the card anyway.
            with PcscReader(self.reader_name) as reader, contextlib.suppress(DriverError):
                reader.wait_for_removal(timeout)
