"""The host's item-by-item comparison of a batch upload (emulator.host.upload)."""

from __future__ import annotations

import dataclasses

import pytest

from emulator.catalogue import card_by_name
from emulator.host import security, upload
from emulator.host.ledger import LedgerStore, TransactionRow, UploadRow
from emulator.simterminal import Approved
from iso8583 import composite
from iso8583.message import Message
from iso8583.settlement import HalfTotals, SettlementTotals
from iso8583.terminal import UploadChunk, UploadItem

from .harness import TID, Lane, make_lane

DEBIT = card_by_name("cup-debit")
VISA = card_by_name("visa-credit")
PIN = "123456"


@pytest.fixture
def lane(ledger_store: LedgerStore) -> Lane:
    return make_lane(store=ledger_store)


def approved(lane: Lane, amount: int, *, chip: bool = False, card: object = DEBIT) -> Approved:
    pin = PIN if card is DEBIT else None
    result = lane.exchange(lane.term.sale(card, amount, pin=pin, chip=chip))  # type: ignore[arg-type]
    assert isinstance(result, Approved), result
    return result


def item_of(a: Approved, **change: object) -> UploadItem:
    assert a.pan is not None
    assert a.amount is not None
    item = UploadItem(a.kind, a.pan, a.amount, a.batch, a.stan, a.date, a.rrn, a.auth_code,
                      scheme=a.scheme)
    return dataclasses.replace(item, **change)  # type: ignore[arg-type]


def send(lane: Lane, chunk: UploadChunk) -> Message:
    answer = lane.answer(lane.term.batch_upload_chunk(chunk))
    assert answer.response_code == "00"
    return answer


def uploads(lane: Lane) -> dict[str, UploadRow]:
    return {r.item_stan: r for r in lane.store.load().uploads}


def lookup(lane: Lane) -> upload.Lookup:
    host = lane.host

    def by_stan(batch: str, stan: str) -> TransactionRow | None:
        return next((t for t in host.transactions() if (t.tid, t.batch, t.stan) ==
                     (TID, batch, stan) and t.kind in upload.ITEM_KINDS), None)

    return upload.Lookup(by_stan, host.by_rrn, host.pan_hash)


def end(lane: Lane, count: int) -> composite.UploadCounts:
    answer = lane.answer(lane.term.batch_upload_end(count))
    return composite.UploadCounts.decode(str(answer[48]))


def test_every_item_of_every_message_is_compared(lane: Lane) -> None:
    sales = [approved(lane, 1_000 * (i + 1)) for i in range(9)]
    chip = approved(lane, 50_000, chip=True)
    lane.answer(lane.term.settlement(composite_totals_wrong()))
    messages = lane.term.batch_upload_all()  # the double keeps no F55: all ten are listed
    assert len(messages) == 3  # 8 in F48, 2 in F48, the end
    for message in messages[:-1]:
        assert lane.answer(message).response_code == "00"
    assert lane.answer(messages[-1])[48] == "00100010"  # received 10, matched 10
    rows = uploads(lane)
    assert set(rows) == {s.stan for s in [*sales, chip]}
    assert all(r.matched and r.batch == "000001" for r in rows.values())


def test_a_chip_item_comes_alone_with_its_f55(lane: Lane) -> None:
    chip = approved(lane, 50_000, chip=True)
    icc = b"\x9f\x26\x08" + bytes(8) + b"\x9f\x27\x01\x40"
    msg = lane.term.batch_upload_chunk(UploadChunk("chip", (item_of(chip, icc_data=icc),)))
    assert composite.F60.decode(str(msg[60])).net_code == "203"
    assert lane.answer(msg).response_code == "00"
    row = uploads(lane)[chip.stan]
    assert row.matched
    assert row.rrn == chip.rrn  # a chip item names itself by RRN too


def composite_totals_wrong() -> SettlementTotals:
    return SettlementTotals(HalfTotals(1, 1, 0, 0))


def test_each_verdict(lane: Lane) -> None:
    ok, dear, voided, visa = (approved(lane, 1_000), approved(lane, 2_000),
                              approved(lane, 3_000), approved(lane, 4_000, card=VISA))
    assert isinstance(lane.exchange(lane.term.void(voided)), Approved)
    other_card = "6250000000000012"
    items = [item_of(ok), item_of(dear, amount=2_001), item_of(voided),
             item_of(visa, pan=other_card), item_of(ok, stan="000999")]
    send(lane, UploadChunk("list", tuple(items)))
    # a chip item whose RRN the host knows under another STAN: the wrong place
    send(lane, UploadChunk("chip", (item_of(ok, stan="000998", icc_data=b"\x9f\x36\x01\x01"),)))
    # an advice naming a batch the upload is not for
    send(lane, UploadChunk("advice", (item_of(dear, batch="000007", stan="000997"),)))
    rows, look = uploads(lane), lookup(lane)
    verdicts = {stan: upload.verdict_of(row, look) for stan, row in rows.items()}
    assert verdicts == {
        ok.stan: upload.Verdict.MATCHED, dear.stan: upload.Verdict.AMOUNT,
        voided.stan: upload.Verdict.STATUS, visa.stan: upload.Verdict.CARD,
        "000999": upload.Verdict.UNKNOWN, "000998": upload.Verdict.BATCH,
        "000997": upload.Verdict.BATCH,
    }
    assert rows["000998"].rrn == ok.rrn
    assert end(lane, 7) == composite.UploadCounts(7, 1)


def test_an_item_sent_twice_counts_once(lane: Lane) -> None:
    sale = approved(lane, 1_000)
    send(lane, UploadChunk("list", (item_of(sale),)))
    send(lane, UploadChunk("list", (item_of(sale),)))  # the answer was lost: sent again
    assert end(lane, 1) == composite.UploadCounts(1, 1)


def test_the_rows_survive_a_restart(lane: Lane) -> None:
    sale = approved(lane, 1_000)
    send(lane, UploadChunk("list", (item_of(sale), item_of(sale, stan="000777"))))
    lane.restart()
    assert end(lane, 2) == composite.UploadCounts(2, 1)


def test_an_unreadable_list_gets_30(lane: Lane) -> None:
    sale = approved(lane, 1_000)
    msg = lane.term.batch_upload_chunk(UploadChunk("list", (item_of(sale),)))
    msg[48] = "02" + str(msg[48])[2:]  # says two items, carries one
    assert lane.term.keys is not None
    security.apply_mac(lane.term.dialect, lane.term.keys.mak, msg)
    assert lane.answer(msg).response_code == "30"
    assert uploads(lane) == {}


# --- the comparison alone, over a fake ledger -------------------------------------------
def _row(stan: str, amount: int = 1_000, *, status: str = "approved", batch: str = "000001",
         rrn: str | None = None, pan_hash: str | None = "h:6225") -> TransactionRow:
    return TransactionRow(TID, batch, stan, "0200", "sale", "f", status, "00", "", "{}",
                          pan_hash=pan_hash, amount=amount, rrn=rrn or f"000000{stan}")


def _lookup(*rows: TransactionRow) -> upload.Lookup:
    return upload.Lookup(lambda b, s: next((r for r in rows if (r.batch, r.stan) == (b, s)),
                                           None),
                         lambda rrn: next((r for r in rows if r.rrn == rrn), None),
                         lambda pan: "h:" + pan[:4])


@pytest.mark.parametrize(("item", "verdict"), [
    (upload.Item("000001", "000001", 1_000, "6225000"), upload.Verdict.MATCHED),
    (upload.Item("000001", "000001", 1_000, None, "000000000001"), upload.Verdict.MATCHED),
    (upload.Item("000001", "000001", 999), upload.Verdict.AMOUNT),
    (upload.Item("000001", "000001", 1_000, "4761000"), upload.Verdict.CARD),
    (upload.Item("000001", "000002", 1_000), upload.Verdict.STATUS),
    (upload.Item("000001", "000009", 1_000), upload.Verdict.UNKNOWN),
    (upload.Item("000001", "000009", 1_000, None, "000000000001"), upload.Verdict.BATCH),
    (upload.Item("000001", "000001", 1_000, None, "000000000002"), upload.Verdict.BATCH),
    (upload.Item("000000", "000003", 1_000), upload.Verdict.BATCH),
])
def test_compare(item: upload.Item, verdict: upload.Verdict) -> None:
    ledger = _lookup(_row("000001"), _row("000002", status="voided"),
                     _row("000003", batch="000000"))
    assert upload.compare(item, "000001", ledger) is verdict


def test_items_of_reads_both_forms() -> None:
    from iso8583.dialects import get_dialect
    cup = get_dialect("cup")
    listed = cup.message("0320", {48: composite.F48UploadList((
        composite.UploadEntry("00", "000004", "6225880000000019", 5),)).encode()})
    assert upload.items_of(listed, "000001") == [
        upload.Item("000001", "000004", 5, "6225880000000019")]
    single = cup.message("0320", {2: "6225880000000019", 4: 7, 37: "000000000001",
                                  55: b"\x9f\x36\x01\x01", 61: "0000020000051123"})
    assert upload.items_of(single, "000002") == [
        upload.Item("000002", "000005", 7, "6225880000000019", "000000000001", chip=True)]
    with pytest.raises(upload.UploadFormatError):
        upload.items_of(cup.message("0320", {61: "000002000005"}), "000002")
    assert "6225880000000019" not in repr(upload.items_of(listed, "000001"))


def test_the_ledger_view_shows_each_item_and_its_verdict(lane: Lane,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from emulator.host.cli import _print_report, ledger_report
    sale = approved(lane, 1_000)
    send(lane, UploadChunk("list", (item_of(sale), item_of(sale, stan="000777", amount=5))))
    report = ledger_report(lane.store.load())
    assert [(u["item_stan"], u["verdict"]) for u in report["uploads"]] == [
        (sale.stan, "matched"), ("000777", "unknown")]
    _print_report(report)
    out = capsys.readouterr().out
    assert "Batch uploads (item by item)" in out
    assert f"item 000001/{sale.stan}" in out
    assert DEBIT.pan not in out
