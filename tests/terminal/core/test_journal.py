"""The journal: counters, migrations, the write-before-send state machine, no PAN at rest."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from terminal.core.db import migrate, open_db, schema_version
from terminal.core.errors import JournalError
from terminal.core.journal import DB_FILE, Journal, NewTxn
from terminal.core.ports import Purpose
from terminal.core.records import RefundReason, TxnKind, TxnStatus
from terminal.core.schema import MIGRATIONS
from tests.terminal.core.harness import make_rig

NOW = datetime(2026, 11, 23, 10, 30)
PAN = "6225880000000019"


def clock() -> datetime:
    return NOW


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "j", clock)


def new_txn(journal: Journal, stan: str = "000001", *, kind: TxnKind = TxnKind.SALE,
            mti: str = "0200", amount: int = 100_00, batch: str = "000001") -> NewTxn:
    return NewTxn(kind=kind, mti=mti, stan=stan, batch=batch, amount=amount, currency="156",
                  pan_masked="622588******0019", pan_hash=journal.vault.pan_hash(PAN),
                  scheme="CUP")


def pending_rows(journal: Journal) -> list[tuple[str, str]]:
    return [(r["action"], r["state"]) for r in
            journal.conn.execute("SELECT action, state FROM pending ORDER BY id")]


# --- counters ---------------------------------------------------------------------------

def test_stans_count_up_and_survive_a_reopen(tmp_path: Path) -> None:
    first = Journal.open(tmp_path, clock)
    assert first.peek_stan() == "000001"
    taken = [first.take_stan() for _ in range(3)]
    assert taken == ["000001", "000002", "000003"]
    first.close()
    again = Journal.open(tmp_path, clock)
    assert again.peek_stan() == "000004"
    assert again.take_stan() == "000004"
    again.close()


def test_a_stan_is_never_reused_across_reopens(tmp_path: Path) -> None:
    seen: set[str] = set()
    for _ in range(5):
        journal = Journal.open(tmp_path, clock)
        for _ in range(7):
            stan = journal.take_stan()
            assert stan not in seen
            seen.add(stan)
        journal.close()
    assert len(seen) == 35


def test_stan_wraps_from_999999_to_000001(journal: Journal) -> None:
    journal.put("next_stan", "999998")
    assert [journal.take_stan() for _ in range(3)] == ["999998", "999999", "000001"]
    assert journal.peek_stan() == "000002"


def test_batch_starts_at_1_and_closing_advances_and_wraps(journal: Journal) -> None:
    assert journal.batch == "000001"
    sid = journal.new_settlement(journal.batch, {"f48": "x"})
    assert journal.close_batch(sid) == "000002"
    assert journal.batch == "000002"
    assert journal.settled_batches() == {"000001": None}
    journal.set_batch("999999")
    sid = journal.new_settlement(journal.batch, {})
    journal.settlement_result(sid, balanced=False, uploaded=True)
    assert journal.close_batch(sid) == "000001"
    assert journal.settled_batches()["999999"] is False


def test_closing_advances_from_the_batch_settled_not_the_one_open_now(journal: Journal) -> None:
    sid = journal.new_settlement("000001", {})
    journal.set_batch("000002")  # a sign-on during the settlement adopted the host's batch
    assert journal.close_batch(sid) == "000002"
    assert journal.batch == "000002"


# --- migrations ---------------------------------------------------------------------------

def test_migrations_are_idempotent(tmp_path: Path) -> None:
    newest = max(v for v, _ in MIGRATIONS)
    Journal.open(tmp_path, clock).close()
    conn = open_db(tmp_path / DB_FILE)
    tables = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    assert schema_version(conn) == newest
    assert migrate(conn) == newest
    assert migrate(conn) == newest
    assert conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == tables
    conn.close()
    journal = Journal.open(tmp_path, clock)  # a third open migrates nothing either
    assert schema_version(journal.conn) == newest
    journal.close()


def test_migrations_apply_in_order_from_any_version(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "step.db")
    assert migrate(conn, MIGRATIONS[:1]) == 1
    assert {"txn", "pending", "settlement", "meta"} <= {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert migrate(conn) == max(v for v, _ in MIGRATIONS)
    assert conn.execute("SELECT count(*) FROM operator").fetchone()[0] == 0
    conn.close()


def test_a_failed_migration_leaves_the_version_alone(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "bad.db")
    migrate(conn, MIGRATIONS[:1])
    with pytest.raises(sqlite3.Error):
        migrate(conn, [*MIGRATIONS[:1], (2, "CREATE TABLE x (a); CREATE TABLE x (a)")])
    assert schema_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'x'").fetchone() is None
    conn.close()


def test_a_journal_newer_than_the_program_is_refused(tmp_path: Path) -> None:
    Journal.open(tmp_path, clock).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        Journal.open(tmp_path, clock)


def test_the_journal_is_wal_with_full_sync(journal: Journal) -> None:
    assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# --- the write-before-send state machine -------------------------------------------------

def test_begin_writes_the_request_and_arms_its_reversal(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal), b"request-body", follow_up="reversal")
    record = journal.record(txn_id)
    assert record.status is TxnStatus.PENDING
    assert journal.request_of(txn_id) == b"request-body"
    (item,) = journal.open_items()
    assert (item.txn_id, item.action, item.state, item.message) == \
        (txn_id, "reversal", "armed", b"request-body")
    assert journal.open_count() == 1


def test_an_answer_stands_the_follow_up_down(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal), b"req", follow_up="reversal")
    journal.answered(txn_id, status=TxnStatus.APPROVED, code="00", rrn="000000000001",
                     auth_code="000001", host_date="1123", host_time="103001")
    record = journal.record(txn_id)
    assert (record.status, record.response_code, record.rrn, record.host_date) == \
        (TxnStatus.APPROVED, "00", "000000000001", "1123")
    assert record.answered_at == NOW
    assert journal.open_items() == []
    assert pending_rows(journal) == [("reversal", "cancelled")]


def test_no_answer_makes_the_reversal_due_and_resolving_reverses(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal), b"req", follow_up="reversal")
    journal.no_answer(txn_id, reason="98", error="timeout", reversal=b"rev", reversal_stan=None)
    assert journal.record(txn_id).status is TxnStatus.UNCERTAIN
    (item,) = journal.open_items()
    assert (item.state, item.reason, item.message, item.last_error) == \
        ("due", "98", b"rev", "timeout")
    journal.attempt_failed(item.id, "still no answer")
    (item,) = journal.open_items()
    assert (item.attempts, item.last_error) == (1, "still no answer")
    journal.resolved(item, code="00", txn_status=TxnStatus.REVERSED)
    assert journal.record(txn_id).status is TxnStatus.REVERSED
    assert journal.open_items() == []
    assert pending_rows(journal) == [("reversal", "done")]
    row = journal.conn.execute("SELECT attempts, answer_code FROM pending").fetchone()
    assert tuple(row) == (2, "00")


def test_a_reversal_of_its_own_stan_keeps_it(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal), b"req", follow_up="reversal")
    journal.no_answer(txn_id, reason="A0", error="mac", reversal=b"rev", reversal_stan="000009")
    (item,) = journal.open_items()
    assert (item.stan, item.reason) == ("000009", "A0")


def test_an_advice_is_resent_as_it_was_and_its_answer_recorded(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal, kind=TxnKind.REFUND, mti="0220"), b"advice",
                           follow_up="advice")
    journal.no_answer(txn_id, reason="98", error="timeout")
    (item,) = journal.open_items()
    assert (item.action, item.state, item.message) == ("advice", "due", b"advice")
    journal.resolved(item, code="00", txn_status=TxnStatus.APPROVED, rrn="000000000002",
                     auth_code="000002", host_date="1123", host_time="103100")
    record = journal.record(txn_id)
    assert (record.status, record.rrn, record.response_code) == \
        (TxnStatus.APPROVED, "000000000002", "00")
    assert journal.open_items() == []


def test_no_follow_up_means_nothing_owed(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal, kind=TxnKind.BALANCE), b"inq", follow_up=None)
    assert journal.open_items() == []
    journal.no_answer(txn_id, reason="98", error="timeout")
    assert journal.record(txn_id).status is TxnStatus.UNCERTAIN
    assert journal.open_items() == []


def test_no_answer_after_an_answer_changes_nothing(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal), b"req", follow_up="reversal")
    journal.answered(txn_id, status=TxnStatus.APPROVED, code="00", rrn=None, auth_code=None,
                     host_date=None, host_time=None)
    journal.no_answer(txn_id, reason="98", error="late", reversal=b"rev", reversal_stan=None)
    assert journal.record(txn_id).status is TxnStatus.APPROVED
    assert journal.open_items() == []


def test_a_failure_after_approval_queues_a_reversal(journal: Journal) -> None:
    txn_id = journal.begin(new_txn(journal), b"req", follow_up="reversal")
    journal.answered(txn_id, status=TxnStatus.APPROVED, code="00", rrn=None, auth_code=None,
                     host_date=None, host_time=None)
    journal.after_approval_failure(txn_id, reason="96", error="printer", reversal=b"rev",
                                   reversal_stan=None)
    assert journal.record(txn_id).status is TxnStatus.UNCERTAIN
    (item,) = journal.open_items()
    assert (item.state, item.reason, item.message) == ("due", "96", b"rev")


def test_the_same_stan_twice_is_refused_and_writes_nothing(journal: Journal) -> None:
    journal.begin(new_txn(journal), b"one", follow_up="reversal")
    with pytest.raises(JournalError, match="already in the journal"):
        journal.begin(new_txn(journal), b"two", follow_up="reversal")
    assert len(journal.records()) == 1
    assert len(pending_rows(journal)) == 1
    # another MTI or another batch may reuse the number
    journal.begin(new_txn(journal, mti="0220", kind=TxnKind.REFUND), b"x", follow_up="advice")
    journal.begin(new_txn(journal, batch="000002"), b"y", follow_up="reversal")
    assert len(journal.records()) == 3


def test_open_items_come_back_after_a_reopen(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, clock)
    first = journal.begin(new_txn(journal), b"armed", follow_up="reversal")
    second = journal.begin(new_txn(journal, "000002"), b"req", follow_up="reversal")
    journal.no_answer(second, reason="98", error="t", reversal=b"due", reversal_stan=None)
    journal.close()
    again = Journal.open(tmp_path, clock)
    assert [(i.txn_id, i.state, i.message) for i in again.open_items()] == \
        [(first, "armed", b"armed"), (second, "due", b"due")]
    again.close()


def test_sealed_copies_are_bound_to_their_row(journal: Journal) -> None:
    one = journal.begin(new_txn(journal, "000001"), b"one", follow_up=None)
    two = journal.begin(new_txn(journal, "000002"), b"two", follow_up=None)
    journal.conn.execute("UPDATE txn SET request = (SELECT request FROM txn WHERE id = ?) "
                         "WHERE id = ?", (one, two))
    with pytest.raises(JournalError, match="integrity"):
        journal.request_of(two)


def test_keys_are_sealed_and_forgotten(journal: Journal) -> None:
    from iso8583.crypto.signon import WorkingKeys
    keys = WorkingKeys(bytes(range(16)), bytes(range(16, 32)), None)
    journal.save_keys(keys, NOW.date())
    assert journal.load_keys() == keys
    assert bytes(range(16)).hex() not in (journal.get("working_keys") or "")
    assert journal.get("signed_on_date") == "2026-11-23"
    journal.forget_keys()
    assert journal.load_keys() is None
    assert journal.get("signed_on_date") is None


def test_queries(journal: Journal) -> None:
    sale = journal.begin(new_txn(journal, "000005"), b"s", follow_up="reversal")
    journal.answered(sale, status=TxnStatus.APPROVED, code="00", rrn="000000000042",
                     auth_code="000042", host_date="1123", host_time="103000")
    other = NewTxn(**{**new_txn(journal, "000006").__dict__, "pan_hash": "someone-else"})
    journal.begin(other, b"o", follow_up="reversal")
    assert [r.id for r in journal.by_voucher("5")] == [sale]
    assert [r.id for r in journal.by_rrn("000000000042")] == [sale]
    assert [r.id for r in journal.sales_for_card(journal.vault.pan_hash(PAN))] == [sale]
    assert journal.children(sale) == []
    assert len(journal.today()) == 2
    last = journal.last()
    assert last is not None
    assert last.stan == "000006"


# --- no PAN at rest ------------------------------------------------------------------------

TEST_PANS = {"cup-debit": "6225880000000019", "visa-credit": "4761739001010010",
             "cup-nopin": "6225880000000050"}


def _forms(pan: str) -> list[bytes]:
    """A PAN as ASCII, UTF-16, and BCD-packed as it travels in F2."""
    return [pan.encode(), pan.encode("utf-16-le"), bytes.fromhex(pan),
            bytes.fromhex(pan).hex().upper().encode()]


def test_no_full_pan_anywhere_in_the_journal_files(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    till = rig.till
    for name, pan in TEST_PANS.items():
        sale = till.sale(100_00, rig.card(name, Purpose.SALE, 100_00))
        assert sale.approved
        # control: the request as sent holds the PAN in one of the forms searched for
        assert any(form in till.journal.request_of(sale.record.id) for form in _forms(pan))
        quote = till.quote_refund(sale.record, rig.card(name, Purpose.REFUND), 10_00,
                                  RefundReason.DAMAGED)
        assert till.refund(quote).approved
    rig.link.faults.append("drop_after")
    assert till.sale(7_00, rig.card("cup-debit", Purpose.SALE, 7_00)).status \
        is TxnStatus.REVERSED
    rig.link.faults.append("drop_after")
    late = till.sale(8_00, rig.card("visa-credit", Purpose.SALE, 8_00))
    assert late.status is TxnStatus.REVERSED
    voidable = till.sale(9_00, rig.card("cup-nopin", Purpose.SALE, 9_00))
    assert till.void(till.quote_void(voidable.record)).approved
    rig.link.faults.append("drop_after")  # a refund advice resent
    quote = till.quote_refund(till.find_by_voucher(sale.record.voucher),
                              rig.card("cup-nopin", Purpose.REFUND), 1_00, RefundReason.OTHER,
                              "note")
    assert till.refund(quote).approved
    files = [p for p in rig.data_dir.iterdir() if p.name.startswith(DB_FILE)]
    assert (rig.data_dir / f"{DB_FILE}-wal").exists()
    blob = b"".join(p.read_bytes() for p in files)
    assert len(blob) > 4096
    for pan in TEST_PANS.values():
        for form in _forms(pan):
            assert form not in blob, f"a form of {pan[:6]}... is in the journal files"
    till.close()
    blob = b"".join(p.read_bytes() for p in rig.data_dir.iterdir()
                    if p.name.startswith(DB_FILE))
    for pan in TEST_PANS.values():
        for form in _forms(pan):
            assert form not in blob
