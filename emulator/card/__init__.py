"""Virtual EMV cards: the card application, its fault knobs and the ways it is served.

* :class:`VirtualCard` (:mod:`emulator.card.app`): the chip application,
  personalised from a catalogue card.
* :func:`parse_card_faults` / :class:`CardFaults` (:mod:`emulator.card.faults`):
  QA fault knobs.
* :class:`InProcessCardTransport` (:mod:`emulator.card.transport`): the card as a
  :class:`drivers.transport.CardTransport` with no reader in between.
* :mod:`emulator.card.vpcd`: the card served to pcscd's vpcd driver, so pyscard
  sees it in ``Virtual PCD 00 00``; :mod:`emulator.card.cli` runs that from the
  command line; :mod:`emulator.card.pcscd_harness` starts a private pcscd for
  tests and benchmarks.
"""

from emulator.card.app import CardPoweredOff, VirtualCard
from emulator.card.faults import CardFaults, FaultSpecError, parse_card_faults
from emulator.card.transport import InProcessCardTransport

__all__ = [
    "CardFaults",
    "CardPoweredOff",
    "FaultSpecError",
    "InProcessCardTransport",
    "VirtualCard",
    "parse_card_faults",
]
