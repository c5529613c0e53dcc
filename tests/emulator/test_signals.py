"""The emulator CLIs' signal handler: it sets the stop event without deadlocking."""

from __future__ import annotations

import signal
import threading

from emulator.signals import stop_on_signal


def test_the_handler_returns_while_the_event_lock_is_held_and_the_event_is_set_after() -> None:
    stop = threading.Event()
    handler = stop_on_signal(stop)
    returned = threading.Event()

    def as_if_interrupted_inside_wait() -> None:
        # what the main thread holds when a signal lands inside Event.wait(): a handler
        # calling stop.set() here would wait for this lock forever
        with stop._cond:  # type: ignore[attr-defined]  # the lock Event.wait() holds
            handler(signal.SIGTERM, None)
            returned.set()
            assert not stop.is_set()  # not yet: the lock is still ours

    worker = threading.Thread(target=as_if_interrupted_inside_wait, daemon=True)
    worker.start()
    worker.join(5)
    assert returned.is_set(), "the handler blocked on the Event's lock"
    assert stop.wait(5)
