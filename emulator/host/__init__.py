"""The acquirer host emulator's sans-I/O core: rules, issuer simulation and ledger.

``AcquirerHost.handle(payload, now) -> HostOutcome`` is the one entry point the
asyncio server (``emulator.server``) drives; ``LedgerStore`` is the storage
interface and ``SqliteLedgerStore`` its durable implementation.
"""

from __future__ import annotations

from emulator.host import security
from emulator.host.core import AcquirerHost, HostOutcome
from emulator.host.errors import HostError, LedgerError, ProvisioningError
from emulator.host.ledger import (
    BatchRow,
    LedgerRecord,
    LedgerSnapshot,
    LedgerStore,
    MemoryLedgerStore,
    SqliteLedgerStore,
    TerminalRow,
    TransactionRow,
    UploadRow,
)

__all__ = [
    "AcquirerHost",
    "BatchRow",
    "HostError",
    "HostOutcome",
    "LedgerError",
    "LedgerRecord",
    "LedgerSnapshot",
    "LedgerStore",
    "MemoryLedgerStore",
    "ProvisioningError",
    "SqliteLedgerStore",
    "TerminalRow",
    "TransactionRow",
    "UploadRow",
    "security",
]
