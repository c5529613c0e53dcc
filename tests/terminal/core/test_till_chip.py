"""The till completes a contact chip sale on the card: TC, or AAC and the sale reversed.

The card stays in the reader across the host exchange; the host's answer (F39 and
the ARPC in F55 tag 91) goes back to it in the second GENERATE AC. The host here is
the acquirer's real rules in memory; ``corrupt_arpc`` is the emulator's own fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from terminal.core.errors import DeviceError, HostLinkError
from terminal.core.ports import Purpose
from terminal.core.receipts import render_text
from terminal.core.records import TxnStatus
from terminal.core.session import Session
from terminal.core.till import CardEnding, Outcome
from tests.terminal.core.harness import (
    TID,
    Crash,
    CrashPlan,
    Rig,
    check_money_rules,
    crash_points,
    make_rig,
)

SCHEMES = ["cup-debit", "visa-credit", "mastercard"]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    rig = make_rig(tmp_path)
    rig.till.sign_on()  # the fault knobs below count exchanges from the sale on
    return rig


@pytest.fixture
def plan() -> Iterator[CrashPlan]:
    with crash_points() as armed:
        yield armed


def chip_sale(rig: Rig, amount: int = 88_00, card: str = "cup-debit") -> Outcome:
    read = rig.card(card, Purpose.SALE, amount)
    assert read.held is not None
    assert read.cryptogram_type == "ARQC"
    return rig.till.sale(amount, read)


def host_status(rig: Rig, outcome: Outcome) -> str | None:
    row = rig.host.transaction((TID, outcome.record.batch, outcome.record.stan,
                                outcome.record.mti))
    return None if row is None else row.status


def reversals(rig: Rig) -> list[str]:
    """F39 of every reversal the till sent."""
    return [str(m.get(39)) for m in rig.link.sent if m.mti == "0400"]


@pytest.mark.parametrize("dialect", ["cup", "iso87"])
@pytest.mark.parametrize("card", SCHEMES)
def test_an_approved_sale_with_an_authentic_arpc_ends_with_a_tc(tmp_path: Path, card: str,
                                                                dialect: str) -> None:
    rig = make_rig(tmp_path, dialect)
    read = rig.card(card, Purpose.SALE, 88_00)
    out = rig.till.sale(88_00, read)
    assert out.status is TxnStatus.APPROVED
    assert out.card_refused is None
    assert out.record.cryptogram_type == "TC"
    assert out.record.cryptogram not in (None, read.cryptogram)
    assert host_status(rig, out) == "approved"
    assert reversals(rig) == []
    slip = render_text(Session(rig.till).receipt(out.record), 42)
    assert "TC" in slip
    assert str(out.record.cryptogram) in slip
    check_money_rules(rig)


def test_a_corrupted_arpc_ends_with_an_aac_and_the_approved_sale_is_reversed(rig: Rig) -> None:
    rig.link.faults.append("corrupt_arpc")
    out = chip_sale(rig)
    assert out.status is TxnStatus.REVERSED
    assert out.card_refused is CardEnding.DECLINED
    assert out.record.cryptogram_type == "AAC"
    assert out.record.response_code == "00"  # the host approved; the card did not
    assert out.next_step == ("主机已批准但卡片拒绝交易：已冲正，未扣款",
                             "Approved by the host but declined by the card: reversed, "
                             "nothing was charged")
    assert host_status(rig, out) == "reversed"
    assert reversals(rig) == ["06"]
    assert rig.till.journal.open_count() == 0
    assert rig.till.refundable_sales(rig.card("cup-debit", Purpose.REFUND)) == []
    check_money_rules(rig)


def test_no_answer_ends_with_an_aac_and_the_usual_reversal(rig: Rig) -> None:
    rig.link.faults.append("drop_after")
    out = chip_sale(rig)
    assert out.status is TxnStatus.REVERSED
    assert out.card_refused is None  # no answer: reversed as any unanswered sale (98)
    assert out.record.cryptogram_type == "AAC"
    assert host_status(rig, out) == "reversed"
    assert reversals(rig) == ["98"]
    check_money_rules(rig)


def test_a_host_decline_ends_with_an_aac_and_nothing_to_reverse(rig: Rig) -> None:
    out = chip_sale(rig, 12_51)  # magic amount: 51 insufficient funds
    assert out.status is TxnStatus.DECLINED
    assert out.code == "51"
    assert out.card_refused is None
    assert out.record.cryptogram_type == "AAC"
    assert host_status(rig, out) == "declined"
    assert reversals(rig) == []
    assert rig.till.journal.open_count() == 0
    check_money_rules(rig)


def test_a_card_removed_before_the_second_generate_ac_reverses_the_approved_sale(
        rig: Rig) -> None:
    read = rig.card("cup-debit", Purpose.SALE, 66_00)
    rig.slot.remove()  # while the host is asked: the cardholder pulls the card
    out = rig.till.sale(66_00, read)
    assert out.status is TxnStatus.REVERSED
    assert out.card_refused is CardEnding.REMOVED
    assert out.next_step[1] == ("Card removed before the sale was completed: reversed, "
                                "nothing was charged")
    assert out.record.cryptogram_type == "ARQC"  # the card never gave its last word
    assert host_status(rig, out) == "reversed"
    assert reversals(rig) == ["06"]
    check_money_rules(rig)


def test_a_reversal_the_host_does_not_take_at_once_stays_owed(rig: Rig) -> None:
    rig.link.faults.extend(["corrupt_arpc"] + ["drop_before"] * 10)
    out = chip_sale(rig)
    assert out.status is TxnStatus.UNCERTAIN
    assert out.card_refused is CardEnding.DECLINED
    assert out.next_step[1].endswith("the terminal will reverse it")
    assert host_status(rig, out) == "approved"
    assert rig.till.journal.open_count() == 1
    rig.link.faults.clear()
    rig.restart()
    assert rig.till.recover().left == 0
    assert host_status(rig, out) == "reversed"
    assert set(reversals(rig)) == {"06"}
    check_money_rules(rig)


def test_a_crash_between_the_answer_and_the_card_is_reversed_on_restart(
        rig: Rig, plan: CrashPlan) -> None:
    plan.arm("after_answer")
    read = rig.card("cup-debit", Purpose.SALE, 55_00)
    with pytest.raises(Crash):
        rig.till.sale(55_00, read)
    assert read.held is not None
    with pytest.raises(DeviceError):  # the sale let the card go, even in a crash
        read.held.complete(issuer_auth_data=None, approved=False, response_code=None)
    rig.restart()
    assert rig.till.recover().left == 0
    (record,) = rig.till.journal.records("kind = 'sale'")
    assert record.status is TxnStatus.REVERSED
    assert reversals(rig) == ["98"]
    check_money_rules(rig)


def test_a_crash_after_the_card_declined_resends_the_06_reversal_on_restart(
        rig: Rig, plan: CrashPlan) -> None:
    rig.link.faults.append("corrupt_arpc")
    plan.arm("after_record")
    with pytest.raises(Crash):
        chip_sale(rig)
    (record,) = rig.till.journal.records("kind = 'sale'")
    assert (record.status, record.cryptogram_type) == (TxnStatus.UNCERTAIN, "AAC")
    rig.restart()
    assert rig.till.recover().left == 0
    assert rig.till.journal.record(record.id).status is TxnStatus.REVERSED
    assert reversals(rig) == ["06"]
    check_money_rules(rig)


def test_contactless_and_refund_reads_do_not_hold_the_card(rig: Rig) -> None:
    tap = rig.card("cup-debit", Purpose.SALE, 20_00, contactless=True)
    assert tap.held is None  # EMV contactless: no second GENERATE AC
    out = rig.till.sale(20_00, tap)
    assert out.status is TxnStatus.APPROVED
    assert out.record.cryptogram_type == "ARQC"
    refund = rig.card("cup-debit", Purpose.REFUND, 5_00)
    assert refund.held is None
    assert refund.cryptogram_type == "AAC"  # no card approves a refund; offline, no ARPC
    check_money_rules(rig)


def test_a_sale_that_never_leaves_lets_the_card_go(rig: Rig) -> None:
    read = rig.card("cup-debit", Purpose.SALE, 10_00)
    rig.link.down = True
    with pytest.raises(HostLinkError):
        rig.till.sale(10_00, read)
    assert read.held is not None
    with pytest.raises(DeviceError, match="no longer held"):
        read.held.complete(issuer_auth_data=None, approved=False, response_code=None)
    rig.link.down = False
    again = rig.card("cup-debit", Purpose.SALE, 10_00)
    first = again.held
    rig.card("visa-credit", Purpose.SALE, 10_00)  # the next read releases a held card
    assert first is not None
    with pytest.raises(DeviceError):
        first.complete(issuer_auth_data=None, approved=False, response_code=None)
    check_money_rules(rig)
