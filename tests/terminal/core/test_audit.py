"""The audit log: append-only, no card or secret data, flags with follow-ups."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.core.audit import (
    AuditAction,
    AuditDetailError,
    AuditLog,
    FlagError,
    clean_detail,
    sensitive_key,
)
from terminal.core.db import migrate, open_db, transaction

T0 = datetime(2024, 5, 1, 9, 0, 0)
PAN = "6225880000000019"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path / "journal.db")
    migrate(c)
    yield c
    c.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(conn: sqlite3.Connection, clock: FakeClock) -> AuditLog:
    return AuditLog(conn, clock)


def add_txn(conn: sqlite3.Connection, stan: str, kind: str = "refund") -> int:
    cur = conn.execute(
        "INSERT INTO txn (kind, mti, stan, batch, amount, currency, pan_masked, pan_hash, "
        "status, created_at, request) VALUES (?, '0200', ?, '000001', 100, '156', "
        "'622588******0019', 'h', 'approved', ?, x'00')", (kind, stan, T0.isoformat()))
    return int(cur.lastrowid or 0)


def test_append_and_read_back(log: AuditLog, clock: FakeClock, conn: sqlite3.Connection) -> None:
    txn = add_txn(conn, "000001")
    log.append(AuditAction.LOGIN, "01")
    clock.now += timedelta(minutes=1)
    log.append(AuditAction.REFUND, "01", txn_id=txn, approver="00",
               detail={"reason": "damaged", "note": "box crushed", "amount": 1234})
    clock.now += timedelta(minutes=1)
    log.append("reprint", "01", txn_id=txn)
    all_ = log.entries()
    assert [e.action for e in all_] == [AuditAction.LOGIN, AuditAction.REFUND,
                                        AuditAction.REPRINT]
    refund = all_[1]
    assert refund.approver == "00"
    assert refund.txn_id == txn
    assert refund.operator == "01"
    assert refund.detail == {"reason": "damaged", "note": "box crushed", "amount": 1234}
    assert refund.at == T0 + timedelta(minutes=1)
    # Half-open window, action and txn filters.
    window = log.entries(T0 + timedelta(minutes=1), T0 + timedelta(minutes=2))
    assert [e.action for e in window] == [AuditAction.REFUND]
    assert [e.action for e in log.entries(action=AuditAction.REPRINT)] == [AuditAction.REPRINT]
    assert len(log.entries(txn_id=txn)) == 2
    assert log.entries(operator="02") == []


def test_unknown_action_refused(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="not a valid"):
        log.append("delete_everything", "01")


def test_append_only(log: AuditLog, conn: sqlite3.Connection) -> None:
    log.append(AuditAction.LOGIN, "01")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET operator = '02'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit")
    assert [e.operator for e in log.entries()] == ["01"]


@pytest.mark.parametrize("key", ["pan", "PAN", "card_pan", "panNumber", "pin_block", "pinBlock",
                                 "track2", "track_2_data", "mak", "key", "tmk_kcv", "password",
                                 "new_password", "cvv2", "icc"])
def test_sensitive_keys_refused(log: AuditLog, key: str) -> None:
    assert sensitive_key(key)
    with pytest.raises(AuditDetailError):
        log.append(AuditAction.REFUND, "01", detail={key: "x"})
    with pytest.raises(AuditDetailError):
        log.append(AuditAction.REFUND, "01", detail={"nested": {key: "x"}})
    assert log.entries() == []


@pytest.mark.parametrize("key", ["pan_masked", "pan_hash", "panMasked", "amount", "reason",
                                 "operator", "spin", "company", "expiry_days", "note"])
def test_harmless_keys_pass(key: str) -> None:
    assert not sensitive_key(key)


def test_long_digit_runs_masked(log: AuditLog) -> None:
    log.append(AuditAction.REFUND, "01",
               detail={"note": f"customer card {PAN}", "ref": int(PAN), "list": [PAN],
                       "rrn": "123456789012"})
    entry = log.entries()[0]
    text = str(entry.detail)
    assert PAN not in text
    assert entry.detail["note"] == "customer card 622588******0019"
    assert entry.detail["rrn"] == "123456789012"  # 12 digits: not a PAN


@given(st.text(alphabet="0123456789 abc-", max_size=60))
def test_no_13_digit_run_survives(text: str) -> None:
    cleaned = clean_detail({"note": text, "nested": {"v": [text]}})
    assert not re.search(r"\d{13,}", str(cleaned))


def test_non_json_values_refused(log: AuditLog) -> None:
    with pytest.raises(AuditDetailError):
        log.append(AuditAction.REFUND, "01", detail={"blob": b"\x00"})


def test_append_joins_the_callers_transaction(log: AuditLog, conn: sqlite3.Connection) -> None:
    def failing_change() -> None:
        with transaction(conn):
            log.append(AuditAction.SALE, "01")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    assert log.entries() == []
    with transaction(conn):
        log.append(AuditAction.SALE, "01")
    assert len(log.entries()) == 1


def test_flag_and_follow_up(log: AuditLog, conn: sqlite3.Connection) -> None:
    refund = add_txn(conn, "000002")
    again = add_txn(conn, "000003", kind="sale")
    with pytest.raises(FlagError):
        log.flag(refund, "00", "   ")
    with pytest.raises(FlagError):
        log.flag(9999, "00", "no such txn")
    flag_id = log.flag(refund, "00", f"refunded twice by mistake, card {PAN}")
    [flag] = log.flagged()
    assert flag.txn_id == refund
    assert flag.follow_up_txn_id is None
    assert PAN not in flag.explanation
    assert log.flagged(open_only=True) == [flag]
    with pytest.raises(FlagError):
        log.link_follow_up(flag_id, refund)
    linked = log.link_follow_up(flag_id, again, operator="00")
    assert linked.follow_up_txn_id == again
    assert log.flagged(open_only=True) == []
    with pytest.raises(FlagError):
        log.link_follow_up(flag_id, again)
    with pytest.raises(FlagError):
        log.link_follow_up(4242, again)
    flags = log.entries(action=AuditAction.FLAG)
    assert [e.detail.get("follow_up_txn_id") for e in flags] == [None, again]
    assert all(e.txn_id == refund for e in flags)
