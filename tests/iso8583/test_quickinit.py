"""quick_init: the same frozen dataclass as before, built faster."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso8583.quickinit import quick_init


@dataclasses.dataclass(frozen=True)
class Plain:
    tid: str
    amount: int | None
    status: str = "approved"
    refunded: int = 0
    note: str | None = dataclasses.field(default=None, repr=False)


@quick_init
@dataclasses.dataclass(frozen=True)
class Quick:
    tid: str
    amount: int | None
    status: str = "approved"
    refunded: int = 0
    note: str | None = dataclasses.field(default=None, repr=False)


values = st.tuples(st.text(max_size=8), st.none() | st.integers(), st.text(max_size=8),
                   st.integers(), st.none() | st.text(max_size=8))


@given(values, st.integers(min_value=2, max_value=5))
def test_same_fields_as_the_dataclass_init(args: tuple[object, ...], given_count: int) -> None:
    plain, quick = Plain(*args[:given_count]), Quick(*args[:given_count])  # type: ignore[arg-type]
    assert dataclasses.asdict(plain) == dataclasses.asdict(quick)
    assert repr(plain).replace("Plain", "Quick") == repr(quick)
    assert quick == Quick(*args[:given_count])  # type: ignore[arg-type]
    assert hash(quick) == hash(Quick(*args[:given_count]))  # type: ignore[arg-type]


@given(values)
def test_keywords_replace_and_frozen(args: tuple[object, ...]) -> None:
    names = [f.name for f in dataclasses.fields(Quick)]
    quick = Quick(**dict(zip(names, args, strict=True)))  # type: ignore[arg-type]
    assert dataclasses.astuple(quick) == args
    changed = dataclasses.replace(quick, refunded=7)
    assert type(changed) is Quick
    assert changed.refunded == 7
    assert changed.tid == quick.tid
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.status = "x"  # type: ignore[misc]


def test_the_instance_dict_stays_a_shared_key_dict() -> None:
    """Rows sit in bounded caches by the thousand: no bigger than the dataclass's own."""
    plain, quick = Plain("1", 2, "s", 3, "n"), Quick("1", 2, "s", 3, "n")
    assert sys.getsizeof(quick.__dict__) <= sys.getsizeof(plain.__dict__)


def test_bad_calls_fail_as_the_dataclass_init_does() -> None:
    with pytest.raises(TypeError):
        Quick("1")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick("1", 2, unknown=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick("1", 2, "s", 3, None, "extra")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick("1", 2, tid="again")  # type: ignore[misc]


def test_only_plain_frozen_dataclasses() -> None:
    @dataclasses.dataclass
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class NotInit:
        a: int = dataclasses.field(default=0, init=False)

    @dataclasses.dataclass(frozen=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slots:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Clash:
        self: int

    for cls in (Mutable, Factory, NotInit, Post, Slots, Clash, int):
        with pytest.raises(TypeError):
            quick_init(cls)
