"""A refund of a sale this terminal's journal does not hold: named by RRN + date only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from terminal.core.config import TerminalSettings, init_terminal
from terminal.core.errors import RefundTooOldError
from terminal.core.journal import Journal
from terminal.core.ports import Purpose
from terminal.core.records import RefundReason, TxnStatus
from terminal.core.till import ExternalOriginal
from tests.terminal.core.harness import (
    MID,
    TMK,
    MemoryHostLink,
    Rig,
    VirtualCardSlot,
    VirtualPinEntry,
    make_rig,
    open_till,
)


def _second_till(rig: Rig, tmp_path: Path, tid: str = "10000002") -> Rig:
    """Another terminal of the same merchant on the same host."""
    rig.link.store.commit([rig.host.provision(tid, MID, TMK)])
    link = MemoryHostLink(rig.host, rig.link.store, rig.link.dialect, rig.clock)
    data_dir = tmp_path / "second"
    journal = Journal.open(data_dir, rig.clock)
    init_terminal(journal, TerminalSettings(tid=tid, mid=MID), TMK)
    journal.close()
    slot, pad = VirtualCardSlot(), VirtualPinEntry(TMK)
    return Rig(open_till(data_dir, link, slot, pad, rig.clock), link, slot, pad, rig.clock,
               data_dir)


def test_refund_on_another_terminal_by_rrn_and_date(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    sale = rig.till.sale(100_00, rig.card("cup-debit", Purpose.SALE, 100_00))
    assert sale.approved
    assert sale.record.rrn is not None
    assert sale.record.host_date is not None
    other = _second_till(rig, tmp_path)
    original = other.till.find_by_rrn(sale.record.rrn, sale.record.host_date)
    assert isinstance(original, ExternalOriginal)
    card = other.card("cup-debit", Purpose.REFUND, 40_00)
    quote = other.till.quote_refund(original, card, 40_00, RefundReason.CUSTOMER_CANCELLED)
    assert quote.refundable is None  # the host knows; this terminal does not
    out = other.till.refund(quote)
    assert (out.status, out.code) == (TxnStatus.APPROVED, "00")
    assert out.record.original_rrn == sale.record.rrn
    booked = rig.host.by_rrn(sale.record.rrn)
    assert booked is not None
    assert booked.refunded == 40_00
    # more than the rest: the host refuses (64) and books nothing
    card = other.card("cup-debit", Purpose.REFUND, 70_00)
    over = other.till.refund(other.till.quote_refund(original, card, 70_00,
                                                     RefundReason.DAMAGED))
    assert (over.status, over.code) == (TxnStatus.DECLINED, "64")
    assert rig.host.by_rrn(sale.record.rrn).refunded == 40_00  # type: ignore[union-attr]


def test_wrong_date_is_declined_25(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    sale = rig.till.sale(10_00, rig.card("cup-debit", Purpose.SALE, 10_00))
    assert sale.record.rrn is not None
    other = _second_till(rig, tmp_path)
    wrong = (rig.clock() - timedelta(days=1)).strftime("%m%d")  # recent, but not the day
    assert wrong != sale.record.host_date
    original = other.till.find_by_rrn(sale.record.rrn, wrong)
    card = other.card("cup-debit", Purpose.REFUND, 1_00)
    out = other.till.refund(other.till.quote_refund(original, card, 1_00,
                                                    RefundReason.DAMAGED))
    assert (out.status, out.code) == (TxnStatus.DECLINED, "25")


def test_rrn_date_older_than_the_age_limit_is_refused(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    original = ExternalOriginal("000000000042", (rig.clock().replace(day=1)).strftime("%m%d"))
    rig.clock.advance(days=45)
    card = rig.card("cup-debit", Purpose.REFUND, 1_00)
    with pytest.raises(RefundTooOldError):
        rig.till.quote_refund(original, card, 1_00, RefundReason.DAMAGED)
