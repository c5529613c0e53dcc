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

Re-enabling the collector after a pause walked what the pause had let pile up all
the same: everything the block made was still young, so the first allocation after
it ran a young collection over all of it (serve: 5-12 ms after its imports and
another 9-16 ms after opening a PostgreSQL store, which imports psycopg). So a
pause ends by moving the process's objects into the oldest generation without
walking them (``gc.freeze()`` then ``gc.unfreeze()``): they are walked at the next
full collection, or never once frozen for good.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic collection inside the block (restored after it, as it was).

    When it turns the collector back on, every object of the process goes to the oldest
    generation first, unwalked -- unless objects are frozen already (a serving process's
    :func:`freeze_startup`), which ``gc.unfreeze()`` would thaw.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()  # into the oldest generation, not back to the young one
            gc.enable()


def freeze_startup() -> None:
    """Every object alive now joins the permanent generation (never walked again).

    Process-wide: only for a process that runs nothing but the host, as the
    server's ``gc_freeze_interval`` rounds are.
    """
    gc.freeze()
