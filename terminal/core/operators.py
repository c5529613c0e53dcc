"""Operators as on CUP terminals: numbers, roles, scrypt passwords, lockout and expiry.

Numbering (the role follows from the number, it is never stored apart from it):
``99`` administrator (系统管理员), ``00`` supervisor (主管), ``01``-``98`` cashiers (柜员).

Passwords are stored as ``scrypt$N$r$p$salt$hash`` (salt and hash base64), a
fresh random salt each time; verification recomputes with the stored cost and
compares with :func:`hmac.compare_digest`. A password is never stored, logged
or put in an error message.

Lockout: :data:`MAX_TRIES` wrong passwords in a row lock the operator for
``lockout`` (default 15 minutes). The tries count whether the password was typed
at login, for a password change or as a supervisor's approval. The lock ends
when its time has passed or when an administrator or supervisor unlocks it
(nobody unlocks themselves).

Expiry: the administrator sets a number of days (kept in the journal's ``meta``
table, key :data:`EXPIRY_META_KEY`; no key = passwords do not expire). A login
with an expired password succeeds only far enough to change it: the returned
:class:`Operator` has ``must_change_password`` set, and
``login(..., allow_expired=False)`` (scripts, approvals) raises
:class:`PasswordExpiredError` instead.

Who may do what: the administrator manages everything (operators of every role,
the expiry); the supervisor adds, deactivates, resets and unlocks cashiers and
may unlock the administrator. ``99`` and ``00`` are created by :meth:`OperatorStore.bootstrap`
only and cannot be deactivated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from terminal.core.db import transaction
from terminal.core.errors import InputError, RuleError, TerminalError

if TYPE_CHECKING:
    from terminal.core.audit import AuditLog

Clock = Callable[[], datetime]

ADMIN_NUMBER = "99"
SUPERVISOR_NUMBER = "00"
MAX_TRIES = 5
DEFAULT_LOCKOUT = timedelta(minutes=15)
EXPIRY_META_KEY = "operator.password_expiry_days"
MIN_PASSWORD_LEN = 4
MAX_PASSWORD_LEN = 64

#: scrypt cost: N=2**14, r=8, p=1 (about 16 MiB and 60 ms per check).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_LEN = 16
_HASH_LEN = 32
_NUMBER = re.compile(r"^[0-9]{2}$")


# --- errors -------------------------------------------------------------------------------
class LoginError(RuleError):
    """A login, approval or password check did not let the operator in."""

    cashier_zh, cashier_en = "登录失败", "Login failed"


class UnknownOperatorError(LoginError):
    """No operator with this number (or it was deactivated)."""

    cashier_zh, cashier_en = "操作员不存在", "Unknown operator"


class WrongPasswordError(LoginError):
    """Wrong password; ``tries_left`` more before the operator is locked."""

    cashier_zh, cashier_en = "密码错误", "Wrong password"

    def __init__(self, message: str, *, tries_left: int) -> None:
        super().__init__(message, cashier_zh=f"密码错误，还可尝试{tries_left}次",
                         cashier_en=f"Wrong password, {tries_left} tries left")
        self.tries_left = tries_left


class OperatorLockedError(LoginError):
    """Too many wrong passwords: locked until ``until`` (or an unlock)."""

    cashier_zh, cashier_en = "操作员已锁定", "Operator locked"

    def __init__(self, message: str, *, until: datetime) -> None:
        shown = until.strftime("%H:%M")
        super().__init__(message, cashier_zh=f"操作员已锁定至{shown}，或请主管解锁",
                         cashier_en=f"Locked until {shown} or a supervisor's unlock")
        self.until = until


class PasswordExpiredError(LoginError):
    """The password has expired: it must be changed before anything else."""

    cashier_zh, cashier_en = "密码已过期，请修改密码", "Password expired: change it"


class PermissionDeniedError(RuleError):
    """The operator's role does not allow this."""

    cashier_zh, cashier_en = "无权限", "Not permitted"


class PasswordPolicyError(InputError):
    """The new password is too short, too long, or the same as the old one."""

    cashier_zh, cashier_en = "新密码不符合要求", "New password not accepted"


class OperatorExistsError(RuleError):
    """An operator with this number already exists."""

    cashier_zh, cashier_en = "操作员已存在", "Operator already exists"


class OperatorStoreError(TerminalError):
    """A stored password hash is malformed (the operator table was damaged)."""


# --- roles and passwords ------------------------------------------------------------------
class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    CASHIER = "cashier"


ROLE_TEXT: dict[Role, tuple[str, str]] = {
    Role.ADMIN: ("系统管理员", "Administrator"),
    Role.SUPERVISOR: ("主管", "Supervisor"),
    Role.CASHIER: ("柜员", "Cashier"),
}


def role_for(number: str) -> Role:
    """The role a CUP operator number carries; :class:`InputError` for anything not 00-99."""
    if not _NUMBER.match(number):
        raise InputError(f"operator number must be two digits, got {number!r}",
                         cashier_zh="操作员号为两位数字", cashier_en="Operator number: two digits")
    if number == ADMIN_NUMBER:
        return Role.ADMIN
    if number == SUPERVISOR_NUMBER:
        return Role.SUPERVISOR
    return Role.CASHIER


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_LEN)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored ``scrypt$...`` string (constant-time compare)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise OperatorStoreError("stored password hash is not scrypt$N$r$p$salt$hash")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise OperatorStoreError("stored password hash is malformed") from None
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int,
            dklen: int = _HASH_LEN) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * r * n * p + 1024 * 1024, dklen=dklen)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def check_password_policy(password: str) -> None:
    """Refuse passwords a cashier could not type or that are too weak to mean anything."""
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise PasswordPolicyError(
            f"password must be {MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN} characters",
            cashier_zh=f"密码长度须为{MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN}位",
            cashier_en=f"Password: {MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN} characters")
    if not password.isprintable():
        raise PasswordPolicyError("password contains control characters")


# --- the store ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Operator:
    """One operator as the journal knows them (never their password)."""

    number: str
    name: str
    role: Role
    active: bool
    pw_changed_at: datetime
    failed_tries: int = 0
    locked_until: datetime | None = None
    must_change_password: bool = False  # set by a login whose password has expired

    @property
    def can_approve(self) -> bool:
        """Supervisors and the administrator may approve refunds and voids."""
        return self.role in (Role.ADMIN, Role.SUPERVISOR)

    def may_manage(self, target_number: str) -> bool:
        """Whether this operator may add, deactivate or reset ``target_number``."""
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.SUPERVISOR and role_for(target_number) is Role.CASHIER


class OperatorStore:
    """The ``operator`` table behind typed calls; ``clock`` gives the time of every check.

    With an :class:`~terminal.core.audit.AuditLog`, every login, failed login,
    unlock, password change and operator change is recorded in the same
    transaction as the change it describes.
    """

    def __init__(self, conn: sqlite3.Connection, clock: Clock, *,
                 lockout: timedelta = DEFAULT_LOCKOUT, audit: AuditLog | None = None,
                 scrypt_n: int = SCRYPT_N) -> None:
        self._conn = conn
        self._clock = clock
        self.lockout = lockout
        self._audit = audit
        self._scrypt_n = scrypt_n

    # -- creation -------------------------------------------------------------------------
    def bootstrap(self, admin_password: str, supervisor_password: str) -> list[str]:
        """Create 99 and 00 if missing (``init``); returns the numbers created."""
        created: list[str] = []
        for number, password, name in ((ADMIN_NUMBER, admin_password, "系统管理员"),
                                       (SUPERVISOR_NUMBER, supervisor_password, "主管")):
            if self._row(number) is None:
                check_password_policy(password)
                self._insert(number, name, password)
                created.append(number)
        return created

    def add(self, number: str, password: str, *, by: Operator, name: str = "") -> Operator:
        """Add a cashier (01-98). 99 and 00 exist from :meth:`bootstrap` on."""
        role = role_for(number)
        if role is not Role.CASHIER:
            raise PermissionDeniedError(f"operator {number} is created by init, not added",
                                        cashier_zh="99/00由初始化创建",
                                        cashier_en="99/00 are created by init")
        self._require_manager(by, number)
        check_password_policy(password)
        if self._row(number) is not None:
            raise OperatorExistsError(f"operator {number} already exists")
        with self._tx():
            self._insert(number, name, password)
            self._log("operator_change", by.number, {"op": "add", "number": number})
        return self.get(number)

    def _insert(self, number: str, name: str, password: str) -> None:
        self._conn.execute(
            "INSERT INTO operator (number, name, role, pw_hash, pw_changed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (number, name, role_for(number).value, hash_password(password, n=self._scrypt_n),
             _iso(self._clock())))

    # -- reading --------------------------------------------------------------------------
    def get(self, number: str) -> Operator:
        """The operator with ``number`` (active or not); :class:`UnknownOperatorError` if none."""
        row = self._row(number)
        if row is None:
            raise UnknownOperatorError(f"no operator {number}")
        return _operator(row)

    def list(self, *, include_inactive: bool = False) -> list[Operator]:
        """Every operator by number (only the active ones unless asked)."""
        sql = "SELECT * FROM operator"
        if not include_inactive:
            sql += " WHERE active = 1"
        return [_operator(row) for row in self._conn.execute(sql + " ORDER BY number")]

    def _row(self, number: str) -> sqlite3.Row | None:
        role_for(number)
        row: sqlite3.Row | None = self._conn.execute(
            "SELECT * FROM operator WHERE number = ?", (number,)).fetchone()
        return row

    # -- checking passwords ---------------------------------------------------------------
    def login(self, number: str, password: str, *, allow_expired: bool = True) -> Operator:
        """Check ``number``/``password``; the operator, or a typed :class:`LoginError`.

        Raises :class:`UnknownOperatorError`, :class:`OperatorLockedError` (also on
        the try that locks), :class:`WrongPasswordError` (with ``tries_left``), and
        :class:`PasswordExpiredError` when ``allow_expired`` is false. With an
        expired password and ``allow_expired``, the operator comes back with
        ``must_change_password`` set: only a password change may follow.
        """
        op = self._check(number, password, audit_success="login")
        if op.must_change_password and not allow_expired:
            raise PasswordExpiredError(f"operator {number}'s password has expired")
        return op

    def verify_approver(self, number: str, password: str) -> Operator:
        """A supervisor's or administrator's approval: password checked, tries counted.

        A wrong password counts towards that approver's lockout like a login. An
        expired password cannot approve, nor can a cashier.
        """
        if role_for(number) is Role.CASHIER:
            raise PermissionDeniedError(f"operator {number} is a cashier and cannot approve",
                                        cashier_zh="柜员无授权权限",
                                        cashier_en="A cashier cannot approve")
        op = self._check(number, password, audit_success=None)
        if op.must_change_password:
            raise PasswordExpiredError(f"approver {number}'s password has expired")
        return op

    def _check(self, number: str, password: str, *, audit_success: str | None) -> Operator:
        now = self._clock()
        row = self._row(number)
        if row is None or not row["active"]:
            # Spend the same time as a real check so the answer time does not tell.
            verify_password(password, _dummy_hash(self._scrypt_n))
            with self._tx():
                self._log("login_failed", number, {"why": "unknown"})
            raise UnknownOperatorError(f"no active operator {number}")
        op = _operator(row)
        if op.locked_until is not None and op.locked_until > now:
            with self._tx():
                self._log("login_failed", number, {"why": "locked"})
            raise OperatorLockedError(f"operator {number} is locked", until=op.locked_until)
        tries = 0 if op.locked_until is not None else op.failed_tries  # a lock that ran out
        if not verify_password(password, row["pw_hash"]):
            tries += 1
            until = now + self.lockout if tries >= MAX_TRIES else None
            with self._tx():
                self._conn.execute(
                    "UPDATE operator SET failed_tries = ?, locked_until = ? WHERE number = ?",
                    (0 if until else tries, _iso(until) if until else None, number))
                self._log("login_failed", number,
                          {"why": "wrong_password", "tries": tries, "locked": until is not None})
            if until is not None:
                raise OperatorLockedError(f"operator {number} locked after {tries} wrong "
                                          "passwords", until=until)
            raise WrongPasswordError(f"wrong password for operator {number}",
                                     tries_left=MAX_TRIES - tries)
        expired = self._expired(op, now)
        with self._tx():
            self._conn.execute(
                "UPDATE operator SET failed_tries = 0, locked_until = NULL WHERE number = ?",
                (number,))
            if audit_success is not None:
                self._log(audit_success, number, {"must_change": expired})
        return _operator(self._row_or_fail(number), must_change=expired)

    def _row_or_fail(self, number: str) -> sqlite3.Row:
        row = self._row(number)
        if row is None:
            raise UnknownOperatorError(f"no operator {number}")
        return row

    # -- expiry ---------------------------------------------------------------------------
    def password_expiry_days(self) -> int | None:
        """Days a password stays valid, or None (never expires)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?",
                                 (EXPIRY_META_KEY,)).fetchone()
        return int(row[0]) if row is not None else None

    def set_password_expiry(self, days: int | None, *, by: Operator) -> None:
        """The administrator sets how many days a password lasts (None: no expiry)."""
        if by.role is not Role.ADMIN:
            raise PermissionDeniedError(f"operator {by.number} cannot set the password expiry",
                                        cashier_zh="仅系统管理员可设置",
                                        cashier_en="Administrator only")
        if days is not None and days <= 0:
            raise InputError(f"expiry must be a positive number of days, got {days}")
        with self._tx():
            if days is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (EXPIRY_META_KEY,))
            else:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (EXPIRY_META_KEY, str(days)))
            self._log("config_change", by.number, {"setting": EXPIRY_META_KEY, "days": days})

    def _expired(self, op: Operator, now: datetime) -> bool:
        days = self.password_expiry_days()
        return days is not None and now >= op.pw_changed_at + timedelta(days=days)

    # -- changes --------------------------------------------------------------------------
    def change_password(self, number: str, old: str, new: str) -> Operator:
        """The operator's own change: the old password is checked (and tries counted)."""
        self._check(number, old, audit_success=None)
        check_password_policy(new)
        if hmac.compare_digest(old.encode(), new.encode()):
            raise PasswordPolicyError("the new password must differ from the old one",
                                      cashier_zh="新密码不能与旧密码相同",
                                      cashier_en="New password must differ")
        self._set_password(number, new, by=number, how="change")
        return self.get(number)

    def reset_password(self, number: str, new: str, *, by: Operator) -> Operator:
        """A manager sets another operator's password (forgotten password); unlocks too."""
        if by.number == number:
            raise PermissionDeniedError("use change_password for your own password")
        self._require_manager(by, number)
        self.get(number)
        check_password_policy(new)
        self._set_password(number, new, by=by.number, how="reset")
        return self.get(number)

    def _set_password(self, number: str, new: str, *, by: str, how: str) -> None:
        with self._tx():
            self._conn.execute(
                "UPDATE operator SET pw_hash = ?, pw_changed_at = ?, failed_tries = 0, "
                "locked_until = NULL WHERE number = ?",
                (hash_password(new, n=self._scrypt_n), _iso(self._clock()), number))
            self._log("password_change", by, {"number": number, "how": how})

    def unlock(self, number: str, *, by: Operator) -> Operator:
        """Clear the lock and the wrong-try count (administrator or supervisor, not oneself)."""
        if not by.can_approve or by.number == number:
            raise PermissionDeniedError(f"operator {by.number} cannot unlock {number}",
                                        cashier_zh="无权解锁", cashier_en="Not allowed to unlock")
        self.get(number)
        with self._tx():
            self._conn.execute(
                "UPDATE operator SET failed_tries = 0, locked_until = NULL WHERE number = ?",
                (number,))
            self._log("unlock", by.number, {"number": number})
        return self.get(number)

    def deactivate(self, number: str, *, by: Operator) -> Operator:
        """Stop a cashier from logging in (the journal keeps their number on old records)."""
        if role_for(number) is not Role.CASHIER:
            raise PermissionDeniedError(f"operator {number} cannot be deactivated")
        self._require_manager(by, number)
        self.get(number)
        with self._tx():
            self._conn.execute("UPDATE operator SET active = 0 WHERE number = ?", (number,))
            self._log("operator_change", by.number, {"op": "deactivate", "number": number})
        return self.get(number)

    def _require_manager(self, by: Operator, number: str) -> None:
        if not by.active or not by.may_manage(number):
            raise PermissionDeniedError(f"operator {by.number} may not manage operator {number}",
                                        cashier_zh="无权管理该操作员",
                                        cashier_en="Not allowed for this operator")

    # -- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[None]:
        if self._conn.in_transaction:
            yield
            return
        with transaction(self._conn):
            yield

    def _log(self, action: str, operator: str | None, detail: dict[str, object]) -> None:
        if self._audit is not None:
            from terminal.core.audit import AuditAction
            self._audit.append(AuditAction(action), operator, detail=detail)


def _dummy_hash(n: int) -> str:
    """A well-formed hash no password matches (all-zero digest), for unknown operators."""
    return "$".join(("scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(b"\0" * _SALT_LEN),
                     _b64(b"\0" * _HASH_LEN)))


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def _operator(row: sqlite3.Row, *, must_change: bool = False) -> Operator:
    locked = row["locked_until"]
    return Operator(number=row["number"], name=row["name"], role=Role(row["role"]),
                    active=bool(row["active"]),
                    pw_changed_at=datetime.fromisoformat(row["pw_changed_at"]),
                    failed_tries=row["failed_tries"],
                    locked_until=datetime.fromisoformat(locked) if locked else None,
                    must_change_password=must_change)
