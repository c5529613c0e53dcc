"""Terminal provisioning: who may talk to the host, and the published demo terminal.

A terminal is a TID (8 characters), the MID it belongs to (15 characters) and
its terminal master key (TMK, 8/16/24 bytes of DES key).  The demo terminal
uses the TMK of the public CUP sign-on example (60.3 = 003) so the demo, the
tests and a developer's terminal configuration all know it without a setup
step.  It is a test key: never provision it anywhere real.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from emulator.host.errors import ProvisioningError

DEMO_TID = "10000001"
DEMO_MID = "123456789012345"
#: TMK of the published CUP POS sign-on example (also in shared/vectors/crypto.json).
DEMO_TMK = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")

#: Where the emulator keeps its ledger unless told otherwise (``--ledger`` or this variable).
LEDGER_ENV = "POS_EMULATOR_LEDGER"
DEFAULT_LEDGER = "pos-emulator-ledger.db"


def default_ledger_path() -> Path:
    return Path(os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)


def check_tid(tid: str) -> str:
    """A TID is 8 printable ASCII characters without spaces (F41 ans8)."""
    if len(tid) != 8 or not tid.isascii() or not tid.isprintable() or " " in tid:
        raise ProvisioningError(f"TID must be 8 printable characters without spaces, got {tid!r}")
    return tid


def check_mid(mid: str) -> str:
    """A MID is 15 printable ASCII characters without spaces (F42 ans15)."""
    if len(mid) != 15 or not mid.isascii() or not mid.isprintable() or " " in mid:
        raise ProvisioningError(f"MID must be 15 printable characters without spaces, got {mid!r}")
    return mid


def parse_tmk(text: str | None) -> bytes:
    """A TMK from hex (16, 32 or 48 digits); a fresh random double-length key when None."""
    if text is None:
        return secrets.token_bytes(16)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ProvisioningError("TMK must be hexadecimal") from None
    if len(key) not in (8, 16, 24):
        raise ProvisioningError(f"TMK must be 8, 16 or 24 bytes, got {len(key)}")
    return key
