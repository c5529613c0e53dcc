"""Typed errors of the acquirer host emulator.

The host's rules never raise for bad *input* (that becomes a response code or a
closed connection); these errors are for misuse of the API, bad provisioning and
storage faults, and for the simulated terminal's misuse (not signed on). A broken
answer raises :class:`iso8583.errors.ResponseError` (re-exported here).
No error text ever carries a full PAN, PIN, PIN block, track data or key.
"""

from __future__ import annotations

# the terminal's view of a broken answer is protocol knowledge; re-exported for old users
from iso8583.errors import ResponseError, ResponseMacError


class HostError(Exception):
    """Root of every error raised by :mod:`emulator.host` and the simulated terminal."""

    title = "Host emulator error"


class ProvisioningError(HostError):
    """A terminal cannot be added or found (bad TID/MID/TMK, duplicate TID)."""


class LedgerError(HostError):
    """The ledger store cannot be opened, read or written."""


class LedgerConflict(LedgerError):  # noqa: N818  -- a condition the caller retries
    """Another process clashed with this ledger session (serialization failure, deadlock,
    a concurrent duplicate): roll the whole session back and run it again."""


class BalanceMoved(LedgerConflict):
    """A card's balance the session read without a lock moved under it (another session
    spent or refunded on the card before this one's commit) and a sale it approved no
    longer fits: nothing of the session was kept. No lock cycle is involved, so the
    session runs again whole; its fresh read of the balance decides."""


class LedgerBusy(LedgerConflict):
    """Another process holds the ledger's write lock, and this session was not to wait for
    it (SqliteLedgerStore.yield_on_busy): nothing ran; open the session again later."""


class LedgerUnavailable(LedgerError):  # noqa: N818
    """The ledger's server cannot be reached now (connection lost, restarting): the
    session was rolled back; a later session reconnects."""


class NotSignedOnError(HostError):
    """The simulated terminal has no working keys yet: sign on first."""


__all__ = ["BalanceMoved", "HostError", "LedgerBusy", "LedgerConflict", "LedgerError",
           "LedgerUnavailable", "NotSignedOnError", "ProvisioningError", "ResponseError",
           "ResponseMacError"]
