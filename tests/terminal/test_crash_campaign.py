"""Crash campaign: ``pos-terminal`` killed with SIGKILL at random points against a real
``pos-emulator serve``; after every kill and ``recover`` the journal and the host's ledger
agree (see :mod:`tests.terminal.crash_rig` for how and what is checked).

The CI run makes a few dozen kills (24 with the CUP dialect, 12 with iso87); ``-m slow``
makes 220 and 100. The counts are printed
(``-s`` or ``-rP`` shows them) and attached as a report section. ``POS_CRASH_SEED=N``
replays a seed (timing of the external kills aside).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.terminal.crash_rig import check_invariants, run_campaign

SEED = int(os.environ.get("POS_CRASH_SEED", "20261201"))


def _campaign(tmp_path: Path, request: pytest.FixtureRequest, kills: int,
              dialect: str) -> None:
    stats, seconds = run_campaign(tmp_path, seed=SEED, kills=kills, lanes=2, dialect=dialect)
    summary = f"[{dialect}] " + stats.summary(SEED, 2, seconds)
    print("\n" + summary)
    request.node.add_report_section("call", f"crash campaign ({dialect})", summary)
    assert not stats.violations, summary + "\n" + "\n".join(stats.violations[:10])
    assert stats.total_kills >= kills, summary
    assert stats.checks >= stats.total_kills - stats.kills_by_op["recover"], summary
    assert stats.kills["external"] > 0, summary
    if kills >= 20:  # long enough for every named flow point to come up (a shuffled deck)
        for point in ("in_begin", "after_begin", "after_send", "after_answer", "after_record"):
            assert stats.kills[f"named:{point}"] > 0, summary


# CUP: refunds are advices (0220), resent and never reversed; iso87: refunds are online
# (0200) and reversed, reversals carry F90 and a STAN of their own.
@pytest.mark.parametrize(("dialect", "kills"), [("cup", 24), ("iso87", 12)])
def test_crash_campaign(tmp_path: Path, request: pytest.FixtureRequest, dialect: str,
                        kills: int) -> None:
    _campaign(tmp_path, request, kills, dialect)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("dialect", "kills"), [("cup", 220), ("iso87", 100)])
def test_crash_campaign_long(tmp_path: Path, request: pytest.FixtureRequest, dialect: str,
                             kills: int) -> None:
    _campaign(tmp_path, request, kills, dialect)


# --- the checker itself catches what it is there to catch --------------------------------
def _rows(table: str, rows: list[dict[str, object]]) -> list[sqlite3.Row]:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    columns = sorted({k for r in rows for k in r})
    db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
    for r in rows:
        db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                   f"({', '.join('?' for _ in columns)})", [r.get(c) for c in columns])
    return list(db.execute(f"SELECT * FROM {table}"))


def _sale(**extra: object) -> dict[str, object]:
    return {"id": 1, "kind": "sale", "mti": "0200", "stan": "000002", "batch": "000001",
            "amount": 1000, "status": "approved", "rrn": "000000000001", "original_id": None,
            "original_rrn": None, **extra}


def _host_sale(**extra: object) -> dict[str, object]:
    return {"tid": "90000001", "kind": "sale", "mti": "0200", "stan": "000002",
            "batch": "000001", "amount": 1000, "status": "approved", "rrn": "000000000001",
            "original": None, "refunded": 0, **extra}


def test_checker_passes_an_agreeing_pair() -> None:
    found = check_invariants(_rows("txn", [_sale()]), [], _rows("t", [_host_sale()]))
    assert found.problems == []
    assert found.comparisons > 5


@pytest.mark.parametrize(("journal", "host", "words"), [
    ([_sale(status="uncertain")], [_host_sale()], "still uncertain"),
    ([_sale(status="reversed")], [_host_sale()], "host approved, journal reversed"),
    ([_sale(rrn="000000000009")], [_host_sale()], "RRN"),
    ([], [_host_sale()], "does not know"),
    ([_sale()], [], "has no row for"),
    ([_sale(), {**_sale(id=2, stan="000003", mti="0220", kind="refund", amount=600,
                        rrn="000000000002", original_id=1, original_rrn="000000000001")},
      {**_sale(id=3, stan="000004", mti="0220", kind="refund", amount=600,
               rrn="000000000003", original_id=1, original_rrn="000000000001")}],
     [_host_sale(refunded=1200),
      _host_sale(stan="000003", mti="0220", kind="refund", amount=600, rrn="000000000002",
                 original="90000001/000001/000002/0200"),
      _host_sale(stan="000004", mti="0220", kind="refund", amount=600, rrn="000000000003",
                 original="90000001/000001/000002/0200")],
     "refunded 1200 of sale"),
])
def test_checker_finds(journal: list[dict[str, object]], host: list[dict[str, object]],
                       words: str) -> None:
    found = check_invariants(_rows("txn", journal) if journal else [], [],
                             _rows("t", host) if host else [])
    assert any(words in p for p in found.problems), found.problems
