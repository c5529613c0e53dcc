"""Named points where a QA crash campaign may kill the terminal (SIGKILL, no clean-up).

``POS_TERMINAL_CRASH_AT=after_begin`` kills the process the first time the flow
passes ``after_begin``; ``after_begin:3`` the third time. Unset (always, in
production) it costs one dict lookup. The points sit where a power cut hurts
most: inside and after journal writes, after sending, before and after the
answer is recorded.
"""

from __future__ import annotations

import os
import signal

ENV = "POS_TERMINAL_CRASH_AT"
POINTS = ("in_begin", "after_begin", "after_send", "after_answer", "after_record",
          "in_resolve", "after_resolve_send")
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= (int(count) if count.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
