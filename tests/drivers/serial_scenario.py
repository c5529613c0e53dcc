"""One PIN pad session, the same calls whether a real pad, the virtual pad or a replay answers.

Run ``python -m tests.drivers.serial_scenario OUT.jsonl`` to record it through a
real pty with the virtual pad (that is how tests/hil/traces/serial/pinpad-session.jsonl
was made); tests replay the recording with :class:`drivers.serial_replay.ReplaySerialPort`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from drivers.errors import PinEntryCancelledError
from drivers.pinpad import PinPad
from iso8583.crypto.des import encrypt_ecb
from iso8583.crypto.kcv import tdes_kcv

MASTER_KEY = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")  # the virtual pad's default
PIK = bytes.fromhex("807A23AD32B36D457AE91FDF927570EA")  # public CUP sign-on example PIK
PAN = "6225880000000019"  # catalogue test card cup-debit


@dataclass
class Outcome:
    status_state: str
    pin_block_length: int
    cancelled: bool


def run(pad: PinPad, before: Callable[[str], None] = lambda step: None) -> Outcome:
    """Status, a display, a NAKed-then-resent status, key load, PIN entry, a cancelled entry.

    ``before(step)`` lets a recording script the virtual pad (cardholder, faults)
    just before each step; a replay needs nothing there.
    """
    before("status")
    status = pad.status("hello")
    before("display")
    pad.display("请输入密码", "PIN please")
    before("nak")
    pad.status("again")
    before("load_key")
    pad.load_working_key(encrypt_ecb(MASTER_KEY, PIK), tdes_kcv(PIK, 4))
    before("pin")
    block = pad.get_pin_block(PAN, 12_345, timeout=10)
    before("cancel")
    try:
        pad.get_pin_block(PAN, 500, timeout=10)
        cancelled = False
    except PinEntryCancelledError:
        cancelled = True
    return Outcome(status.state, len(block.pin_block), cancelled)


def record(path: str) -> Outcome:
    """Record :func:`run` against the virtual pad over a real pty into ``path``."""
    from drivers.trace import TraceWriter
    from emulator.pinpad import VirtualPinPad

    with VirtualPinPad(master_key=MASTER_KEY) as virtual, TraceWriter(path) as trace:
        trace.meta(scenario="tests.drivers.serial_scenario.run", device="virtual PIN pad, pty")

        def script(step: str) -> None:
            if step == "nak":
                virtual.faults.nak_next = 1
            elif step == "pin":
                virtual.cardholder.enter_pin("123456")
            elif step == "cancel":
                virtual.cardholder.press_cancel(delay=0.05)

        with PinPad.open(virtual.path, trace=trace) as pad:
            return run(pad, script)


if __name__ == "__main__":
    print(record(sys.argv[1]))
