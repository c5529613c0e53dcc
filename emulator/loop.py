"""The event loop a host process serves on: uvloop when it is installed, else asyncio's.

Every process that serves (``pos-emulator serve``, each ``serve --workers`` worker)
starts its loop through :func:`run`, so this module is the one place that decides.
uvloop (libuv) runs the same asyncio code for less CPU: its event loop, handles and
transports are C, where asyncio's are Python. Callgrind, the host's instructions a
group (the bench mix replayed against the real server in-process; answers and ledger
rows identical on both loops), asyncio -> uvloop: PostgreSQL, a group of 1 request
1,158k -> 1,078k (-6.9 %), of 2 2,042k -> 1,951k (-4.5 %), of 4 3,637k -> 3,544k, of
16 12,849k -> 12,721k; SQLite, 1 931k -> 880k (-5.5 %), 2 1,642k -> 1,600k, 16
11,852k -> 11,799k. The saving is mostly the loop's own work a wake-up (~40-130k
instructions a group), so it counts most where the host pays most a request: small
groups, the paced load.

What the host needs from a loop works the same on both (the tests run on either):
TCP transports with a buffered protocol and SO_REUSEPORT, ``add_reader`` on a
PostgreSQL connection's socket, timers, ``run_in_executor``, Unix sockets (the admin
channel, the supervisor's relay) and signal handlers. The ``--workers`` supervisor
is not a host and stays on asyncio's loop: it starts its workers in a process group
of their own (``process_group=0``), which uvloop's subprocesses do not offer.

``POS_EMULATOR_LOOP`` chooses: ``auto`` (the default: uvloop when importable),
``uvloop`` (an error when it is not installed) or ``asyncio``. An environment
variable, not a ``serve`` option: it reaches every process of a host unchanged (the
workers, the hosts tests start), and it is for comparing the two loops when a
behaviour is in doubt (a QA engineer, a bisect, the test suite run on each), not
for everyday use.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from emulator.host.errors import HostError
from emulator.startup import gc_paused

T = TypeVar("T")

#: the environment variable that chooses the loop
LOOP_ENV = "POS_EMULATOR_LOOP"
#: what it may say
LOOP_CHOICES = ("auto", "asyncio", "uvloop")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopChoiceError(HostError):
    """``POS_EMULATOR_LOOP`` names no loop this installation can run."""


def choose(choice: str | None = None) -> tuple[str, LoopFactory | None]:
    """The loop to serve on: its name and its factory (None: asyncio's own, as
    ``asyncio.run`` makes it). ``choice`` None reads ``POS_EMULATOR_LOOP``."""
    given = os.environ.get(LOOP_ENV, "") if choice is None else choice
    wanted = given.strip().lower() or "auto"
    if wanted not in LOOP_CHOICES:
        raise LoopChoiceError(f"{LOOP_ENV}={given!r}: choose one of {', '.join(LOOP_CHOICES)}")
    if wanted == "asyncio":
        return "asyncio", None
    try:
        with gc_paused():  # its modules live as long as the process (see emulator.startup)
            # (type-checked where installed; checks pass without it: it is optional)
            import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        if wanted == "uvloop":
            raise LoopChoiceError(f"{LOOP_ENV}=uvloop, but uvloop is not installed "
                                  "(pip install uvloop)") from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str | None = None) -> T:
    """Run ``main`` to its end on the loop :func:`choose` picks (as ``asyncio.run``)."""
    try:
        _, factory = choose(choice)
    except LoopChoiceError:
        main.close()  # never awaited: no warning about it
        raise
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Which loop ``loop`` (default: the running one) is: ``uvloop`` or ``asyncio``."""
    running = asyncio.get_running_loop() if loop is None else loop
    return type(running).__module__.partition(".")[0]
