"""Batch upload (批上送) after a settlement that did not balance: several items per 0320,
chip items with F55, the end with the count; a crash in the middle resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.host import upload
from emulator.host.ledger import TransactionRow, UploadRow
from iso8583 import composite, tlv
from iso8583.masking import mask_pan
from iso8583.message import Message
from iso8583.terminal import CardInput
from terminal.core.errors import HostTimeoutError
from terminal.core.ports import CardRead, Purpose
from terminal.core.records import RefundReason, TxnRecord
from terminal.core.till import UPLOAD_PROGRESS, Outcome

from .harness import TID, Rig, crash_points, make_rig


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return make_rig(tmp_path)


def stripe_sale(rig: Rig, amount: int) -> Outcome:
    """A swiped sale of the magnetic-stripe test card (online PIN)."""
    card = card_by_name("cup-magstripe")
    rig.pad.pin = card.pin
    read = CardRead(CardInput(card.pan, card.expiry, "stripe", track2=card.track2,
                              scheme=card.scheme), mask_pan(card.pan), wants_online_pin=True)
    out = rig.till.sale(amount, read)
    assert out.approved, out
    return out


def chip_sale(rig: Rig, amount: int, card: str = "cup-debit") -> TxnRecord:
    out = rig.till.sale(amount, rig.card(card, Purpose.SALE, amount))
    assert out.approved, out
    return out.record


def net_code(msg: Message) -> str:
    return composite.F60.decode(str(msg[60])).net_code


def uploads_sent(rig: Rig) -> list[Message]:
    return [m for m in rig.link.sent if m.mti == "0320"]


def host_lookup(rig: Rig) -> upload.Lookup:
    host = rig.host

    def by_stan(batch: str, stan: str) -> TransactionRow | None:
        return next((t for t in host.transactions() if (t.tid, t.batch, t.stan) ==
                     (TID, batch, stan) and t.kind in upload.ITEM_KINDS), None)

    return upload.Lookup(by_stan, host.by_rrn, host.pan_hash)


def host_uploads(rig: Rig) -> list[UploadRow]:
    return list(rig.link.store.load().uploads)


def unbalanced_batch(rig: Rig, stripes: int = 10) -> list[TxnRecord]:
    """``stripes`` swiped sales, a chip sale and a refund of it; the journal then gets one
    swiped amount wrong (the totals differ, and that item will not match the host)."""
    records = [stripe_sale(rig, (10 + i) * 100).record for i in range(stripes)]
    chip = chip_sale(rig, 200_00)
    card = rig.card("cup-debit", Purpose.REFUND, 50_00)
    refund = rig.till.refund(rig.till.quote_refund(chip, card, 50_00, RefundReason.DAMAGED))
    assert refund.approved
    rig.till.journal.conn.execute("UPDATE txn SET amount = amount + 1 WHERE id = ?",
                                  (records[0].id,))
    return [*records, chip, refund.record]


def test_an_unbalanced_settlement_uploads_several_items_per_message(rig: Rig) -> None:
    items = unbalanced_batch(rig)
    out = rig.till.settle()
    assert not out.balanced
    sent = uploads_sent(rig)
    # 10 swiped sales in two F48 lists (8 + 2), the refund alone, the chip sale with F55, end
    assert [net_code(m) for m in sent] == ["201", "201", "201", "203", "202"]
    lists = [composite.F48UploadList.decode(str(m[48])).entries for m in sent[:2]]
    assert [len(e) for e in lists] == [8, 2]
    assert {e.stan for entries in lists for e in entries} == {r.stan for r in items[:10]}
    assert all(2 not in m and 4 not in m for m in sent[:2])  # list items live in F48 only
    advice, chip, end = sent[2], sent[3], sent[4]
    assert (advice[3], advice.amount, 55 in advice) == ("200000", 50_00, False)
    assert chip.amount == 200_00
    f55 = chip[55]
    assert isinstance(f55, bytes)
    assert 0x9F26 in tlv.decode_flat(f55)
    assert end[48] == "0012"
    assert (out.uploaded, out.host_received, out.host_matched) == (12, 12, 11)
    rows = host_uploads(rig)
    assert len(rows) == 12  # the host sees every item, one row each
    lookup = host_lookup(rig)
    verdicts = {r.item_stan: upload.verdict_of(r, lookup) for r in rows}
    assert verdicts.pop(items[0].stan) is upload.Verdict.AMOUNT
    assert set(verdicts.values()) == {upload.Verdict.MATCHED}
    assert rig.till.journal.settled_batches() == {"000001": False}
    assert out.new_batch == "000002"


@pytest.mark.parametrize("nth", [2, 3, 4, 5, 6])
def test_a_crash_in_the_middle_of_the_upload_resumes_it(rig: Rig, nth: int) -> None:
    """The power goes after the host booked the nth 0320 (1st: the 0500), before its answer."""
    unbalanced_batch(rig)
    with crash_points() as plan:
        plan.arm("after_send", nth)
        with pytest.raises(BaseException, match="after_send"):
            rig.till.settle()
    before = len(rig.link.sent)
    rig.restart()
    out = rig.till.settle()
    again = rig.link.sent[before:]
    assert [m.mti for m in again].count("0500") == 0  # the settlement's answer was journaled
    assert net_code(again[-1]) == "202"
    # only what the host had not acknowledged goes again: the message whose answer was lost
    # and those after it (four item messages; nth 6 is the end, only the end goes again)
    assert len(again) - 1 == 4 - (nth - 2)
    assert (out.host_received, out.host_matched) == (12, 11)
    assert out.uploaded == 12
    assert len(host_uploads(rig)) == 12
    assert rig.till.journal.settled_batches() == {"000001": False}


def test_a_crash_before_the_settlement_answer_settles_again(rig: Rig) -> None:
    unbalanced_batch(rig, stripes=3)
    with crash_points() as plan:
        plan.arm("after_send", 1)
        with pytest.raises(BaseException, match="after_send"):
            rig.till.settle()
    rig.restart()
    out = rig.till.settle()
    assert not out.balanced
    assert (out.uploaded, out.host_received, out.host_matched) == (5, 5, 4)


def test_progress_of_another_settlement_is_ignored(rig: Rig) -> None:
    unbalanced_batch(rig, stripes=2)
    rig.till.journal.put(UPLOAD_PROGRESS, '{"settlement": 99, "sent": ["000001/000002"], '
                                          '"acknowledged": ["000001/000002"]}')
    out = rig.till.settle()
    assert (out.uploaded, out.host_received) == (4, 4)


def test_a_balanced_settlement_uploads_nothing(rig: Rig) -> None:
    stripe_sale(rig, 10_00)
    out = rig.till.settle()
    assert out.balanced
    assert (out.uploaded, out.host_received) == (0, None)
    assert uploads_sent(rig) == []


def test_iso87_has_no_batch_upload_and_still_settles(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "iso87")
    lost = chip_sale(rig, 30_00)
    chip_sale(rig, 20_00)
    rig.till.journal.conn.execute("UPDATE txn SET status = 'declined' WHERE id = ?", (lost.id,))
    out = rig.till.settle()
    assert not out.balanced
    assert out.uploaded == 0
    assert uploads_sent(rig) == []
    assert out.new_batch == "000002"


def test_a_host_that_stops_answering_mid_upload_is_resumed_by_the_next_settle(rig: Rig) -> None:
    unbalanced_batch(rig)
    tries = rig.till.settings.max_resend
    # the 0500 and the first list are answered, then the host goes quiet
    rig.link.faults.extend(["none", "none"] + ["drop_before"] * tries)
    with pytest.raises(HostTimeoutError):
        rig.till.settle()
    assert rig.till.journal.open_settlements()  # still open: nothing is lost
    out = rig.till.settle()
    assert (out.uploaded, out.host_received, out.host_matched) == (12, 12, 11)
    assert [m.mti for m in rig.link.sent].count("0500") == 1
