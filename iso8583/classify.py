"""Which transaction a request is, read from the dialect's transaction table.

Used by the host emulator to route requests and by the trace tools to name
each message (:mod:`iso8583.trace`). The host never branches on a dialect's
name or on processing-code prefixes of its own: :class:`TransactionTable` indexes the dialect's
:class:`~iso8583.dialect.TransactionProfile` rows by MTI and picks the row a
request fits, by these steps:

1. the rows of the request's MTI; the refund row also under the dialect's
   ``refund_mti`` setting; an advice or repeat (third MTI digit 2, e.g. 0220,
   0420) with no row of its own falls back to the rows of its base MTI (0200,
   0400), since an advice is the same transaction told after the fact;
2. rows that name a processing code keep only requests whose F3 starts with
   the same two transaction-type digits;
3. when several rows are left, the network code (F70, else 60.3) picks
   among them, then the message type code 60.1.

:meth:`TransactionTable.classify` returns the row's name (``"sale"``,
``"refund"``, ``"batch_upload_end"``...), ``"unknown"`` for a request of a
handled MTI that fits no row, and None for an MTI the dialect has no row for.
"""

from __future__ import annotations

from collections.abc import Callable

from iso8583 import composite
from iso8583.bounded import keep
from iso8583.dialect import Dialect, TransactionProfile
from iso8583.errors import Iso8583Error
from iso8583.message import Message

#: Network-management rows: handled before the MAC check (no keys yet, or none needed).
NETWORK_KINDS = frozenset({"sign_on", "key_change", "sign_off", "echo"})
UNKNOWN = "unknown"
#: Bound of TransactionTable.classify's memo (entries; cleared when full).
_CLASSIFIED_MAX = 1024


class TransactionTable:
    """A dialect's transaction table, indexed for classifying requests."""

    def __init__(self, dialect: Dialect) -> None:
        self._by_mti: dict[str, list[TransactionProfile]] = {}
        for profile in dialect.transactions.values():
            self._by_mti.setdefault(profile.mti, []).append(profile)
        # classify's answers by (MTI, F3, F60, F70); bounded
        self._classified: dict[tuple[str, object, object, object], str | None] = {}
        refund = dialect.transactions.get("refund")
        refund_mti = dialect.settings.refund_mti
        if refund is not None and refund_mti != refund.mti:
            self._by_mti.setdefault(refund_mti, []).append(refund)

    @property
    def mtis(self) -> frozenset[str]:
        """The request MTIs with a row of their own."""
        return frozenset(self._by_mti)

    def money_mtis(self) -> tuple[str, ...]:
        """MTIs of the requests a reversal can undo (those that move money), table order."""
        seen: dict[str, None] = {}
        for mti, rows in self._by_mti.items():
            if any(r.moves_money and r.name != "reversal" for r in rows):
                seen[mti] = None
        return tuple(seen)

    def rows(self, mti: str) -> list[TransactionProfile]:
        rows = self._by_mti.get(mti)
        if rows is None and len(mti) == 4 and mti[2] == "2":
            rows = self._by_mti.get(mti[:2] + "0" + mti[3])
        return rows or []

    def classify(self, msg: Message) -> str | None:
        """The name of the row ``msg`` fits; ``"unknown"``; None for an unhandled MTI."""
        # A function of the MTI, F3, F60 and F70 alone, and a terminal's requests repeat
        # them (a sale's, a refund's): the host classifies every request (~8k instructions)
        fields = msg.raw_items()
        key = (msg.mti, fields.get(3), fields.get(60), fields.get(70))
        try:
            return self._classified[key]
        except KeyError:
            return keep(self._classified, key, self._classify(msg), _CLASSIFIED_MAX)

    def _classify(self, msg: Message) -> str | None:
        rows = self.rows(msg.mti)
        if not rows:
            return None
        proc = msg.get(3)
        tx_type = proc[:2] if isinstance(proc, str) else None
        fits = [r for r in rows if r.processing_code is None
                or (tx_type is not None and r.processing_code[:2] == tx_type)]
        if len(fits) > 1:
            fits = _narrow(fits, net_code(msg), lambda r: r.net_code)
        if len(fits) > 1:
            fits = _narrow(fits, _f60_type(msg), lambda r: r.f60_type)
        return fits[0].name if fits else UNKNOWN


def _narrow(rows: list[TransactionProfile], value: str | None,
            attribute: Callable[[TransactionProfile], str | None]) -> list[TransactionProfile]:
    """Rows whose ``attribute`` equals ``value``; else those that do not constrain it."""
    if all(attribute(r) is None for r in rows):
        return rows
    exact = [r for r in rows if value is not None and attribute(r) == value]
    if exact:
        return exact
    return [r for r in rows if attribute(r) is None]


def _f60(msg: Message) -> composite.F60 | None:
    value = msg.get(60)
    if not isinstance(value, str):
        return None
    try:
        return composite.F60.decode(value)
    except Iso8583Error:
        return None


def _f60_type(msg: Message) -> str | None:
    f60 = _f60(msg)
    return f60.msg_type if f60 is not None else None


def net_code(msg: Message) -> str | None:
    """The network-management code: F70 (ISO 8583:1987), else 60.3 (CUP)."""
    value = msg.get(70)
    if isinstance(value, str):
        return value
    f60 = _f60(msg)
    return f60.net_code if f60 is not None else None

