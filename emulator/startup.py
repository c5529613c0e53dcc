"""Start-up of the emulator's processes (``pos-emulator serve`` and its workers).

Loading serve's modules (the host, the ISO 8583 tables, asyncio, psycopg) makes
~100,000 objects that all live as long as the process, and next to no garbage.
The cyclic garbage collector does not know that: every 700 allocations it walks
the young objects, and the server's first round (``HostServer.start``:
``gc.collect()`` then ``gc.freeze()``) walked all of them again, ~35 ms on the
2-core VM, to free ~20 objects. So a serving process pauses the collector while
it loads (:func:`gc_paused`) and moves what start-up made into the permanent
generation (:func:`freeze_startup`) before the server starts: its first
collection then walks only what came after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic collection inside the block (restored after it, as it was)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_startup() -> None:
    """Every object alive now joins the permanent generation (never walked again).

    Process-wide: only for a process that runs nothing but the host, as the
    server's ``gc_freeze_interval`` rounds are.
    """
    gc.freeze()
