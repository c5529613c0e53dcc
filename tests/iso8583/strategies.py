"""Hypothesis strategies that build valid messages from a dialect's own field table."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from iso8583.dialect import Dialect
from iso8583.fields import FieldSpec, Kind
from iso8583.message import Message

_AN = string.ascii_letters + string.digits + " "
_ANS = "".join(chr(c) for c in range(0x20, 0x7F))


def _length(spec: FieldSpec) -> st.SearchStrategy[int]:
    return st.just(spec.max_len) if spec.fixed else st.integers(0, spec.max_len)


def field_value(spec: FieldSpec) -> st.SearchStrategy[str | bytes]:
    """Any value the field can carry, at any allowed length."""
    if spec.kind is Kind.B:
        return _length(spec).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    alphabet = {Kind.N: string.digits, Kind.Z: string.digits + "D",
                Kind.AN: _AN, Kind.ANS: _ANS}[spec.kind]
    return _length(spec).flatmap(
        lambda n: st.text(alphabet=alphabet, min_size=n, max_size=n))


@st.composite
def messages(draw: st.DrawFn, dialect: Dialect) -> Message:
    numbers = sorted(dialect.fields)
    chosen = draw(st.lists(st.sampled_from(numbers), min_size=1, max_size=20, unique=True))
    mti = draw(st.text(alphabet=string.digits, min_size=4, max_size=4))
    message = dialect.message(mti)
    for number in chosen:
        message[number] = draw(field_value(dialect.fields[number]))
    return message
