"""Virtual serial PIN pad and magstripe reader on ptys: scripted cardholder, link faults."""

from emulator.pinpad.cardholder import Cardholder, EnterPin, PressCancel, WalkAway
from emulator.pinpad.device import (
    DEFAULT_BDK,
    DEFAULT_KSN,
    DEFAULT_MASTER_KEY,
    PinPadDevice,
    VirtualPinPad,
)
from emulator.pinpad.link import LinkFaults
from emulator.pinpad.magstripe import VirtualMagstripeReader, swipe_line

__all__ = [
    "DEFAULT_BDK",
    "DEFAULT_KSN",
    "DEFAULT_MASTER_KEY",
    "Cardholder",
    "EnterPin",
    "LinkFaults",
    "PinPadDevice",
    "PressCancel",
    "VirtualMagstripeReader",
    "VirtualPinPad",
    "WalkAway",
    "swipe_line",
]
