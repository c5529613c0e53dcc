"""Moved: fault injection lives with the host in :mod:`emulator.host.faults`.

Kept so older imports (``from emulator.faults import FaultPlan``) keep working.
"""

from __future__ import annotations

from emulator.host.faults import (
    NO_FAULT,
    FaultAction,
    FaultKind,
    FaultPlan,
    FaultRule,
    FaultSpecError,
    FaultSubject,
    RequestFacts,
    parse_rule,
    parse_spec,
)

__all__ = ["NO_FAULT", "FaultAction", "FaultKind", "FaultPlan", "FaultRule", "FaultSpecError",
           "FaultSubject", "RequestFacts", "parse_rule", "parse_spec"]
