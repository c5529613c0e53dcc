"""The SQLite ledger: durable settings, group commit, restart reproduces the host's state."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.catalogue import card_by_name
from emulator.host import (
    AcquirerHost,
    BatchRow,
    LedgerError,
    MemoryLedgerStore,
    SqliteLedgerStore,
    TerminalRow,
    TransactionRow,
)
from emulator.host.ledger import response_fields, response_json
from emulator.simterminal import Approved
from iso8583.message import Message
from tests.emulator.host.harness import MID, TID, TMK, Lane, make_lane

DEBIT = card_by_name("cup-debit")
VISA = card_by_name("visa-credit")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLedgerStore]:
    ledger = SqliteLedgerStore(tmp_path / "ledger.db")
    yield ledger
    ledger.close()


def run_day(lane: Lane) -> list[Message]:
    """A mixed day: sales, a void, refunds, a reversal, declines. Returns every request sent."""
    sent: list[Message] = []

    def go(msg: Message) -> Approved | None:
        sent.append(msg)
        result = lane.exchange(msg)
        return result if isinstance(result, Approved) else None

    sale = go(lane.term.sale(DEBIT, 10_000, pin="123456"))
    visa = go(lane.term.sale(VISA, 5_000, pin=None))
    assert sale is not None
    assert visa is not None
    go(lane.term.refund(sale, 2_500))
    go(lane.term.refund(sale, 99_999))  # 64
    go(lane.term.void(visa))
    go(lane.term.sale(DEBIT, 1_051, pin="123456"))  # 51
    reversed_sale = lane.term.sale(DEBIT, 700, pin="123456")
    go(reversed_sale)
    go(lane.term.reversal(reversed_sale, "98"))
    go(lane.term.balance(DEBIT, pin="123456"))
    return sent


def test_sqlite_uses_wal_and_full_sync(store: SqliteLedgerStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_restart_from_sqlite_reproduces_state_and_answers(store: SqliteLedgerStore) -> None:
    lane = make_lane(store=store)
    sent = run_day(lane)
    answers = [lane.send(msg).reply for msg in sent]
    before = {t.key: t for t in lane.host.transactions()}
    available = lane.host.available(DEBIT)
    lane.restart()
    assert {t.key: t for t in lane.host.transactions()} == before
    assert lane.host.available(DEBIT) == available
    for msg, answer in zip(sent, answers, strict=True):
        outcome = lane.send(msg)
        assert outcome.reply == answer  # same stored answer, same keys, byte for byte
        assert outcome.records == ()
    # and the rules go on from the restored state
    sale = lane.host.by_rrn("000000000001")
    assert sale is not None
    assert sale.refunded == 2_500
    assert lane.host.available(DEBIT) == available


def test_restart_continues_rrns_and_batches(store: SqliteLedgerStore) -> None:
    lane = make_lane(store=store)
    first = lane.exchange(lane.term.sale(DEBIT, 1_000, pin="123456"))
    lane.exchange(lane.term.settlement())
    lane.restart()
    second = lane.exchange(lane.term.sale(DEBIT, 1_000, pin="123456"))
    assert isinstance(first, Approved)
    assert isinstance(second, Approved)
    assert second.rrn is not None
    assert first.rrn is not None
    assert int(second.rrn) > int(first.rrn)
    assert second.batch == "000002"
    assert [t.batch for t in lane.host.terminals()] == ["000002"]


def test_restart_from_sqlite_matches_memory_store(tmp_path: Path) -> None:
    sqlite_lane = make_lane(store=SqliteLedgerStore(tmp_path / "a.db"))
    memory_lane = make_lane(store=MemoryLedgerStore(secret=b"k" * 32))
    run_day(sqlite_lane)
    run_day(memory_lane)
    snap_a, snap_b = sqlite_lane.store.load(), memory_lane.store.load()
    strip = [(t.key, t.status, t.amount, t.refunded, t.response_code) for t in snap_a.transactions]
    assert strip == [(t.key, t.status, t.amount, t.refunded, t.response_code)
                     for t in snap_b.transactions]


def test_no_full_pan_anywhere_in_the_ledger_files(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    lane = make_lane(store=SqliteLedgerStore(path))
    run_day(lane)
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for card in (DEBIT, VISA):
        assert card.pan.encode() not in blobs
        assert bytes.fromhex(card.pan) not in blobs  # BCD as in a stored message
    rows = lane.store.load().transactions
    assert {r.pan_masked for r in rows if r.pan_masked} == {"622588******0019",
                                                             "476173******0010"}


def test_refunds_table_lists_refunds_against_their_original(store: SqliteLedgerStore) -> None:
    lane = make_lane(store=store)
    run_day(lane)
    db = sqlite3.connect(store.path)
    rows = db.execute("SELECT original_key, amount, status FROM refunds ORDER BY amount").fetchall()
    db.close()
    assert rows == [(f"{TID}/000001/000002/0200", 2_500, "approved"),
                    (f"{TID}/000001/000002/0200", 99_999, "declined")]


def test_one_commit_is_one_transaction(store: SqliteLedgerStore) -> None:
    good = TerminalRow("20000001", MID, TMK.hex())
    broken = BatchRow("20000001", "000001", True, "x", "y", None)
    object.__setattr__(broken, "host_totals", object())  # not storable: the commit must fail
    with pytest.raises(LedgerError):
        store.commit([good, broken])
    assert store.load().terminals == ()
    store.commit([good])
    assert store.load().terminals == (good,)


def test_commit_is_an_idempotent_upsert(store: SqliteLedgerStore) -> None:
    lane = make_lane(store=store)
    run_day(lane)
    records = [r for o in lane.outcomes for r in o.records]
    store.commit(records)  # replaying every record again changes nothing
    assert store.load().transactions == tuple(lane.host.transactions())


def test_secret_survives_reopen(tmp_path: Path) -> None:
    first = SqliteLedgerStore(tmp_path / "x.db")
    secret = first.load().secret
    first.close()
    again = SqliteLedgerStore(tmp_path / "x.db")
    assert again.load().secret == secret
    again.close()


def test_opening_drops_the_indexes_no_statement_reads(tmp_path: Path) -> None:
    """transactions_original and refunds_original (made by earlier versions) cost every
    booking an index insert and every commit their pages: an opening drops them."""
    path = tmp_path / "x.db"
    SqliteLedgerStore(path).close()
    db = sqlite3.connect(path)  # what an earlier version's ledger also held
    db.execute("CREATE INDEX transactions_original ON transactions (original)")
    db.execute("CREATE INDEX refunds_original ON refunds (original_key)")
    db.commit()
    db.close()
    SqliteLedgerStore(path).close()
    db = sqlite3.connect(path)
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert not indexes & {"transactions_original", "refunds_original"}


def test_a_booked_row_reads_back_as_booked(store: SqliteLedgerStore) -> None:
    """A row naming no original and no void goes in without those columns: NULL, as given."""
    sale = TransactionRow(TID, "000001", "000001", "0200", "sale", "f", "approved", "00",
                          "2026-11-23T10:30:00", "{}", amount=500, rrn="000000000001")
    refund = TransactionRow(TID, "000001", "000002", "0220", "refund", "g", "approved", "00",
                            "2026-11-23T10:30:00", "{}", amount=200, rrn="000000000002",
                            original="/".join(sale.key))
    voided = TransactionRow(TID, "000001", "000003", "0200", "sale", "h", "voided", "00",
                            "2026-11-23T10:30:00", "{}", voided_by="x/y/z/0200")
    with store.session() as s:
        for row in (sale, refund, voided):
            s.book(row)
    assert store.load().transactions == (sale, refund, voided)


def test_unopenable_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError):
        SqliteLedgerStore(tmp_path / "missing-dir" / "x.db")


def test_host_from_store_knows_provisioned_terminals(store: SqliteLedgerStore) -> None:
    host = AcquirerHost.from_store(store)
    store.commit([host.provision(TID, MID, TMK)])
    again = AcquirerHost.from_store(store)
    assert [t.tid for t in again.terminals()] == [TID]
    assert all(isinstance(t, TransactionRow) for t in store.load().transactions)


@given(st.text(max_size=4), st.dictionaries(
    st.integers(2, 128), st.one_of(st.text(max_size=12), st.binary(max_size=12)), max_size=12))
def test_a_stored_answer_is_the_json_text_json_dumps_writes(
        mti: str, fields: dict[int, str | bytes]) -> None:
    # response_json writes the text itself (for speed); it must stay byte for byte what
    # json.dumps wrote before, and read back as the same answer
    _assert_written_as_json_dumps_writes(mti, fields)


def _assert_written_as_json_dumps_writes(mti: str, fields: dict[int, str | bytes]) -> None:
    text = response_json(mti, fields)
    assert text == json.dumps({"mti": mti, "fields": {
        str(k): ({"hex": v.hex()} if isinstance(v, bytes) else v) for k, v in fields.items()}},
        separators=(",", ":"))
    assert response_fields(text) == (mti, fields)


_ANSWER_TEXT = st.text(st.characters(min_codepoint=0x1F, max_codepoint=0x80), max_size=12)


@given(st.sampled_from(["0210", "0230", "0\"1"]), st.dictionaries(
    st.integers(2, 130), st.one_of(_ANSWER_TEXT, st.binary(max_size=12)), max_size=12))
def test_a_stored_answer_of_plain_text_is_the_json_text_json_dumps_writes(
        mti: str, fields: dict[int, str | bytes]) -> None:
    # mostly ASCII that JSON quotes as it is (the template's road: a few shapes, each
    # seen many times), with a control character, a quote, a backslash or DEL at times
    _assert_written_as_json_dumps_writes(mti, fields)


def test_opening_a_new_ledger_waits_for_another_process_creating_it(tmp_path: Path) -> None:
    """Another connection holds the new file's write lock (as a second worker of ``serve
    --workers 2`` opening the same fresh ledger): turning the file to WAL waits for it
    instead of failing with "database is locked" (SQLite does not call the busy handler
    there)."""
    import threading
    import time

    from emulator.host import SqliteLedgerStore

    path = tmp_path / "ledger.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other opener, mid-way through its set-up
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    began = time.monotonic()
    try:
        store = SqliteLedgerStore(path)
    finally:
        release.join()
        other.close()
    assert time.monotonic() - began >= 0.25  # it waited for the lock
    with store.session() as session:
        assert session.terminal("99999999") is None  # the schema is there
    store.close()
