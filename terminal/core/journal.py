"""The terminal's journal: every request that can move money, written before it is sent.

Order of writes (the same as the acquirer host's: write, then send):

1. :meth:`Journal.begin` stores the request (sealed) with status ``pending``
   and, in the same SQLite transaction, the follow-up it may need: an *armed*
   reversal (sale, void, and refunds where the dialect reverses them) or an
   *armed* advice resend (refund advices that are never reversed).
2. The request is sent.
3. :meth:`Journal.answered` records the answer and cancels the armed
   follow-up, again in one transaction; :meth:`Journal.no_answer` makes it
   *due* instead, and :meth:`Journal.card_declined` records an approving
   answer the chip card then refused (AAC) with the reversal due.

After a crash anywhere in between, :meth:`Journal.open_items` lists what is
still armed for a pending request or due, and the flows resolve each before
any new transaction. Nothing approved is lost; nothing is sent twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from iso8583.crypto.signon import WorkingKeys
from terminal.core.crashpoints import crash_point
from terminal.core.db import migrate, open_db, transaction
from terminal.core.errors import JournalError
from terminal.core.records import TXN_COLUMNS, TxnKind, TxnRecord, TxnStatus
from terminal.core.vault import Vault

Clock = Callable[[], datetime]
DB_FILE = "journal.db"
STAN_MAX = 999_999
BATCH_MAX = 999_999


@dataclass(frozen=True)
class NewTxn:
    """What is known of a financial request before it is sent."""

    kind: TxnKind
    mti: str
    stan: str
    batch: str
    amount: int
    currency: str
    pan_masked: str
    pan_hash: str
    scheme: str | None = None
    entry_mode: str | None = None
    card_label: str | None = None
    aid: str | None = None
    original_id: int | None = None
    original_rrn: str | None = None
    original_batch: str | None = None
    original_stan: str | None = None
    original_date: str | None = None
    original_amount: int | None = None
    reason: str | None = None
    note: str | None = None
    operator: str | None = None
    training: bool = False
    cryptogram_type: str | None = None
    cryptogram: str | None = None


@dataclass(frozen=True)
class OpenItem:
    """A reversal or advice resend the terminal still owes the host."""

    id: int
    txn_id: int
    action: str  # "reversal" | "advice"
    state: str  # "armed" (request's outcome unknown) | "due"
    reason: str | None
    stan: str | None
    message: bytes  # armed: the original request body; due reversal: the reversal body
    attempts: int
    last_error: str | None


class Journal:
    """The journal of one data directory (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, vault: Vault, clock: Clock,
                 path: Path | None = None) -> None:
        self.conn = conn
        self.vault = vault
        self.clock = clock
        self.path = path

    @classmethod
    def open(cls, data_dir: Path, clock: Clock = datetime.now) -> Journal:
        data_dir.mkdir(parents=True, exist_ok=True)
        vault = Vault.open(data_dir)
        path = data_dir / DB_FILE
        conn = open_db(path)
        try:
            migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"cannot bring the journal schema up to date: {exc}") from None
        return cls(conn, vault, clock, path)

    def close(self) -> None:
        self.conn.close()

    def _now(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    # --- meta: settings, counters, keys --------------------------------------------
    def get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        with transaction(self.conn):
            self._put(key, value)

    def _put(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def put_many(self, values: Mapping[str, str]) -> None:
        with transaction(self.conn):
            for key, value in values.items():
                self._put(key, value)

    def put_secret(self, key: str, value: bytes) -> None:
        self.put(key, self.vault.seal(value, context=key.encode()).hex())

    def get_secret(self, key: str) -> bytes | None:
        sealed = self.get(key)
        return None if sealed is None else self.vault.open_sealed(bytes.fromhex(sealed),
                                                                  context=key.encode())

    def take_stan(self) -> str:
        """The next STAN (F11), persisted before it is used: a STAN is never reused."""
        with transaction(self.conn):
            current = int(self.get("next_stan") or "1")
            following = 1 if current >= STAN_MAX else current + 1
            self._put("next_stan", str(following))
        return f"{current:06d}"

    def peek_stan(self) -> str:
        return f"{int(self.get('next_stan') or '1'):06d}"

    @property
    def batch(self) -> str:
        return f"{int(self.get('batch') or '1'):06d}"

    def set_batch(self, batch: str) -> None:
        self.put("batch", str(int(batch)))

    def close_batch(self, settlement_id: int) -> str:
        """Mark the open batch settled and open the next one; returns the new batch."""
        with transaction(self.conn):
            current = int(self.conn.execute("SELECT batch FROM settlement WHERE id = ?",
                                            (settlement_id,)).fetchone()["batch"])
            following = 1 if current >= BATCH_MAX else current + 1
            self._put("batch", str(following))
            self.conn.execute("UPDATE settlement SET status = 'settled' WHERE id = ?",
                              (settlement_id,))
        return f"{following:06d}"

    def save_keys(self, keys: WorkingKeys, day: date) -> None:
        blob = json.dumps({"pik": keys.pik.hex(), "mak": keys.mak.hex(),
                           "tdk": keys.tdk.hex() if keys.tdk else None}).encode()
        with transaction(self.conn):
            self._put("working_keys", self.vault.seal(blob, context=b"working_keys").hex())
            self._put("signed_on_date", day.isoformat())
            self._put("signed_on_at", self._now())

    def load_keys(self) -> WorkingKeys | None:
        sealed = self.get("working_keys")
        if sealed is None:
            return None
        data = json.loads(self.vault.open_sealed(bytes.fromhex(sealed), context=b"working_keys"))
        tdk = data.get("tdk")
        return WorkingKeys(bytes.fromhex(data["pik"]), bytes.fromhex(data["mak"]),
                           bytes.fromhex(tdk) if tdk else None)

    def forget_keys(self) -> None:
        with transaction(self.conn):
            self.conn.execute("DELETE FROM meta WHERE key IN ('working_keys', 'signed_on_date')")

    # --- requests ----------------------------------------------------------------
    def begin(self, txn: NewTxn, request: bytes, *, follow_up: str | None,
              reason: str | None = None) -> int:
        """Write a request before it is sent, with its armed follow-up; returns the row id.

        ``follow_up`` is ``"reversal"``, ``"advice"`` or None (a balance inquiry).
        """
        with transaction(self.conn):
            return self._insert(txn, request, follow_up=follow_up, reason=reason)

    def _insert(self, txn: NewTxn, request: bytes, *, follow_up: str | None,
                reason: str | None) -> int:
        """The rows of :meth:`begin`, inside the caller's transaction."""
        context = f"{txn.batch}:{txn.stan}:{txn.mti}".encode()
        sealed = self.vault.seal(request, context=context)
        now = self._now()
        try:
            cur = self.conn.execute(
                "INSERT INTO txn (kind, mti, stan, batch, amount, currency, pan_masked, "
                "pan_hash, scheme, entry_mode, card_label, aid, status, created_at, "
                "original_id, original_rrn, original_batch, original_stan, original_date, "
                "original_amount, reason, note, operator, training, request, "
                "cryptogram_type, cryptogram) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (txn.kind.value, txn.mti, txn.stan, txn.batch, txn.amount, txn.currency,
                 txn.pan_masked, txn.pan_hash, txn.scheme, txn.entry_mode, txn.card_label,
                 txn.aid, TxnStatus.PENDING.value, now, txn.original_id, txn.original_rrn,
                 txn.original_batch, txn.original_stan, txn.original_date,
                 txn.original_amount, txn.reason, txn.note, txn.operator,
                 int(txn.training), sealed, txn.cryptogram_type, txn.cryptogram))
            crash_point("in_begin")
        except sqlite3.IntegrityError as exc:
            raise JournalError(f"STAN {txn.stan} of batch {txn.batch} is already in the "
                               f"journal ({exc})") from None
        txn_id = int(cur.lastrowid or 0)
        if follow_up is not None:
            self.conn.execute(
                "INSERT INTO pending (txn_id, action, state, reason, message, created_at) "
                "VALUES (?, ?, 'armed', ?, ?, ?)",
                (txn_id, follow_up, reason, self.vault.seal(request, context=b"pending"), now))
        return txn_id

    def begin_new(self, make: Callable[[str], tuple[NewTxn, bytes]], *,
                  follow_up: str | None, reason: str | None = None) -> int:
        """Take the next STAN and write the request ``make(stan)`` builds, in one commit.

        Same rows as :meth:`take_stan` + :meth:`begin`, one fsync fewer on the path
        from card to answer. ``make`` must be quick and pure (it runs inside the write).
        """
        with transaction(self.conn):
            current = int(self.get("next_stan") or "1")
            self._put("next_stan", str(1 if current >= STAN_MAX else current + 1))
            txn, request = make(f"{current:06d}")
            return self._insert(txn, request, follow_up=follow_up, reason=reason)

    def request_of(self, txn_id: int) -> bytes:
        """The request body as it was sent (opened from its sealed copy)."""
        row = self.conn.execute("SELECT batch, stan, mti, request FROM txn WHERE id = ?",
                                (txn_id,)).fetchone()
        if row is None:
            raise JournalError(f"no journal row {txn_id}")
        context = f"{row['batch']}:{row['stan']}:{row['mti']}".encode()
        return self.vault.open_sealed(bytes(row["request"]), context=context)

    def answered(self, txn_id: int, *, status: TxnStatus, code: str | None, rrn: str | None,
                 auth_code: str | None, host_date: str | None, host_time: str | None,
                 cryptogram_type: str | None = None, cryptogram: str | None = None) -> None:
        """Record the host's answer and stand the follow-up down, in one transaction.

        ``cryptogram_type``/``cryptogram``: the card's last cryptogram when it
        completed the transaction (TC or AAC of the second GENERATE AC).
        """
        with transaction(self.conn):
            self._record_answer(txn_id, status, code, rrn, auth_code, host_date, host_time,
                                cryptogram_type, cryptogram)
            self.conn.execute(
                "UPDATE pending SET state = 'cancelled', done_at = ?, answer_code = ? "
                "WHERE txn_id = ? AND state IN ('armed', 'due')",
                (self._now(), code, txn_id))

    def _record_answer(self, txn_id: int, status: TxnStatus, code: str | None,
                       rrn: str | None, auth_code: str | None, host_date: str | None,
                       host_time: str | None, cryptogram_type: str | None,
                       cryptogram: str | None) -> None:
        """The answer's fields on the journal row (inside the caller's transaction)."""
        self.conn.execute(
            "UPDATE txn SET status = ?, response_code = ?, rrn = ?, auth_code = ?, "
            "host_date = ?, host_time = ?, answered_at = ?, "
            "cryptogram_type = COALESCE(?, cryptogram_type), "
            "cryptogram = COALESCE(?, cryptogram) WHERE id = ?",
            (status.value, code, rrn, auth_code, host_date, host_time, self._now(),
             cryptogram_type, cryptogram, txn_id))

    def no_answer(self, txn_id: int, *, reason: str, error: str,
                  reversal: bytes | None = None, reversal_stan: str | None = None,
                  cryptogram_type: str | None = None, cryptogram: str | None = None) -> None:
        """The request has no valid answer: its follow-up becomes due (reversal or advice)."""
        with transaction(self.conn):
            self.conn.execute("UPDATE txn SET status = ? WHERE id = ? AND status = ?",
                              (TxnStatus.UNCERTAIN.value, txn_id, TxnStatus.PENDING.value))
            if cryptogram_type is not None:  # the card's AAC after no answer (8A = Z3)
                self.conn.execute("UPDATE txn SET cryptogram_type = ?, cryptogram = ? "
                                  "WHERE id = ?", (cryptogram_type, cryptogram, txn_id))
            if reversal is not None:
                self.conn.execute(
                    "UPDATE pending SET state = 'due', reason = ?, last_error = ?, message = ?, "
                    "stan = ? WHERE txn_id = ? AND state = 'armed'",
                    (reason, error, self.vault.seal(reversal, context=b"pending"),
                     reversal_stan, txn_id))
            else:
                self.conn.execute(
                    "UPDATE pending SET state = 'due', reason = ?, last_error = ? "
                    "WHERE txn_id = ? AND state = 'armed'", (reason, error, txn_id))

    def card_declined(self, txn_id: int, *, code: str | None, rrn: str | None,
                      auth_code: str | None, host_date: str | None, host_time: str | None,
                      reason: str, error: str, reversal: bytes, reversal_stan: str | None,
                      cryptogram_type: str | None = None, cryptogram: str | None = None
                      ) -> None:
        """The host approved but the card did not (AAC, or it left the reader): record the
        answer and make the armed reversal due with ``reversal``, in one transaction."""
        with transaction(self.conn):
            self._record_answer(txn_id, TxnStatus.UNCERTAIN, code, rrn, auth_code, host_date,
                                host_time, cryptogram_type, cryptogram)
            self.conn.execute(
                "UPDATE pending SET state = 'due', reason = ?, last_error = ?, message = ?, "
                "stan = ? WHERE txn_id = ? AND state = 'armed'",
                (reason, error, self.vault.seal(reversal, context=b"pending"), reversal_stan,
                 txn_id))

    def after_approval_failure(self, txn_id: int, *, reason: str, error: str,
                               reversal: bytes, reversal_stan: str | None) -> None:
        """An approved request must be undone (failure after approval): queue its reversal."""
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO pending (txn_id, action, state, reason, message, created_at, "
                "last_error, stan) VALUES (?, 'reversal', 'due', ?, ?, ?, ?, ?)",
                (txn_id, reason, self.vault.seal(reversal, context=b"pending"), self._now(),
                 error, reversal_stan))
            self.conn.execute("UPDATE txn SET status = ? WHERE id = ?",
                              (TxnStatus.UNCERTAIN.value, txn_id))

    def open_items(self) -> list[OpenItem]:
        """Every follow-up still owed: due ones, and armed ones whose request has no answer."""
        rows = self.conn.execute(
            "SELECT p.* FROM pending p JOIN txn t ON t.id = p.txn_id "
            "WHERE p.state = 'due' OR (p.state = 'armed' AND t.status = 'pending') "
            "ORDER BY p.id").fetchall()
        return [OpenItem(r["id"], r["txn_id"], r["action"], r["state"], r["reason"], r["stan"],
                         self.vault.open_sealed(bytes(r["message"]), context=b"pending"),
                         r["attempts"], r["last_error"]) for r in rows]

    def open_count(self) -> int:
        return len(self.conn.execute(
            "SELECT p.id FROM pending p JOIN txn t ON t.id = p.txn_id "
            "WHERE p.state = 'due' OR (p.state = 'armed' AND t.status = 'pending')").fetchall())

    def attempt_failed(self, item_id: int, error: str) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE pending SET attempts = attempts + 1, last_error = ? "
                              "WHERE id = ?", (error, item_id))

    def resolved(self, item: OpenItem, *, code: str | None, txn_status: TxnStatus,
                 rrn: str | None = None, auth_code: str | None = None,
                 host_date: str | None = None, host_time: str | None = None) -> None:
        """A follow-up got its answer: close it and set what it means for its request."""
        now = self._now()
        with transaction(self.conn):
            self.conn.execute("UPDATE pending SET state = 'done', done_at = ?, answer_code = ?, "
                              "attempts = attempts + 1 WHERE id = ?", (now, code, item.id))
            if item.action == "advice":
                self.conn.execute(
                    "UPDATE txn SET status = ?, response_code = ?, rrn = ?, auth_code = ?, "
                    "host_date = ?, host_time = ?, answered_at = ? WHERE id = ?",
                    (txn_status.value, code, rrn, auth_code, host_date, host_time, now,
                     item.txn_id))
            else:
                self.conn.execute("UPDATE txn SET status = ?, answered_at = "
                                  "COALESCE(answered_at, ?) WHERE id = ?",
                                  (txn_status.value, now, item.txn_id))

    # --- queries -----------------------------------------------------------------
    def _records(self, where: str, args: tuple[object, ...] = ()) -> list[TxnRecord]:
        rows = self.conn.execute(f"SELECT {TXN_COLUMNS} FROM txn WHERE {where}",  # noqa: S608
                                 args).fetchall()
        return [TxnRecord.from_row(r) for r in rows]

    def record(self, txn_id: int) -> TxnRecord:
        found = self._records("id = ?", (txn_id,))
        if not found:
            raise JournalError(f"no journal row {txn_id}")
        return found[0]

    def records(self, where: str = "1=1", args: tuple[object, ...] = ()) -> list[TxnRecord]:
        """Rows matching a fixed SQL condition (callers pass constants, values as args)."""
        return self._records(where + " ORDER BY id", args)

    def by_voucher(self, voucher: str, batch: str | None = None) -> list[TxnRecord]:
        """Rows whose voucher (STAN) is ``voucher``, newest batch first."""
        stan = f"{int(voucher):06d}"
        if batch is not None:
            return self._records("stan = ? AND batch = ? ORDER BY id DESC", (stan, batch))
        return self._records("stan = ? ORDER BY batch DESC, id DESC", (stan,))

    def by_rrn(self, rrn: str) -> list[TxnRecord]:
        return self._records("rrn = ? ORDER BY id DESC", (rrn,))

    def children(self, original_id: int) -> list[TxnRecord]:
        """Voids and refunds naming ``original_id``, oldest first."""
        return self._records("original_id = ? ORDER BY id", (original_id,))

    def sales_for_card(self, pan_hash: str) -> list[TxnRecord]:
        return self._records("pan_hash = ? AND kind = 'sale' AND status = 'approved' "
                             "ORDER BY id DESC", (pan_hash,))

    def batch_records(self, batch: str) -> list[TxnRecord]:
        return self._records("batch = ? ORDER BY id", (batch,))

    def since(self, when: datetime) -> list[TxnRecord]:
        return self._records("created_at >= ? ORDER BY id", (when.isoformat(),))

    def between(self, start: datetime, end: datetime) -> list[TxnRecord]:
        return self._records("created_at >= ? AND created_at < ? ORDER BY id",
                             (start.isoformat(), end.isoformat()))

    def today(self) -> list[TxnRecord]:
        start = datetime.combine(self.clock().date(), datetime.min.time())
        return self.between(start, start + timedelta(days=1))

    def last_host_contact(self) -> datetime | None:
        """When the host last answered this terminal (an answer recorded, or sign-on)."""
        row = self.conn.execute("SELECT max(answered_at) FROM txn").fetchone()
        times = [t for t in (row[0] if row else None, self.get("signed_on_at")) if t]
        return max(datetime.fromisoformat(t) for t in times) if times else None

    def last(self) -> TxnRecord | None:
        found = self._records("1=1 ORDER BY id DESC LIMIT 1")
        return found[0] if found else None

    # --- settlement --------------------------------------------------------------
    def new_settlement(self, batch: str, totals: Mapping[str, object]) -> int:
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO settlement (batch, created_at, totals, status) "
                "VALUES (?, ?, ?, 'open')", (batch, self._now(), json.dumps(totals)))
        return int(cur.lastrowid or 0)

    def settlement_result(self, settlement_id: int, *, balanced: bool | None,
                          uploaded: bool) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE settlement SET balanced = ?, uploaded = ? WHERE id = ?",
                              (None if balanced is None else int(balanced), int(uploaded),
                               settlement_id))

    def settlement(self, settlement_id: int) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM settlement WHERE id = ?",
                                (settlement_id,)).fetchone()
        if row is None:
            raise JournalError(f"no settlement {settlement_id}")
        return row  # type: ignore[no-any-return]

    def open_settlements(self) -> list[sqlite3.Row]:
        """Settlements written but not finished (no answer yet, or a crash)."""
        return list(self.conn.execute("SELECT * FROM settlement WHERE status = 'open' "
                                      "ORDER BY id"))

    def settlement_refused(self, settlement_id: int, code: str) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE settlement SET status = ? WHERE id = ?",
                              (f"refused {code}", settlement_id))

    def settlements(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM settlement ORDER BY id"))

    def settled_batches(self) -> dict[str, bool | None]:
        """Settled batch -> whether the host agreed with the totals."""
        out: dict[str, bool | None] = {}
        for row in self.conn.execute("SELECT batch, balanced FROM settlement "
                                     "WHERE status = 'settled' ORDER BY id"):
            out[row["batch"]] = None if row["balanced"] is None else bool(row["balanced"])
        return out

    def iter_all(self) -> Iterator[TxnRecord]:
        yield from self._records("1=1 ORDER BY id")
