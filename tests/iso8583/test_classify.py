"""TransactionTable.classify: the dialect's rows pick a request's kind; the memo of its
answers never hands one message's kind to another."""

from __future__ import annotations

from iso8583 import classify
from iso8583.classify import TransactionTable
from iso8583.dialects import get_dialect


def test_a_kind_kept_for_one_message_is_not_given_to_another() -> None:
    d = get_dialect("cup")
    table = TransactionTable(d)
    sale = d.message("0200", {3: "000000", 25: "00", 60: "22000001000"})
    void = d.message("0200", {3: "200000", 25: "00", 60: "23000001000"})
    balance = d.message("0200", {3: "310000", 25: "00", 60: "01000001000"})
    for _ in range(2):  # the second round answers from the memo
        assert table.classify(sale) == "sale"
        assert table.classify(void) == "void"
        assert table.classify(balance) == "balance"
    sign_on = d.message("0800", {60: "00000001003"})
    echo = d.message("0820", {60: "00000001301"})
    assert table.classify(sign_on) == "sign_on"
    assert table.classify(echo) == "echo"
    assert table.classify(d.message("0300", {3: "000000"})) is None
    sale[3] = "990000"  # the same message changed: classified again
    assert table.classify(sale) == classify.UNKNOWN


def test_the_memo_stays_bounded() -> None:
    d = get_dialect("cup")
    table = TransactionTable(d)
    for batch in range(classify._CLASSIFIED_MAX + 10):
        assert table.classify(d.message("0200", {3: "000000", 60: f"22{batch:06d}000"})) == "sale"
    assert len(table._classified) <= classify._CLASSIFIED_MAX
