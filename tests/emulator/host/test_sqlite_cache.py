"""SQLite sessions serve terminals, batches, balances, the RRN counter, whether a batch
has tombstones and transaction rows by RRN from memory between sessions: only while no
other connection committed, and never what a rolled-back session wrote."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from emulator.host.ledger import (
    BalanceRow,
    BatchRow,
    SqliteLedgerStore,
    TerminalRow,
    TombstoneRow,
    TransactionRow,
    provisioned,
)

TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _read(store: SqliteLedgerStore, tid: str = "10000001", pan_hash: str = "p" * 32
          ) -> tuple[TerminalRow | None, BatchRow | None, int]:
    with store.session() as s:
        return s.terminal(tid), s.batch(tid, "000001"), s.spent(pan_hash)


def test_a_commit_of_another_connection_is_seen_at_once(tmp_path: Path) -> None:
    a = SqliteLedgerStore(tmp_path / "l.db")
    b = SqliteLedgerStore(tmp_path / "l.db")  # another process, as far as SQLite knows
    row = provisioned(None, "10000001", "123456789012345", TMK)
    a.commit([row, BalanceRow("p" * 32, 100)])
    assert _read(a) == (row, None, 100)  # now kept by a
    signed = replace(row, mak="00" * 8, signed_on=True)
    b.commit([signed, BalanceRow("p" * 32, 250), BatchRow("10000001", "000001", True)])
    assert _read(a) == (signed, BatchRow("10000001", "000001", True), 250)
    b.commit([replace(signed, removed=True, generation=2)])
    terminal, _, _ = _read(a)
    assert terminal is not None
    assert terminal.removed


def test_a_rolled_back_session_leaves_nothing_behind(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "l.db")
    store.commit([BalanceRow("p" * 32, 100)])
    assert _read(store)[2] == 100

    def failing_group() -> None:
        with store.session() as s:
            s.write([BalanceRow("p" * 32, 900)])
            assert s.spent("p" * 32) == 900  # the session sees its own write
            raise RuntimeError("the group fails")

    with pytest.raises(RuntimeError):
        failing_group()
    assert _read(store)[2] == 100


def test_a_terminal_write_that_does_not_land_is_not_believed(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "l.db")
    newer = replace(provisioned(None, "10000001", "123456789012345", TMK), generation=5)
    store.commit([newer])
    assert _read(store)[0] == newer
    store.commit([replace(newer, generation=4, mak="11" * 8)])  # older: the upsert keeps 5
    assert _read(store)[0] == newer


STONE = TombstoneRow("10000001", "000001", "000007", "000000", 100)


def test_a_tombstone_and_rrns_of_another_connection_are_seen(tmp_path: Path) -> None:
    a = SqliteLedgerStore(tmp_path / "l.db")
    b = SqliteLedgerStore(tmp_path / "l.db")
    with a.session() as s:
        assert s.tombstone("10000001", "000001", "000007") is None  # now kept: none there
        assert s.next_rrn() == "000000000001"
    b.commit([STONE])
    with b.session() as s:
        assert s.next_rrn() == "000000000002"
    with a.session() as s:
        assert s.tombstone("10000001", "000001", "000007") == STONE
        assert s.next_rrn() == "000000000003"


def test_this_connections_tombstones_and_rrns_are_kept_as_committed(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "l.db")
    with store.session() as s:
        assert s.tombstone("10000001", "000001", "000007") is None
        s.write([STONE])
        assert s.tombstone("10000001", "000001", "000007") == STONE  # its own write
        assert s.tombstone("10000001", "000001", "000008") is None
    with store.session() as s:
        assert s.tombstone("10000001", "000001", "000007") == STONE
        assert s.next_rrn() == "000000000001"

    def failing_group() -> None:
        with store.session() as s:
            assert s.next_rrn() == "000000000002"
            s.write([replace(STONE, batch="000002")])
            raise RuntimeError("the group fails")

    with pytest.raises(RuntimeError):
        failing_group()
    with store.session() as s:
        assert s.next_rrn() == "000000000002"  # nothing of the rolled-back group was kept
        assert s.tombstone("10000001", "000002", "000007") is None


SALE = TransactionRow("10000001", "000001", "000001", "0200", "sale", "f", "approved", "00",
                      "2026-11-23T10:30:00", "{}", amount=500, rrn="000000000001")


def test_a_booked_sale_is_read_by_rrn_as_last_written(tmp_path: Path) -> None:
    a = SqliteLedgerStore(tmp_path / "l.db")
    b = SqliteLedgerStore(tmp_path / "l.db")
    with a.session() as s:
        s.book(SALE)
    with a.session() as s:
        assert s.original_by_rrn(SALE.rrn or "") == SALE  # kept as booked
        s.write([replace(SALE, refunded=100)])
    with a.session() as s:
        assert s.transaction_by_rrn(SALE.rrn or "") == replace(SALE, refunded=100)
    b.commit([replace(SALE, refunded=300)])  # another connection: a's rows are dropped
    with a.session() as s:
        assert s.original_by_rrn(SALE.rrn or "") == replace(SALE, refunded=300)

    def failing_group() -> None:
        with a.session() as s:
            s.write([replace(SALE, refunded=500)])
            assert s.original_by_rrn(SALE.rrn or "") == replace(SALE, refunded=500)
            raise RuntimeError("the group fails")

    with pytest.raises(RuntimeError):
        failing_group()
    with a.session() as s:
        assert s.original_by_rrn(SALE.rrn or "") == replace(SALE, refunded=300)


def test_a_row_written_under_another_rrn_is_not_found_by_the_old_one(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "l.db")
    with store.session() as s:
        s.book(SALE)
        s.write([replace(SALE, rrn="000000000009")])  # the same key: its RRN moved
        assert s.original_by_rrn("000000000001") is None
        assert s.original_by_rrn("000000000009") == replace(SALE, rrn="000000000009")
