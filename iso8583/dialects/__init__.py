"""Dialects shipped as data: ``cup`` (China UnionPay POS, the default) and ``iso87``.

A dialect is a :class:`~iso8583.dialect.DialectSpec` (field table, layout,
framing, transaction profiles, settings). Register a new one with
:func:`register`; no codec code changes.
"""

from __future__ import annotations

from iso8583.dialect import Dialect, DialectSpec, Frame, TransactionProfile

DEFAULT = "cup"
_SPECS: dict[str, DialectSpec] = {}
_COMPILED: dict[str, Dialect] = {}


def register(spec: DialectSpec) -> None:
    """Make ``spec`` available to :func:`get_dialect` under its name."""
    _SPECS[spec.name] = spec
    _COMPILED.pop(spec.name, None)


def names() -> list[str]:
    _load_builtin()
    return sorted(_SPECS)


def get_dialect(name: str = DEFAULT) -> Dialect:
    """The compiled dialect called ``name`` (compiled once, then shared)."""
    dialect = _COMPILED.get(name)
    if dialect is not None:
        return dialect
    _load_builtin()
    try:
        spec = _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown dialect {name!r}; known: {', '.join(sorted(_SPECS))}") from None
    dialect = _COMPILED[name] = Dialect(spec)
    return dialect


def _load_builtin() -> None:
    if "cup" not in _SPECS:
        from iso8583.dialects import cup, iso87
        register(cup.SPEC)
        register(iso87.SPEC)


__all__ = ["DEFAULT", "Dialect", "DialectSpec", "Frame", "TransactionProfile", "get_dialect",
           "names", "register"]
