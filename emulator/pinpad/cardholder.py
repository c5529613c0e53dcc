"""The scripted cardholder at the virtual PIN pad: enters a PIN, presses Cancel, or walks away.

Tests, the demo UI and the CLI's control commands queue actions; the pad takes
the next one when a PIN entry starts (or waits for one to be queued until the
entry times out). ``default`` is used when nothing is queued (the demo's
"always type 123456").
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EnterPin:
    """Wait ``delay`` s, type ``digits`` one every ``per_digit`` s, then press Enter."""

    digits: str = field(repr=False)
    delay: float = 0.0
    per_digit: float = 0.0

    def __post_init__(self) -> None:
        if not self.digits.isdigit() or not 1 <= len(self.digits) <= 12:
            raise ValueError("a PIN is 1..12 digits")
        if self.delay < 0 or self.per_digit < 0:
            raise ValueError("delay must not be negative")


@dataclass(frozen=True)
class PressCancel:
    """Press Cancel after ``delay`` seconds."""

    delay: float = 0.0


@dataclass(frozen=True)
class WalkAway:
    """Never touch the pad: the PIN entry times out."""


CardholderAction = EnterPin | PressCancel | WalkAway


class Cardholder:
    """A thread-safe queue of cardholder actions, consumed one per PIN entry."""

    def __init__(self, default: CardholderAction | None = None) -> None:
        self.default = default
        self._queue: deque[CardholderAction] = deque()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def enter_pin(self, digits: str, *, delay: float = 0.0, per_digit: float = 0.0) -> None:
        """At the next PIN entry: wait ``delay`` s, type ``digits`` ``per_digit`` s apart, Enter."""
        self.push(EnterPin(digits, delay, per_digit))

    def press_cancel(self, *, delay: float = 0.0) -> None:
        """At the next PIN entry, press Cancel after ``delay`` s."""
        self.push(PressCancel(delay))

    def walk_away(self) -> None:
        """At the next PIN entry, do nothing: the pad times out."""
        self.push(WalkAway())

    def push(self, action: CardholderAction) -> None:
        with self._lock:
            self._queue.append(action)
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    def take(self) -> CardholderAction | None:
        """The next queued action, else ``default`` (None: nothing decided yet)."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.default

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever an action is queued (the pad's loop sleeps otherwise)."""
        with self._lock:
            self._listeners.append(wake)
