"""Stateful property test: random days of sales, voids, refunds, reversals, resends and
settlements against the host and a simple model, checking DESIGN.md section 5 after
every step (refunded <= amount per original, nothing booked twice, voided not refundable,
refunded not voidable, host totals = terminal totals = model totals, balances agree).

The machine runs over each ledger backend: memory, SQLite and PostgreSQL (a private
cluster, a schema per example; skipped with an install hint without PostgreSQL). The
default run keeps the durable backends' example counts small; ``-m slow`` runs long days.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from emulator.catalogue import TestCard as Card
from emulator.catalogue import card_by_name
from emulator.host.codes import forced_code
from emulator.host.ledger import LedgerStore, MemoryLedgerStore, SqliteLedgerStore, key_text
from emulator.simterminal import Approved
from iso8583.message import Message
from iso8583.settlement import SettlementTotals
from tests.emulator.host.harness import TID, make_lane

CARDS: dict[str, tuple[Card, str | None]] = {
    "cup-debit": (card_by_name("cup-debit"), "123456"),
    "cup-credit": (card_by_name("cup-credit"), "111111"),
    "visa-credit": (card_by_name("visa-credit"), None),
}
_ROUND = st.integers(1, 2_000).map(lambda n: n * 100)
#: mostly round amounts, a magic amount about one time in five
AMOUNTS = st.one_of(_ROUND, _ROUND, _ROUND, _ROUND, st.sampled_from([1_205, 1_251, 1_296, 1_213]))


@dataclass
class ModelSale:
    approved: Approved
    card: Card
    batch: str
    status: str = "approved"  # approved, voided, reversed
    refunded: int = 0


@dataclass
class Sent:
    request: Message
    reply: bytes
    kind: str
    sale: ModelSale | None = None  # sale itself, or the original of a void/refund
    approved: Approved | None = None
    undone: bool = False  # a refund the host reversed


class HostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.lane = make_lane(store=self.new_store())
        self.sales: list[ModelSale] = []
        self.sent: list[Sent] = []
        self.spent: dict[str, int] = {}
        self.settled: set[str] = set()
        self.reversed: dict[tuple[str, str, str], tuple[str, bytes]] = {}

    def new_store(self) -> LedgerStore:
        return MemoryLedgerStore(secret=b"k" * 32)

    # --- helpers -----------------------------------------------------------------
    def _send(self, request: Message, kind: str, sale: ModelSale | None = None) -> Sent:
        outcome = self.lane.send(request)
        assert outcome.reply is not None
        frame = self.lane.term.dialect.unpack_payload(outcome.reply)
        result = self.lane.term.check_response(request, frame.message, body=frame.body)
        sent = Sent(request, outcome.reply, kind, sale,
                    result if isinstance(result, Approved) else None)
        self.sent.append(sent)
        return sent

    def _code(self, sent: Sent) -> str | None:
        return self.lane.term.dialect.unpack_payload(sent.reply).message.response_code

    def _available(self, card: Card) -> int:
        return card.opening_balance - self.spent.get(card.pan, 0)

    # --- rules -----------------------------------------------------------------------
    @rule(name=st.sampled_from(sorted(CARDS)), amount=AMOUNTS)
    def sale(self, name: str, amount: int) -> None:
        card, pin = CARDS[name]
        sent = self._send(self.lane.term.sale(card, amount, pin=pin), "sale")
        expected = forced_code(amount) or ("51" if amount > self._available(card) else "00")
        assert self._code(sent) == expected
        if sent.approved is not None:
            model = ModelSale(sent.approved, card, self.lane.term.batch)
            sent.sale = model
            self.sales.append(model)
            self.spent[card.pan] = self.spent.get(card.pan, 0) + amount

    def _pick_sale(self, pick: int, recent: bool) -> ModelSale:
        """A sale of the open batch when asked and there is one, else any sale."""
        pool = [s for s in self.sales if s.batch == self.lane.term.batch] if recent else []
        pool = pool or self.sales
        return pool[pick % len(pool)]

    @precondition(lambda self: bool(self.sales))
    @rule(pick=st.integers(0, 10**6), recent=st.booleans())
    def void(self, pick: int, recent: bool) -> None:
        sale = self._pick_sale(pick, recent)
        sent = self._send(self.lane.term.void(sale.approved), "void", sale)
        if sale.status == "reversed":
            expected = "25"
        elif sale.status == "voided" or sale.refunded > 0 or sale.batch != self.lane.term.batch:
            expected = "12"  # voided, refunded, or not this batch (settled batches are behind)
        else:
            expected = "00"
        assert self._code(sent) == expected
        if expected == "00":
            sale.status = "voided"
            self.spent[sale.card.pan] -= sale.approved.amount or 0

    @precondition(lambda self: bool(self.sales))
    @rule(pick=st.integers(0, 10**6), recent=st.booleans(), hundreds=st.integers(1, 2_100))
    def refund(self, pick: int, recent: bool, hundreds: int) -> None:
        sale = self._pick_sale(pick, recent)
        amount = hundreds * 100
        sent = self._send(self.lane.term.refund(sale.approved, amount), "refund", sale)
        if sale.status == "reversed":
            expected = "25"
        elif sale.status == "voided":
            expected = "12"
        elif amount > (sale.approved.amount or 0) - sale.refunded:
            expected = "64"
        else:
            expected = "00"
        assert self._code(sent) == expected
        if expected == "00":
            sale.refunded += amount
            self.spent[sale.card.pan] -= amount

    @precondition(lambda self: any(s.kind in ("sale", "void", "refund") for s in self.sent))
    @rule(pick=st.integers(0, 10**6), reason=st.sampled_from(["98", "96", "A0", "06"]))
    def reverse(self, pick: int, reason: str) -> None:
        targets = [s for s in self.sent if s.kind in ("sale", "void", "refund")]
        target = targets[pick % len(targets)]
        request = target.request
        key = (request.mti, str(request[11]), str(request[60]))
        reversal = self.lane.term.reversal(request, reason)
        outcome = self.lane.send(reversal)
        assert outcome.reply is not None
        frame = self.lane.term.dialect.unpack_payload(outcome.reply)
        code = frame.message.response_code
        self.lane.term.check_response(reversal, frame.message, body=frame.body)
        if key in self.reversed:
            first_reason, first_reply = self.reversed[key]
            assert outcome.records == ()  # a second reversal never books anything
            if reason == first_reason:
                assert outcome.reply == first_reply  # the same reversal again: same answer
            else:
                assert code == "94"  # another message reusing the reversal's STAN
            return
        self.reversed[key] = (reason, outcome.reply)
        assert code == self._expect_reversal(target)

    def _expect_reversal(self, target: Sent) -> str:
        sale = target.sale
        if target.approved is None or sale is None:
            return "00"  # declined original: nothing to undo
        amount = target.approved.amount or 0
        if target.kind == "sale":
            if sale.status == "reversed":
                return "00"
            if sale.batch in self.settled:
                return "12"
            if sale.refunded > 0:
                return "12"
            if sale.status != "voided":  # a voided sale's money is back already
                self.spent[sale.card.pan] -= amount
            sale.status = "reversed"
            return "00"
        if target.approved.batch in self.settled:
            return "12"
        if target.kind == "void":
            if sale.status == "voided":
                sale.status = "approved"
                self.spent[sale.card.pan] += amount
            return "00"
        sale.refunded -= amount  # a refund
        self.spent[sale.card.pan] += amount
        target.undone = True
        return "00"

    @rule(name=st.sampled_from(sorted(CARDS)), amount=AMOUNTS)
    def original_after_its_reversal(self, name: str, amount: int) -> None:
        """A timed-out sale is reversed; the sale itself reaches the host only afterwards."""
        card, pin = CARDS[name]
        request = self.lane.term.sale(card, amount, pin=pin)
        reversal = self.lane.term.reversal(request, "98")
        outcome = self.lane.send(reversal)
        assert outcome.reply is not None
        frame = self.lane.term.dialect.unpack_payload(outcome.reply)
        assert frame.message.response_code == "00"
        self.lane.term.check_response(reversal, frame.message, body=frame.body)
        self.reversed[(request.mti, str(request[11]), str(request[60]))] = ("98", outcome.reply)
        late = self._send(request, "sale")
        assert self._code(late) == "12"  # never booked: the terminal counts it as reversed

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(0, 10**6))
    def resend(self, pick: int) -> None:
        old = self.sent[pick % len(self.sent)]
        outcome = self.lane.send(old.request)
        assert outcome.records == ()
        assert outcome.reply == old.reply

    @precondition(lambda self: any(s.request.mti == "0200" and
                                   str(s.request[60])[2:8] == self.lane.term.batch
                                   for s in self.sent))
    @rule(pick=st.integers(0, 10**6), name=st.sampled_from(sorted(CARDS)))
    def reuse_stan(self, pick: int, name: str) -> None:
        same_batch = [s for s in self.sent if s.request.mti == "0200"
                      and str(s.request[60])[2:8] == self.lane.term.batch]
        old = same_batch[pick % len(same_batch)]
        card, pin = CARDS[name]
        other = self.lane.term.sale(card, 777_700, pin=pin)
        other[11] = old.request[11]
        outcome = self.lane.send(self.lane.term.remac(other))
        assert outcome.records == ()
        assert outcome.response is not None
        assert outcome.response.response_code == "94"

    @rule(gate=st.integers(0, 4))
    def settle(self, gate: int) -> None:
        if gate:  # settle about one time in five when this rule is drawn: batches fill up
            return
        batch = self.lane.term.batch
        sent = self._send(self.lane.term.settlement(), "settlement")
        assert sent.approved is not None
        assert sent.approved.balanced
        self.settled.add(batch)
        assert self.lane.term.batch != batch

    @rule()
    def restart(self) -> None:
        self.lane.restart()

    # --- invariants ------------------------------------------------------------------
    @invariant()
    def refunds_never_exceed_the_original(self) -> None:
        rows = self.lane.host.transactions()
        refunds: dict[str, int] = {}
        for row in rows:
            if row.kind == "refund" and row.status == "approved" and row.original:
                refunds[row.original] = refunds.get(row.original, 0) + (row.amount or 0)
        for row in rows:
            if row.kind != "sale":
                continue
            assert 0 <= row.refunded <= (row.amount or 0)
            assert row.refunded == refunds.get(key_text(row.key), 0)  # booked once, no more
            if row.status == "voided":
                assert row.refunded == 0  # a voided sale was never refunded, and vice versa

    @invariant()
    def host_agrees_with_the_model(self) -> None:
        for sale in self.sales:
            row = self.lane.host.by_rrn(str(sale.approved.rrn))
            assert row is not None
            assert row.status == sale.status
            assert row.refunded == sale.refunded
        for card, _ in CARDS.values():
            assert self.lane.host.available(card) == self._available(card)

    @invariant()
    def totals_agree(self) -> None:
        batch = self.lane.term.batch
        model = SettlementTotals()
        for sale in self.sales:
            if sale.batch == batch and sale.status == "approved":
                model = model.add(sale.card.scheme, sale.approved.amount or 0, credit=False)
        for sent in self.sent:
            if sent.kind == "refund" and sent.approved is not None and sent.sale is not None \
                    and sent.approved.batch == batch and not sent.undone:
                model = model.add(sent.sale.card.scheme, sent.approved.amount or 0, credit=True)
        assert self.lane.host.batch_totals(TID, batch) == model
        assert self.lane.term.totals() == model


def machine_over(kind: str, request: pytest.FixtureRequest) -> type[HostMachine]:
    """The machine over a fresh ledger of ``kind`` for every example (restarts reload it)."""
    if kind == "memory":
        return HostMachine
    if kind == "sqlite":
        return SqliteHostMachine
    dsn: str = request.getfixturevalue("pg_dsn")
    import psycopg
    from psycopg import sql

    from emulator.host.pgledger import PostgresLedgerStore

    class PostgresHostMachine(HostMachine):
        def new_store(self) -> LedgerStore:
            self.schema = f"machine{next(_schemas)}"
            return PostgresLedgerStore(dsn, schema=self.schema)

        def teardown(self) -> None:
            self.lane.store.close()
            with psycopg.connect(dsn, autocommit=True) as db:  # keep the catalogue small
                db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema)))

    return PostgresHostMachine


class SqliteHostMachine(HostMachine):
    """The same machine over the SQLite ledger: every restart reloads from the file."""

    def new_store(self) -> LedgerStore:
        self.tmp = Path(tempfile.mkdtemp(prefix="host-machine-"))
        return SqliteLedgerStore(self.tmp / "ledger.db")

    def teardown(self) -> None:
        self.lane.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


_schemas = itertools.count(1)
#: examples per backend in the default run (memory is cheap; the durable stores pay per commit)
#: and in the long one (-m slow)
QUICK = {"memory": 60, "sqlite": 15, "postgresql": 10}
LONG = {"memory": 400, "sqlite": 150, "postgresql": 100}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgresql"])
def test_money_rules_hold_over_random_days(kind: str, request: pytest.FixtureRequest) -> None:
    run_state_machine_as_test(machine_over(kind, request), settings=settings(
        max_examples=QUICK[kind], stateful_step_count=30, deadline=None))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgresql"])
def test_money_rules_hold_over_long_random_days(kind: str,
                                                request: pytest.FixtureRequest) -> None:
    run_state_machine_as_test(machine_over(kind, request), settings=settings(
        max_examples=LONG[kind], stateful_step_count=80, deadline=None))
