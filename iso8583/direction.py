"""Which way an ISO 8583 frame travels: the words traces and transports share.

A module of its own so that a transport that only names a direction (the host
server, which records frames only when asked to) need not load the trace tools
(:mod:`iso8583.trace`, re-exported there) at start-up.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

TERMINAL_TO_HOST: Final = "terminal->host"
HOST_TO_TERMINAL: Final = "host->terminal"
Direction: TypeAlias = Literal["terminal->host", "host->terminal"]
DIRECTIONS: Final = (TERMINAL_TO_HOST, HOST_TO_TERMINAL)
