"""Memos of pure functions' results that stay bounded.

The codec and the host keep what they worked out from a value seen before (a message
shape's plan, an F60's fields, a tag's bytes, an answer's JSON template): one rule for
all of them, here. A memo that is full is cleared, not trimmed: the values kept are few
and repeat (a terminal sends a handful of shapes), so clearing costs one recomputation
of each, and a memo fed values that never repeat (bad input, a fuzzer) stays small.
"""

from __future__ import annotations

from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


def keep(memo: dict[_K, _V], key: _K, value: _V, limit: int) -> _V:
    """``value`` kept in ``memo`` under ``key`` (``memo`` cleared first when it holds
    ``limit`` entries); returns ``value``."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
