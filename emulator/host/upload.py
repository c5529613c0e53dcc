"""The host's side of a batch upload (批上送): each item compared with the ledger.

A terminal whose settlement did not balance uploads every item of the batch
(see :class:`iso8583.dialect.BatchUploadProfile`): non-chip items several per
0320 in an F48 list (60.3 = 201), chip items one per 0320 with F55 (203),
advices (refunds) one per 0320 with their fields (201), then the end of the
upload (202). This module is pure: :func:`items_of` reads the items a message
carries, :func:`compare` judges one item against what the host booked, and
:func:`end_counts` answers the end marker. It reads the ledger only through
the narrow callables of :class:`Lookup`, so it works over the in-memory maps
or a database session alike.

Every item becomes one :class:`~emulator.host.ledger.UploadRow`. Its ``stan``
is the item's own STAN (a 0320 may carry eight items; one row per item keeps
them apart, and a re-upload after a terminal restart replaces the row instead
of counting twice). ``matched`` says whether the item agrees with the ledger;
:func:`verdict_of` gives the reason for a row, from the same comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from emulator.host.ledger import TransactionRow, UploadRow
from iso8583 import composite
from iso8583.errors import Iso8583Error
from iso8583.masking import mask_pan
from iso8583.message import Message

#: Kinds of ledger row an uploaded item may stand for (what settlement totals count).
ITEM_KINDS = frozenset({"sale", "refund"})


class UploadFormatError(ValueError):
    """A batch-upload message whose items cannot be read (the host answers 30)."""


class Verdict(StrEnum):
    """What the host makes of one uploaded item."""

    MATCHED = "matched"  # booked, approved, same amount, batch and card
    UNKNOWN = "unknown"  # the host has no such transaction
    AMOUNT = "amount"  # known, but the amount differs
    BATCH = "batch"  # known under another batch/STAN, or the item names another batch
    CARD = "card"  # known, but booked to another card
    STATUS = "status"  # known, but not standing (declined, voided, reversed)


@dataclass(frozen=True)
class Item:
    """One uploaded item as the terminal described it."""

    batch: str  # the batch the item says it is in (61.1, or the upload's 60.2 for list items)
    stan: str
    amount: int
    pan: str | None = field(default=None, repr=False)
    rrn: str | None = None
    chip: bool = False  # came with F55 (60.3 = 203)

    def __repr__(self) -> str:
        pan = mask_pan(self.pan) if self.pan else None
        return (f"Item(batch={self.batch!r}, stan={self.stan!r}, amount={self.amount}, "
                f"pan={pan!r}, rrn={self.rrn!r}, chip={self.chip})")


@dataclass(frozen=True)
class Lookup:
    """How this module reads the ledger: narrow callables, any storage behind them."""

    by_stan: Callable[[str, str], TransactionRow | None]  # (batch, STAN) of this terminal
    by_rrn: Callable[[str], TransactionRow | None]
    pan_hash: Callable[[str], str]


def items_of(msg: Message, upload_batch: str) -> list[Item]:
    """The items a batch-upload 0320 carries: its F48 list, or the one item in its fields.

    Raises :class:`UploadFormatError` when the items cannot be read.
    """
    f48 = msg.get(48)
    if f48 is not None:
        try:
            entries = composite.F48UploadList.decode(f48).entries
        except Iso8583Error as exc:
            raise UploadFormatError(str(exc)) from None
        return [Item(upload_batch, e.stan, e.amount, e.pan) for e in entries]
    amount, f61 = msg.get(4), msg.get(61)
    if not isinstance(amount, str) or not amount.isdigit():
        raise UploadFormatError("an upload item without a list carries its amount in F4")
    try:
        named = composite.F61.decode(f61 if f61 is not None else "")
    except Iso8583Error as exc:
        raise UploadFormatError(str(exc)) from None
    pan, rrn = msg.get(2), msg.get(37)
    return [Item(named.batch, named.stan, int(amount),
                 pan if isinstance(pan, str) and pan else None,
                 rrn if isinstance(rrn, str) else None, chip=55 in msg)]


def compare(item: Item, upload_batch: str, lookup: Lookup) -> Verdict:
    """Judge one item: found by its batch + STAN (else its RRN), then amount, card, status."""
    known = lookup.by_stan(item.batch, item.stan)
    if known is not None and known.kind not in ITEM_KINDS:
        known = None
    if known is None and item.rrn is not None:
        by_rrn = lookup.by_rrn(item.rrn)
        if by_rrn is not None and by_rrn.kind in ITEM_KINDS:
            return Verdict.BATCH  # the host knows it, under another batch or STAN
    if known is None:
        return Verdict.UNKNOWN
    if item.rrn is not None and known.rrn is not None and item.rrn != known.rrn:
        return Verdict.BATCH  # batch + STAN name another transaction than the RRN
    if known.batch != upload_batch:
        return Verdict.BATCH
    if known.amount != item.amount:
        return Verdict.AMOUNT
    if item.pan is not None and known.pan_hash is not None \
            and lookup.pan_hash(item.pan) != known.pan_hash:
        return Verdict.CARD
    if known.status != "approved":
        return Verdict.STATUS
    return Verdict.MATCHED


def upload_rows(msg: Message, tid: str, upload_batch: str, lookup: Lookup) -> list[UploadRow]:
    """One :class:`UploadRow` per item of ``msg`` (an upload of ``tid``'s ``upload_batch``)."""
    rows = []
    for item in items_of(msg, upload_batch):
        verdict = compare(item, upload_batch, lookup)
        rows.append(UploadRow(tid, upload_batch, item.stan, item.rrn, item.batch, item.stan,
                              item.amount, verdict is Verdict.MATCHED))
    return rows


def verdict_of(row: UploadRow, lookup: Lookup) -> Verdict:
    """The reason behind a stored row (``matched`` or why not), judged again now.

    The row keeps no PAN: an unmatched row that now compares clean was a card mismatch.
    """
    if row.matched:
        return Verdict.MATCHED
    verdict = compare(Item(row.item_batch, row.item_stan, row.amount, None, row.rrn),
                      row.batch, lookup)
    return Verdict.CARD if verdict is Verdict.MATCHED else verdict


def end_counts(uploads: Iterable[UploadRow], tid: str, upload_batch: str) -> composite.UploadCounts:
    """The answer to the end of an upload: items the host holds for the batch, and matched."""
    latest: dict[str, UploadRow] = {}
    for row in uploads:
        if row.tid == tid and row.batch == upload_batch:
            latest[row.stan] = row  # a re-uploaded item counts once, as last seen
    return composite.UploadCounts(len(latest), sum(1 for r in latest.values() if r.matched))


def report(uploads: Iterable[UploadRow],
           transactions: Iterable[TransactionRow]) -> list[dict[str, object]]:
    """The uploaded items with their verdicts, as plain data (``pos-emulator ledger``)."""
    by_key: dict[tuple[str, str, str], TransactionRow] = {}
    by_rrn: dict[tuple[str, str], TransactionRow] = {}
    for txn in transactions:
        if txn.kind in ITEM_KINDS:
            by_key[(txn.tid, txn.batch, txn.stan)] = txn
            if txn.rrn is not None:
                by_rrn[(txn.tid, txn.rrn)] = txn
    out: list[dict[str, object]] = []
    for row in uploads:
        lookup = _mapped_lookup(row.tid, by_key, by_rrn)
        out.append({"tid": row.tid, "batch": row.batch, "item_batch": row.item_batch,
                    "item_stan": row.item_stan, "rrn": row.rrn, "amount": row.amount,
                    "matched": row.matched, "verdict": verdict_of(row, lookup).value})
    out.sort(key=lambda r: (str(r["tid"]), str(r["batch"]), str(r["item_stan"])))
    return out



def _mapped_lookup(tid: str, by_key: dict[tuple[str, str, str], TransactionRow],
                   by_rrn: dict[tuple[str, str], TransactionRow]) -> Lookup:
    def by_stan(batch: str, stan: str) -> TransactionRow | None:
        return by_key.get((tid, batch, stan))

    def rrn_of(rrn: str) -> TransactionRow | None:
        return by_rrn.get((tid, rrn))

    return Lookup(by_stan, rrn_of, lambda pan: "")  # stored rows keep no PAN


__all__ = ["ITEM_KINDS", "Item", "Lookup", "UploadFormatError", "Verdict", "compare",
           "end_counts", "items_of", "report", "upload_rows", "verdict_of"]
