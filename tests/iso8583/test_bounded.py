"""iso8583.bounded.keep: a memo never holds more than its limit, and what was kept last
is there."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from iso8583.bounded import keep


@given(st.integers(1, 8), st.lists(st.tuples(st.integers(0, 20), st.integers())))
def test_a_memo_stays_within_its_limit_and_keeps_the_last_value(
        limit: int, entries: list[tuple[int, int]]) -> None:
    memo: dict[int, int] = {}
    for key, value in entries:
        assert keep(memo, key, value, limit) == value
        assert memo[key] == value
        assert len(memo) <= limit


def test_a_full_memo_is_cleared_before_the_next_value() -> None:
    memo = {1: "a", 2: "b"}
    keep(memo, 3, "c", 2)
    assert memo == {3: "c"}
    keep(memo, 3, "d", 2)  # a key already there: replaced, nothing cleared
    assert memo == {3: "d"}
