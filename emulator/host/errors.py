"""Typed errors of the acquirer host emulator.

The host's rules never raise for bad *input* (that becomes a response code or a
closed connection); these errors are for misuse of the API, bad provisioning and
storage faults, and for the simulated terminal's view of a broken answer.
No error text ever carries a full PAN, PIN, PIN block, track data or key.
"""

from __future__ import annotations


class HostError(Exception):
    """Root of every error raised by :mod:`emulator.host` and the simulated terminal."""

    title = "Host emulator error"


class ProvisioningError(HostError):
    """A terminal cannot be added or found (bad TID/MID/TMK, duplicate TID)."""


class LedgerError(HostError):
    """The ledger store cannot be opened, read or written."""


class ResponseError(HostError):
    """A host answer does not belong to the request (wrong MTI, STAN or TID)."""


class ResponseMacError(ResponseError):
    """A host answer's MAC does not verify: treat as no answer and reverse with A0."""


class NotSignedOnError(HostError):
    """The simulated terminal has no working keys yet: sign on first."""
