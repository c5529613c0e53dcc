"""Compatibility: the terminal's errors live in :mod:`terminal.core.errors`."""

from terminal.core.errors import (
    CardMismatchError,
    HostLinkError,
    HostTimeoutError,
    RefundAmountError,
    TerminalError,
)

__all__ = ["CardMismatchError", "HostLinkError", "HostTimeoutError", "RefundAmountError",
           "TerminalError"]
