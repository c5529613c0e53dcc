"""Stopping a blocking emulator CLI from a signal handler, safely.

A Python signal handler runs in the main thread between two bytecodes, possibly
while that thread is inside ``threading.Event.wait()`` holding the Event's own
(non-reentrant) lock; calling ``event.set()`` right there waits for that lock
forever. A SIGTERM once hung ``pos-emulator card`` that way. The handler below
hands the ``set()`` to a new low-level thread, which takes the lock as soon as
the main thread lets go of it.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from types import FrameType


def stop_on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A handler for :func:`signal.signal` that sets ``stop`` without deadlocking."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        _thread.start_new_thread(stop.set, ())

    return handler
