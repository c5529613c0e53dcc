"""Operators: CUP numbering, scrypt passwords, lockout, unlock, expiry, permissions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terminal.core.audit import AuditAction, AuditLog
from terminal.core.db import migrate, open_db
from terminal.core.errors import InputError, RuleError
from terminal.core.operators import (
    MAX_TRIES,
    OperatorLockedError,
    OperatorStore,
    OperatorStoreError,
    PasswordExpiredError,
    PasswordPolicyError,
    PermissionDeniedError,
    Role,
    UnknownOperatorError,
    WrongPasswordError,
    hash_password,
    role_for,
    verify_password,
)

CHEAP_N = 2**4  # tests need no real cost; the format and the algorithm are the same
T0 = datetime(2024, 5, 1, 9, 0, 0)
ADMIN_PW, SUP_PW, CASH_PW = "admin-9999", "super-0000", "1234"


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


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
def audit(conn: sqlite3.Connection, clock: FakeClock) -> AuditLog:
    return AuditLog(conn, clock)


@pytest.fixture
def store(conn: sqlite3.Connection, clock: FakeClock, audit: AuditLog) -> OperatorStore:
    s = OperatorStore(conn, clock, audit=audit, scrypt_n=CHEAP_N)
    assert s.bootstrap(ADMIN_PW, SUP_PW) == ["99", "00"]
    admin = s.login("99", ADMIN_PW)
    s.add("01", CASH_PW, by=admin, name="Li")
    return s


def test_roles_follow_the_number() -> None:
    assert role_for("99") is Role.ADMIN
    assert role_for("00") is Role.SUPERVISOR
    assert role_for("01") is Role.CASHIER
    assert role_for("98") is Role.CASHIER
    for bad in ("1", "100", "a1", "", " 1"):
        with pytest.raises(InputError):
            role_for(bad)


def test_hash_format_and_salt() -> None:
    one, two = hash_password("1234", n=CHEAP_N), hash_password("1234", n=CHEAP_N)
    assert one.split("$")[:4] == ["scrypt", str(CHEAP_N), "8", "1"]
    assert one != two  # a fresh salt each time
    assert "1234" not in one
    assert verify_password("1234", one)
    assert verify_password("1234", two)
    assert not verify_password("1235", one)


def test_default_cost_is_real_scrypt() -> None:
    stored = hash_password("pw-123456")
    assert stored.split("$")[1:4] == ["16384", "8", "1"]
    assert verify_password("pw-123456", stored)


def test_malformed_hash_is_an_error() -> None:
    with pytest.raises(OperatorStoreError):
        verify_password("x", "sha1$abc")
    with pytest.raises(OperatorStoreError):
        verify_password("x", "scrypt$16$8$1$!!!$!!!")


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_verify_is_the_inverse_of_hash(password: str, other: str) -> None:
    stored = hash_password(password, n=CHEAP_N)
    assert verify_password(password, stored)
    assert verify_password(other, stored) == (other == password)


def test_bootstrap_is_idempotent(store: OperatorStore) -> None:
    assert store.bootstrap("another-1", "another-2") == []
    assert store.login("99", ADMIN_PW).role is Role.ADMIN  # old password kept
    assert [op.number for op in store.list()] == ["00", "01", "99"]


def test_password_never_stored(store: OperatorStore, conn: sqlite3.Connection) -> None:
    dump = "\n".join(conn.iterdump())
    for pw in (ADMIN_PW, SUP_PW):
        assert pw not in dump
    assert "scrypt$" in dump


def test_login_ok_and_audited(store: OperatorStore, audit: AuditLog) -> None:
    op = store.login("01", CASH_PW)
    assert op.role is Role.CASHIER
    assert op.name == "Li"
    assert not op.must_change_password
    logins = audit.entries(action=AuditAction.LOGIN)
    assert [e.operator for e in logins] == ["99", "01"]


def test_unknown_and_inactive_operators(store: OperatorStore) -> None:
    with pytest.raises(UnknownOperatorError):
        store.login("02", CASH_PW)
    sup = store.login("00", SUP_PW)
    store.deactivate("01", by=sup)
    with pytest.raises(UnknownOperatorError):
        store.login("01", CASH_PW)
    assert [o.number for o in store.list()] == ["00", "99"]
    assert "01" in [o.number for o in store.list(include_inactive=True)]


def test_wrong_passwords_count_down_then_lock(store: OperatorStore, clock: FakeClock,
                                              audit: AuditLog) -> None:
    for left in range(MAX_TRIES - 1, 0, -1):
        with pytest.raises(WrongPasswordError) as info:
            store.login("01", "0000")
        assert info.value.tries_left == left
        assert str(left) in info.value.cashier_en
    with pytest.raises(OperatorLockedError) as locked:
        store.login("01", "0000")
    assert locked.value.until == T0 + timedelta(minutes=15)
    # Locked: even the right password is refused until the time has passed.
    with pytest.raises(OperatorLockedError):
        store.login("01", CASH_PW)
    clock.advance(minutes=14, seconds=59)
    with pytest.raises(OperatorLockedError):
        store.login("01", CASH_PW)
    clock.advance(seconds=1)
    assert store.login("01", CASH_PW).number == "01"
    failed = audit.entries(action=AuditAction.LOGIN_FAILED)
    assert len(failed) == MAX_TRIES + 2
    assert all(CASH_PW not in str(e.detail) and "0000" not in str(e.detail) for e in failed)


def test_success_resets_the_count(store: OperatorStore) -> None:
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(WrongPasswordError):
            store.login("01", "0000")
    store.login("01", CASH_PW)
    with pytest.raises(WrongPasswordError) as info:
        store.login("01", "0000")
    assert info.value.tries_left == MAX_TRIES - 1


def test_lock_after_expiry_of_lock_starts_afresh(store: OperatorStore, clock: FakeClock) -> None:
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(WrongPasswordError):
            store.login("01", "0000")
    with pytest.raises(OperatorLockedError):
        store.login("01", "0000")
    clock.advance(minutes=16)
    with pytest.raises(WrongPasswordError) as info:
        store.login("01", "0000")
    assert info.value.tries_left == MAX_TRIES - 1


def test_configurable_lockout(conn: sqlite3.Connection, clock: FakeClock) -> None:
    s = OperatorStore(conn, clock, lockout=timedelta(minutes=1), scrypt_n=CHEAP_N)
    s.bootstrap(ADMIN_PW, SUP_PW)
    for _ in range(MAX_TRIES - 1):
        with pytest.raises(WrongPasswordError):
            s.login("00", "wrong")
    with pytest.raises(OperatorLockedError) as info:
        s.login("00", "wrong")
    assert info.value.until == T0 + timedelta(minutes=1)


def test_unlock_by_supervisor_not_by_self_or_cashier(store: OperatorStore) -> None:
    admin = store.login("99", ADMIN_PW)
    store.add("02", "5678", by=admin)
    cashier2 = store.login("02", "5678")
    for _ in range(MAX_TRIES):
        with pytest.raises(RuleError):
            store.login("01", "0000")
    with pytest.raises(PermissionDeniedError):
        store.unlock("01", by=cashier2)
    sup = store.login("00", SUP_PW)
    with pytest.raises(PermissionDeniedError):
        store.unlock("00", by=sup)
    assert store.unlock("01", by=sup).locked_until is None
    assert store.login("01", CASH_PW).number == "01"


def test_wrong_supervisor_password_in_approval_counts(store: OperatorStore) -> None:
    for left in range(MAX_TRIES - 1, 0, -1):
        with pytest.raises(WrongPasswordError) as info:
            store.verify_approver("00", "nope")
        assert info.value.tries_left == left
    with pytest.raises(OperatorLockedError):
        store.verify_approver("00", "nope")
    # The same lock stops the supervisor's own login.
    with pytest.raises(OperatorLockedError):
        store.login("00", SUP_PW)
    admin = store.login("99", ADMIN_PW)
    store.unlock("00", by=admin)
    assert store.verify_approver("00", SUP_PW).can_approve


def test_cashier_cannot_approve(store: OperatorStore) -> None:
    with pytest.raises(PermissionDeniedError):
        store.verify_approver("01", CASH_PW)
    assert store.verify_approver("99", ADMIN_PW).role is Role.ADMIN


def test_change_password_needs_the_old_one(store: OperatorStore, audit: AuditLog) -> None:
    with pytest.raises(WrongPasswordError):
        store.change_password("01", "9999", "4321")
    with pytest.raises(PasswordPolicyError):
        store.change_password("01", CASH_PW, CASH_PW)
    with pytest.raises(PasswordPolicyError):
        store.change_password("01", CASH_PW, "12")
    store.change_password("01", CASH_PW, "4321")
    with pytest.raises(WrongPasswordError):
        store.login("01", CASH_PW)
    assert store.login("01", "4321").number == "01"
    changes = audit.entries(action=AuditAction.PASSWORD_CHANGE)
    assert [(e.operator, e.detail) for e in changes] == [
        ("01", {"how": "change", "number": "01"})]


def test_expiry_set_by_admin_forces_a_change(store: OperatorStore, clock: FakeClock) -> None:
    admin = store.login("99", ADMIN_PW)
    sup = store.login("00", SUP_PW)
    with pytest.raises(PermissionDeniedError):
        store.set_password_expiry(30, by=sup)
    with pytest.raises(InputError):
        store.set_password_expiry(0, by=admin)
    store.set_password_expiry(30, by=admin)
    assert store.password_expiry_days() == 30
    clock.advance(days=29, hours=23)
    assert not store.login("01", CASH_PW).must_change_password
    clock.advance(hours=1)
    op = store.login("01", CASH_PW)
    assert op.must_change_password
    with pytest.raises(PasswordExpiredError):
        store.login("01", CASH_PW, allow_expired=False)
    with pytest.raises(PasswordExpiredError):
        store.verify_approver("00", SUP_PW)
    store.change_password("01", CASH_PW, "2468")
    assert not store.login("01", "2468", allow_expired=False).must_change_password
    store.set_password_expiry(None, by=admin)
    assert store.password_expiry_days() is None
    assert not store.login("00", SUP_PW).must_change_password


def test_permissions_to_manage(store: OperatorStore) -> None:
    sup = store.login("00", SUP_PW)
    cashier = store.login("01", CASH_PW)
    with pytest.raises(PermissionDeniedError):
        store.add("03", "1111", by=cashier)
    assert store.add("03", "1111", by=sup).role is Role.CASHIER
    with pytest.raises(PermissionDeniedError):
        store.add("00", "1111", by=sup)
    with pytest.raises(PermissionDeniedError):
        store.deactivate("99", by=sup)
    with pytest.raises(PermissionDeniedError):
        store.reset_password("99", "new-pass-1", by=sup)
    with pytest.raises(RuleError):
        store.add("03", "1111", by=sup)


def test_reset_password_by_manager_unlocks(store: OperatorStore) -> None:
    for _ in range(MAX_TRIES):
        with pytest.raises(RuleError):
            store.login("01", "0000")
    sup = store.login("00", SUP_PW)
    store.reset_password("01", "7777", by=sup)
    assert store.login("01", "7777").number == "01"
