"""The append-only audit log: who did what, when and why; and flags on mistaken refunds.

Rows go to the journal's ``audit`` table, which triggers keep append-only.
``detail`` is JSON and is checked before it is written: a key that names card
or secret data (``pan``, ``pin``, ``track``, ``key``, ``password``, ...) is
refused with :class:`AuditDetailError` (``pan_masked`` / ``pan_hash`` are fine),
and any run of 13 or more digits in a value is masked as a PAN would be.

A refund found to be a cashier's mistake is flagged with an explanation and
later linked to its follow-up transaction (for example a new sale the customer
agreed to); both steps are also audit entries.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any

from iso8583.masking import mask_text
from terminal.core.db import transaction
from terminal.core.errors import InputError, JournalError, TerminalError

Clock = Callable[[], datetime]


class AuditAction(StrEnum):
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    APPROVAL = "approval"
    REFUND = "refund"
    VOID = "void"
    SALE = "sale"
    SETTLEMENT = "settlement"
    CONFIG_CHANGE = "config_change"
    REPRINT = "reprint"
    FLAG = "flag"
    OPERATOR_CHANGE = "operator_change"
    UNLOCK = "unlock"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 (an action name)


class AuditDetailError(TerminalError):
    """An audit detail would have carried card or secret data; nothing was written."""


class FlagError(InputError):
    """A flag names no transaction, has no explanation, or is already followed up."""

    cashier_zh, cashier_en = "标记失败", "Cannot flag"


#: Words that, as a part of a detail key, mean card or secret data.
_SENSITIVE = frozenset({"pan", "pin", "pinblock", "track", "track1", "track2", "track3",
                        "key", "keys", "tmk", "tpk", "tak", "mak", "pik", "zmk", "cvv", "cvv2",
                        "cvn", "cvn2", "password", "passwd", "pwd", "secret", "icc"})
#: Words that make such a key harmless (the value is already masked or hashed).
_SAFE = frozenset({"masked", "hash", "last4"})
_KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def sensitive_key(key: str) -> bool:
    """Whether a detail key names PAN, PIN, track, key or password data."""
    words = {w.lower() for w in _KEY_WORDS.findall(key)}
    return bool(words & _SENSITIVE) and not words & _SAFE


def clean_detail(detail: Mapping[str, object]) -> dict[str, Any]:
    """``detail`` made safe for the log: sensitive keys refused, long digit runs masked."""
    return {str(k): _clean(v, str(k)) for k, v in _checked(detail, "").items()}


def _checked(detail: Mapping[str, object], where: str) -> Mapping[str, object]:
    for key in detail:
        if not isinstance(key, str):
            raise AuditDetailError(f"audit detail key {where}{key!r} is not a string")
        if sensitive_key(key):
            raise AuditDetailError(f"audit detail key {where}{key!r} looks like card or "
                                   "secret data")
    return detail


def _clean(value: object, where: str) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, Enum):
        return _clean(value.value, where)
    if isinstance(value, int):
        text = str(value)
        return mask_text(text) if len(text.lstrip("-")) >= 13 else value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        inner = _checked(value, where + ".")
        return {str(k): _clean(v, f"{where}.{k}") for k, v in inner.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, where) for v in value]
    raise AuditDetailError(f"audit detail {where!r} has a {type(value).__name__}, "
                           "not a JSON value")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    operator: str | None
    action: AuditAction
    txn_id: int | None
    approver: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Flag:
    """A refund (or any transaction) marked as a cashier's mistake."""

    id: int
    txn_id: int
    at: datetime
    operator: str | None
    explanation: str
    follow_up_txn_id: int | None


class AuditLog:
    """Appends to and reads the ``audit`` and ``flag`` tables.

    Inside a caller's open transaction an append joins it (so the audit entry
    commits or rolls back with the change it describes); otherwise each append
    is its own transaction.
    """

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    def append(self, action: AuditAction | str, operator: str | None, *,
               txn_id: int | None = None, approver: str | None = None,
               detail: Mapping[str, object] | None = None) -> int:
        """Write one entry; its id. Refuses sensitive keys (nothing written then)."""
        act = AuditAction(action)
        text = json.dumps(clean_detail(detail or {}), ensure_ascii=False, sort_keys=True)
        with self._tx():
            try:
                cur = self._conn.execute(
                    "INSERT INTO audit (at, operator, action, txn_id, approver, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (_iso(self._clock()), operator, act.value, txn_id, approver, text))
            except sqlite3.IntegrityError as exc:
                raise JournalError(f"audit entry for txn {txn_id} refused: {exc}") from None
        return int(cur.lastrowid or 0)

    def entries(self, from_: datetime | None = None, to: datetime | None = None,
                action: AuditAction | str | None = None, *, txn_id: int | None = None,
                operator: str | None = None) -> list[AuditEntry]:
        """Entries with ``from_ <= at < to`` (either end open), oldest first."""
        sql, args = "SELECT * FROM audit WHERE 1=1", list[object]()
        if from_ is not None:
            sql += " AND at >= ?"
            args.append(_iso(from_))
        if to is not None:
            sql += " AND at < ?"
            args.append(_iso(to))
        if action is not None:
            sql += " AND action = ?"
            args.append(AuditAction(action).value)
        if txn_id is not None:
            sql += " AND txn_id = ?"
            args.append(txn_id)
        if operator is not None:
            sql += " AND operator = ?"
            args.append(operator)
        rows = self._conn.execute(sql + " ORDER BY at, id", args).fetchall()
        return [AuditEntry(id=r["id"], at=datetime.fromisoformat(r["at"]),
                           operator=r["operator"], action=AuditAction(r["action"]),
                           txn_id=r["txn_id"], approver=r["approver"],
                           detail=json.loads(r["detail"])) for r in rows]

    # -- flags ----------------------------------------------------------------------------
    def flag(self, txn_id: int, operator: str | None, explanation: str) -> int:
        """Mark ``txn_id`` as a mistake with an explanation; the flag's id."""
        text = mask_text(explanation.strip())
        if not text:
            raise FlagError("a flag needs an explanation", cashier_zh="请填写说明",
                            cashier_en="Give an explanation")
        self._require_txn(txn_id)
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO flag (txn_id, at, operator, explanation) VALUES (?, ?, ?, ?)",
                (txn_id, _iso(self._clock()), operator, text))
            flag_id = int(cur.lastrowid or 0)
            self.append(AuditAction.FLAG, operator, txn_id=txn_id,
                        detail={"flag_id": flag_id, "explanation": text})
        return flag_id

    def link_follow_up(self, flag_id: int, follow_up_txn_id: int, *,
                       operator: str | None = None) -> Flag:
        """Link a flag to the transaction that put the mistake right (once)."""
        current = self._flag(flag_id)
        if current.follow_up_txn_id is not None:
            raise FlagError(f"flag {flag_id} is already followed up by txn "
                            f"{current.follow_up_txn_id}")
        if follow_up_txn_id == current.txn_id:
            raise FlagError("a transaction cannot be its own follow-up")
        self._require_txn(follow_up_txn_id)
        with self._tx():
            self._conn.execute("UPDATE flag SET follow_up_txn_id = ? WHERE id = ?",
                               (follow_up_txn_id, flag_id))
            self.append(AuditAction.FLAG, operator, txn_id=current.txn_id,
                        detail={"flag_id": flag_id, "follow_up_txn_id": follow_up_txn_id})
        return self._flag(flag_id)

    def flagged(self, *, open_only: bool = False) -> list[Flag]:
        """Every flag, oldest first (only those without a follow-up when asked)."""
        sql = "SELECT * FROM flag"
        if open_only:
            sql += " WHERE follow_up_txn_id IS NULL"
        return [_flag(r) for r in self._conn.execute(sql + " ORDER BY id")]

    def _flag(self, flag_id: int) -> Flag:
        row = self._conn.execute("SELECT * FROM flag WHERE id = ?", (flag_id,)).fetchone()
        if row is None:
            raise FlagError(f"no flag {flag_id}")
        return _flag(row)

    def _require_txn(self, txn_id: int) -> None:
        if self._conn.execute("SELECT 1 FROM txn WHERE id = ?", (txn_id,)).fetchone() is None:
            raise FlagError(f"no transaction {txn_id} in the journal",
                            cashier_zh="找不到该交易", cashier_en="No such transaction")

    @contextmanager
    def _tx(self) -> Iterator[None]:
        if self._conn.in_transaction:
            yield
            return
        with transaction(self._conn):
            yield


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def _flag(row: sqlite3.Row) -> Flag:
    return Flag(id=row["id"], txn_id=row["txn_id"], at=datetime.fromisoformat(row["at"]),
                operator=row["operator"], explanation=row["explanation"],
                follow_up_txn_id=row["follow_up_txn_id"])
