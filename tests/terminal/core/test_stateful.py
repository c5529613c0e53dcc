"""Stateful property test of the terminal core against the host's real rules, in memory.

Random days of sales (several cards, magic amounts), refunds (partial, full, over;
found by voucher, by card or by RRN + date), voids, lost answers (before and after
booking), bad MACs, a host that forgets the terminal's MAK (A0), host outages,
power cuts at every crash point followed by restart + recover, and settlements.
After EVERY step DESIGN.md section 5 is checked against the host's ledger and the
journal (:func:`tests.terminal.core.harness.check_money_rules`); refusals are checked
to have moved nothing; a settlement's totals must be the host's.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from iso8583.crypto.signon import WorkingKeys
from terminal.core import rules as money_rules
from terminal.core.errors import (
    HostLinkError,
    OriginalNotFoundError,
    PendingError,
    RuleError,
    TerminalError,
)
from terminal.core.ports import Purpose
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.till import Original, SettleOutcome, Till
from tests.terminal.core.harness import (
    TID,
    Crash,
    Snapshot,
    check_money_rules,
    crash_points,
    make_rig,
    snapshot,
)

CARDS = ["cup-debit", "cup-credit", "visa-credit", "cup-nopin", "mastercard"]
_ROUND = st.integers(1, 3_000).map(lambda n: n * 100)
#: mostly plain amounts, a magic amount (forced decline) about one time in five
AMOUNTS = st.one_of(_ROUND, _ROUND, st.integers(1, 300_00).filter(lambda a: a % 100 == 0),
                    st.integers(1, 99).map(lambda n: n * 100 + 7),
                    st.sampled_from([12_51, 3_05, 9_96, 4_98, 20_12, 7_55]))
CRASH_POINTS = ["in_begin", "after_begin", "after_send", "after_answer", "after_record",
                "in_resolve", "after_resolve_send"]
FAULTS = ["drop_before", "drop_after", "bad_mac"]


def _same_txns(before: Snapshot, after: Snapshot) -> bool:
    return before.host == after.host and before.txns == after.txns


class TillMachine(RuleBasedStateMachine):
    """One terminal and its host; every step ends with the money rules checked."""

    dialect = "cup"

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self._tmp = Path(tempfile.mkdtemp(prefix="till-stateful-"))
        self._stack.callback(shutil.rmtree, self._tmp, ignore_errors=True)
        self.plan = self._stack.enter_context(crash_points())
        self.rig = make_rig(self._tmp, self.dialect)
        self.crashes = 0

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.rig.till.journal.close()
        self._stack.close()

    # --- helpers ------------------------------------------------------------------------
    @property
    def till(self) -> Till:
        """The rig's current till (a restart replaces it)."""
        return self.rig.till

    def _after_crash(self) -> None:
        """The power came back: a new process over the same data directory, then recover."""
        self.crashes += 1
        while True:
            try:
                self.rig.restart()
                self.rig.till.recover()
            except Crash:
                continue
            except TerminalError:
                pass  # the host may be unreachable: the items stay owed
            return

    def _guard(self, action: str, call: object) -> object:
        assert callable(call)
        try:
            return call()
        except Crash:
            self._after_crash()
        except (HostLinkError, PendingError):
            pass  # the host did not answer: nothing more to check here
        except RuleError as exc:
            raise AssertionError(f"{action}: unexpected refusal {exc.message}") from exc
        except TerminalError:
            pass  # sign-on refused/garbled, device: the step just fails
        return None

    def _sales(self) -> list[TxnRecord]:
        return [r for r in self.till.journal.records() if r.kind is TxnKind.SALE]

    def _pan_name(self, record: TxnRecord) -> str:
        for name in CARDS:
            card = self.rig.card(name, Purpose.REFUND, 0)
            if self.till.journal.vault.pan_hash(card.card.pan) == record.pan_hash:
                return name
        raise AssertionError("sale of an unknown card")

    # --- rules --------------------------------------------------------------------------
    @rule(card=st.sampled_from(CARDS), amount=AMOUNTS)
    def sale(self, card: str, amount: int) -> None:
        read = self.rig.card(card, Purpose.SALE, amount)
        self._guard("sale", lambda: self.till.sale(amount, read))

    @rule(data=st.data(), how=st.sampled_from(["voucher", "card", "rrn"]),
          size=st.sampled_from(["partial", "full", "over", "zero"]))
    def refund(self, data: st.DataObject, how: str, size: str) -> None:
        sales = self._sales()
        if not sales:
            return
        sale = data.draw(st.sampled_from(sales))
        name = self._pan_name(sale)
        card = self.rig.card(name, Purpose.REFUND, 0)
        original: Original
        try:
            if how == "voucher":
                original = self.till.find_by_voucher(sale.voucher)
            elif how == "card":
                listed = dict((s.id, s) for s, _ in self.till.refundable_sales(card))
                children = self.till.journal.children(sale.id)
                refundable = (sale.approved and not money_rules.is_voided(children)
                              and money_rules.refundable_of(sale, children).refundable > 0)
                assert (sale.id in listed) == refundable
                if not refundable:
                    return
                original = listed[sale.id]
            else:
                if sale.rrn is None or sale.host_date is None:
                    return
                original = self.till.find_by_rrn(sale.rrn, sale.host_date)
        except OriginalNotFoundError as exc:
            raise AssertionError(f"journaled sale not found: {exc.message}") from exc
        assert isinstance(original, TxnRecord)
        assert original.id == sale.id
        children = self.till.journal.children(sale.id)
        left = money_rules.refundable_of(sale, children).refundable
        amount = {"partial": max(1, left // 3), "full": left, "over": left + 1,
                  "zero": 0}[size]
        expect_ok = (sale.approved and not money_rules.is_voided(children) and 0 < amount <= left
                     and self.rig.clock() - sale.created_at
                     <= timedelta(days=self.till.settings.refund_age_days))
        before = snapshot(self.rig)
        try:
            quote = self.till.quote_refund(original, card, amount, RefundReason.DAMAGED)
        except RuleError:
            assert not expect_ok, f"refund {amount} of {left} refused"
            assert snapshot(self.rig) == before  # a refusal moves nothing
            return
        assert expect_ok, f"refund {amount} of {left} ({sale.status}) was quoted"
        assert quote.refundable == left
        self._guard("refund", lambda: self.till.refund(quote))

    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        sales = self._sales()
        if not sales:
            return
        sale = data.draw(st.sampled_from(sales))
        children = self.till.journal.children(sale.id)
        live = (TxnStatus.APPROVED, TxnStatus.PENDING, TxnStatus.UNCERTAIN)
        expect_ok = (sale.approved and not money_rules.is_voided(children)
                     and not any(c.kind is TxnKind.REFUND and c.status in live for c in children)
                     and sale.batch == self.till.journal.batch)
        before = snapshot(self.rig)
        try:
            quote = self.till.quote_void(sale)
        except RuleError:
            assert not expect_ok, "void refused"
            assert snapshot(self.rig) == before
            return
        assert expect_ok, f"void of a {sale.status} sale was quoted"
        self._guard("void", lambda: self.till.void(quote))

    @rule(fault=st.sampled_from(FAULTS), count=st.integers(1, 4))
    def fault(self, fault: str, count: int) -> None:
        """The next exchange(s) lose their answer or get a garbled one."""
        self.rig.link.faults.extend([fault] * count)

    @rule(point=st.sampled_from(CRASH_POINTS), nth=st.integers(1, 2))
    def arm_crash(self, point: str, nth: int) -> None:
        self.plan.arm(point, nth)

    @rule(card=st.sampled_from(CARDS), amount=AMOUNTS)
    def host_down(self, card: str, amount: int) -> None:
        read = self.rig.card(card, Purpose.SALE, amount)
        self.rig.link.down = True
        before = snapshot(self.rig)
        try:
            self.till.sale(amount, read)
        except (HostLinkError, PendingError):
            pass
        except Crash:
            self.rig.link.down = False
            self._after_crash()
            return
        else:
            raise AssertionError("a sale went through with the host down")
        finally:
            self.rig.link.down = False
        assert _same_txns(before, snapshot(self.rig))

    @rule()
    def forget_mak(self) -> None:
        """The terminal's MAK no longer matches the host's: the host answers A0."""
        keys = self.till.journal.load_keys()
        if keys is None:
            return
        self.till.journal.save_keys(WorkingKeys(keys.pik, bytes(len(keys.mak)), keys.tdk),
                                    self.rig.clock().date())
        self.till._keys_cache = None

    @rule(hours=st.integers(1, 30))
    def time_passes(self, hours: int) -> None:
        self.rig.clock.advance(hours=hours)

    @rule()
    def restart(self) -> None:
        """A clean restart (no crash): recover before anything else."""
        self.rig.restart()
        self._guard("recover", self.till.recover)

    @rule()
    def recover(self) -> None:
        self.plan.disarm()
        self.rig.link.faults.clear()
        self.rig.link.down = False
        report = self._guard("recover", self.till.recover)
        if report is not None:
            assert self.till.journal.open_count() == 0
            check_money_rules(self.rig)

    @rule()
    def settle(self) -> None:
        out = self._guard("settle", self.till.settle)
        if out is None:
            return
        assert isinstance(out, SettleOutcome)
        # the host closed exactly what the terminal counted; nothing was owed any more
        assert out.totals == self.rig.host.batch_totals(TID, out.batch)
        assert out.balanced, f"settlement of {out.batch} did not balance after recovery"
        # the next batch follows the one settled and is one the host still takes
        assert self.till.journal.batch == out.new_batch == f"{int(out.batch) % 999_999 + 1:06d}"
        assert not self.rig.host.settled(TID, self.till.journal.batch)

    # --- after every step -----------------------------------------------------------------
    @invariant()
    def money_rules(self) -> None:
        check_money_rules(self.rig)

    @invariant()
    def nothing_pending_without_a_follow_up(self) -> None:
        owed = {i.txn_id for i in self.till.journal.open_items()}
        for record in self.till.journal.records("status IN ('pending', 'uncertain')"):
            assert record.id in owed, f"{record.kind} {record.stan} is {record.status}, not owed"

    @invariant()
    def refunds_never_exceed_in_doubt_either(self) -> None:
        for sale in self._sales():
            left = money_rules.refundable_of(sale, self.till.journal.children(sale.id))
            assert left.refunded + left.in_doubt <= sale.amount


class Iso87TillMachine(TillMachine):
    dialect = "iso87"


_FAST = settings(max_examples=30, stateful_step_count=25, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
_SLOW = settings(max_examples=300, stateful_step_count=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def test_money_rules_hold_over_random_days_cup() -> None:
    run_state_machine_as_test(TillMachine, settings=_FAST)


def test_money_rules_hold_over_random_days_iso87() -> None:
    run_state_machine_as_test(Iso87TillMachine, settings=_FAST)


@pytest.mark.slow
@pytest.mark.parametrize("machine", [TillMachine, Iso87TillMachine], ids=["cup", "iso87"])
def test_money_rules_hold_over_long_random_days(machine: type[TillMachine]) -> None:
    run_state_machine_as_test(machine, settings=_SLOW)
