"""Terminals added, removed or re-keyed with ``pos-emulator terminal`` while a host runs.

The host runs on its own connection (as ``serve`` does), over a SQLite file or a
PostgreSQL database; the CLI writes the same ledger from its own connection, and
the very next request sees the change (the host reads the terminal per request).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.host import AcquirerHost, LedgerStore, SqliteLedgerStore
from emulator.host.cli import ledger_main, terminal_main
from emulator.simterminal import Approved, SimTerminal
from iso8583.errors import KeyCheckError
from tests.emulator.host.harness import MID, NOW, TID, TMK, Lane, make_lane

NEW_TID = "20000002"
DEBIT = card_by_name("cup-debit")
NEW_TMK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


_schemas = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def lane(request: pytest.FixtureRequest, tmp_path: Path) -> Lane:
    if request.param == "sqlite":
        return make_lane(store=SqliteLedgerStore(tmp_path / "ledger.db"))
    from emulator.host.pgledger import PostgresLedgerStore
    dsn: str = request.getfixturevalue("pg_dsn")
    return make_lane(store=PostgresLedgerStore(dsn, schema=f"live{next(_schemas)}"))


def spec(store: LedgerStore) -> str:
    """The --ledger value naming ``store`` (a PostgreSQL schema through the URL's options)."""
    if isinstance(store, SqliteLedgerStore):
        return str(store.path)
    dsn, schema = store.dsn, store.schema  # type: ignore[attr-defined]
    return f"{dsn}&options=-csearch_path%3D{schema}"


def cli(lane: Lane, *words: str) -> None:
    assert terminal_main([*words, "--ledger", spec(lane.store)]) == 0


def terminal(tid: str, tmk: bytes, stan: int = 1) -> SimTerminal:
    return SimTerminal("cup", tid, MID, tmk, lambda: NOW, rng=random.Random(3), stan=stan)


def sign_on(lane: Lane, term: SimTerminal) -> str:
    answer = lane.answer(term.sign_on_request())
    if answer.response_code == "00":
        term.accept_sign_on(answer)
    return str(answer.response_code)


def test_a_terminal_added_while_the_host_runs_is_served_at_once(lane: Lane) -> None:
    newcomer = terminal(NEW_TID, NEW_TMK)
    assert lane.send(newcomer.sign_on_request()).close  # 03: not provisioned yet
    cli(lane, "add", "--tid", NEW_TID, "--mid", MID, "--tmk", NEW_TMK.hex())
    assert sign_on(lane, newcomer) == "00"
    sale = lane.send(newcomer.sale(DEBIT, 1_000, pin="123456"))
    assert sale.response_code == "00"
    lane.store.commit(sale.records)
    assert lane.host.terminal(NEW_TID) is not None


def test_a_removed_terminal_is_refused_at_once_and_stays_removed(lane: Lane) -> None:
    cli(lane, "remove", "--tid", TID)
    outcome = lane.send(lane.term.sale(DEBIT, 1_000, pin="123456"))
    assert outcome.close
    assert outcome.response_code == "03"
    assert lane.host.terminal(TID) is None
    # a restarted host does not bring it back either
    again = AcquirerHost.from_store(lane.store)
    assert again.terminal(TID) is None
    assert terminal_main(["list", "--json", "--ledger", spec(lane.store)]) == 0
    assert ledger_main(["--json", "--ledger", spec(lane.store)]) == 0  # the ledger views


def test_a_re_keyed_terminal_must_sign_on_with_its_new_tmk(lane: Lane) -> None:
    assert isinstance(lane.exchange(lane.term.sale(DEBIT, 1_000, pin="123456")), Approved)
    cli(lane, "rekey", "--tid", TID, "--tmk", NEW_TMK.hex())
    # the old working keys died with the old TMK: sign on again
    assert lane.send(lane.term.sale(DEBIT, 1_000, pin="123456")).response_code == "77"
    stale = terminal(TID, TMK)
    answer = lane.answer(stale.sign_on_request())
    with pytest.raises(KeyCheckError):  # keys wrapped under the new TMK do not unwrap
        stale.accept_sign_on(answer)
    fresh = terminal(TID, NEW_TMK, stan=500)
    assert sign_on(lane, fresh) == "00"
    assert lane.send(fresh.sale(DEBIT, 2_000, pin="123456")).response_code == "00"


def test_a_host_write_of_the_old_generation_cannot_undo_a_re_key(lane: Lane) -> None:
    row = lane.host.terminal(TID)
    assert row is not None
    cli(lane, "rekey", "--tid", TID, "--tmk", NEW_TMK.hex())
    lane.store.commit([row])  # a sign-on under the old TMK, committed late
    stored = lane.store.terminal(TID)
    assert stored is not None
    assert stored.tmk == NEW_TMK.hex().upper()


def test_a_second_host_on_the_ledger_sees_a_sign_on_at_once(lane: Lane) -> None:
    """Working keys live in the ledger: another host (process) serves the signed-on terminal."""
    other = AcquirerHost.from_store(lane.store)
    sale = lane.term.sale(DEBIT, 1_000, pin="123456")
    outcome = other.handle(lane.term.dialect.payload(sale, tpdu=bytes.fromhex("6000010000")), NOW)
    assert outcome.response_code == "00"
    assert lane.send(sale).reply == outcome.reply  # the stored answer, from the first host
