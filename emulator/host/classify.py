"""Which transaction a request is: the dialect's transaction table (see :mod:`iso8583.classify`).

The table lives in the protocol layer so the trace tools name messages by the
same rule the host routes them by; this module keeps the host's import path.
"""

from __future__ import annotations

from iso8583.classify import NETWORK_KINDS, UNKNOWN, TransactionTable, net_code

__all__ = ["NETWORK_KINDS", "UNKNOWN", "TransactionTable", "net_code"]
