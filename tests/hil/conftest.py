"""Fixtures of the hardware-in-the-loop suite for card readers (PC/SC).

Approach (details in :mod:`tests.hil.pcscd`): by default the session starts its
OWN pcscd with the vpcd driver, isolated from any pcscd already running by a
private mount namespace (``unshare -m``, root) with a per-run socket directory
bind-mounted over ``/run/pcscd`` and vpcd on free ports; the test process
reaches it through ``PCSCLITE_CSOCK_NAME``, set here at import time, before
any PC/SC context exists (without mount namespaces, and with no other pcscd
running, pcscd runs in the host's /run/pcscd and that path is a link to it).
Virtual cards connect to vpcd from this process.
When ``POS_HIL_READER`` names a real reader, the system pcscd and that reader
are used instead and virtual-card fixtures skip.

Fixtures for other HIL test files:

* ``pcscd_harness`` (session): the running :class:`PcscdHarness`, or None with
  a real reader; skips when pcscd/vpcd are missing or not root.
* ``pcsc_reader``: the name of a present reader (``Virtual PCD 00 00`` or the
  real one).
* ``card_reader``: a :class:`drivers.pcsc.PcscReader` on it, closed afterwards.
* ``virtual_card_slot`` / ``virtual_card_slot_1``: a
  :class:`tests.hil.pcscd.VirtualCardSlot` for slot 0 / 1; skip on a real reader.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from drivers.pcsc import PcscReader
from emulator.card.pcscd_harness import PcscdHarness, PcscdStartError, unavailable_reason
from tests.hil.pcscd import (
    WORKDIR,
    VirtualCardSlot,
    configure_client,
    real_reader,
    wait_for_readers,
)

configure_client()

NEEDS_VIRTUAL = ("needs the virtual card (catalogue card, fault knobs, scripted insert/remove); "
                 "POS_HIL_READER selects a real reader")


@pytest.fixture(scope="session")
def pcscd_harness() -> Iterator[PcscdHarness | None]:
    if real_reader() is not None:
        yield None
        return
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"PC/SC HIL tests need our own pcscd: {reason}")
    harness = PcscdHarness(WORKDIR)
    try:
        harness.start()
        wait_for_readers([harness.reader_name(0), harness.reader_name(1)])
    except (PcscdStartError, TimeoutError) as exc:
        harness.stop()
        pytest.skip(f"could not start a private pcscd with vpcd: {exc}")
    yield harness
    harness.stop()
    shutil.rmtree(WORKDIR, ignore_errors=True)


@pytest.fixture
def pcsc_reader(pcscd_harness: PcscdHarness | None) -> str:
    if pcscd_harness is None:
        name = real_reader()
        assert name is not None
        with PcscReader(name) as reader:
            return reader.name  # resolves a piece of the name to the full one
    if not pcscd_harness.running:  # a test stopped it: bring it back for the next
        pcscd_harness.start()
        wait_for_readers([pcscd_harness.reader_name(0), pcscd_harness.reader_name(1)])
    return pcscd_harness.reader_name(0)


@pytest.fixture
def card_reader(pcsc_reader: str) -> Iterator[PcscReader]:
    reader = PcscReader(pcsc_reader)
    yield reader
    reader.close()


def _slot(harness: PcscdHarness | None, slot: int) -> Iterator[VirtualCardSlot]:
    if harness is None:
        pytest.skip(NEEDS_VIRTUAL)
    virtual = VirtualCardSlot(harness, slot)
    yield virtual
    virtual.close()


@pytest.fixture
def virtual_card_slot(pcscd_harness: PcscdHarness | None,
                      pcsc_reader: str) -> Iterator[VirtualCardSlot]:
    yield from _slot(pcscd_harness, 0)


@pytest.fixture
def virtual_card_slot_1(pcscd_harness: PcscdHarness | None,
                        pcsc_reader: str) -> Iterator[VirtualCardSlot]:
    yield from _slot(pcscd_harness, 1)
