"""The acquirer host emulator's sans-I/O core: rules, issuer simulation and ledger.

``AcquirerHost.handle(payload, now, session) -> HostOutcome`` is the one entry point
the asyncio server (``emulator.server``) drives, inside a ``LedgerSession`` (one
store transaction); ``LedgerStore`` is the storage interface, ``open_store(spec)``
opens the one a ``--ledger`` value names (SQLite file, ``postgresql://...``,
``:memory:``).
"""

from __future__ import annotations

from emulator.host import security
from emulator.host.core import AcquirerHost, HostOutcome
from emulator.host.errors import (
    HostError,
    LedgerConflict,
    LedgerError,
    LedgerUnavailable,
    ProvisioningError,
)
from emulator.host.ledger import (
    BatchRow,
    LedgerRecord,
    LedgerSession,
    LedgerSnapshot,
    LedgerStore,
    MemoryLedgerStore,
    SqliteLedgerStore,
    TerminalRow,
    TransactionRow,
    UploadRow,
    open_store,
    safe_ledger_name,
)

__all__ = [
    "AcquirerHost",
    "BatchRow",
    "HostError",
    "HostOutcome",
    "LedgerConflict",
    "LedgerError",
    "LedgerRecord",
    "LedgerSession",
    "LedgerSnapshot",
    "LedgerStore",
    "LedgerUnavailable",
    "MemoryLedgerStore",
    "ProvisioningError",
    "SqliteLedgerStore",
    "TerminalRow",
    "TransactionRow",
    "UploadRow",
    "open_store",
    "safe_ledger_name",
    "security",
]
