"""Fault spec parsing and the per-request decision, without sockets."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from emulator.catalogue import card_by_name
from emulator.host.faults import (
    NO_FAULT,
    FaultKind,
    FaultPlan,
    FaultRule,
    FaultSpecError,
    RequestFacts,
    parse_rule,
    parse_spec,
)

DEBIT = card_by_name("cup-debit").pan
SALE = RequestFacts("0200", DEBIT, 1234)


def test_every_action_parses() -> None:
    kinds = [parse_rule(s).action.kind for s in
             ["delay=200", "drop", "close-before", "close-after", "bad-mac", "twice",
              "garble", "corrupt-arpc", "code=96"]]
    assert kinds == [FaultKind.DELAY, FaultKind.DROP, FaultKind.CLOSE_BEFORE,
                     FaultKind.CLOSE_AFTER, FaultKind.BAD_MAC, FaultKind.TWICE,
                     FaultKind.GARBLE, FaultKind.CORRUPT_ARPC, FaultKind.CODE]


def test_selectors_parse() -> None:
    rule = parse_rule("close-after@amount=1234,once,card=cup-debit,mti=0200,p=0.5")
    assert (rule.amount, rule.once, rule.pan, rule.mti, rule.probability) == (
        1234, True, DEBIT, "0200", 0.5)
    assert parse_rule("delay=200").action.delay_ms == 200
    assert parse_rule("code=a0").action.code == "A0"
    assert parse_rule(f"drop@card={DEBIT}").pan == DEBIT


@pytest.mark.parametrize("spec", [
    "", ";", "explode", "delay", "delay=abc", "delay=-1", "drop=3", "code=9", "code=999",
    "drop@", "drop@p=2", "drop@p=x", "drop@card=no-such-card", "drop@amount=1.5",
    "drop@mti=200", "drop@once=1", "drop@colour=red", "drop@once,once", "none",
])
def test_bad_specs_are_refused_with_one_error_type(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_spec(spec)


@given(st.text(max_size=60))
@example("delay=99999999999")
@example("drop@p=nan")
def test_parsing_never_raises_anything_else(spec: str) -> None:
    with contextlib.suppress(FaultSpecError):
        parse_spec(spec)


def test_bad_spec_adds_nothing() -> None:
    plan = FaultPlan()
    with pytest.raises(FaultSpecError):
        plan.add("drop;bogus")
    assert plan.describe() == []


def test_selectors_must_all_match() -> None:
    plan = FaultPlan.from_specs(["drop@card=cup-debit,amount=1234,mti=0200"])
    rng = random.Random(1)
    assert plan.decide(SALE, rng).kind is FaultKind.DROP
    assert plan.decide(RequestFacts("0220", DEBIT, 1234), rng) is NO_FAULT
    assert plan.decide(RequestFacts("0200", DEBIT, 1235), rng) is NO_FAULT
    assert plan.decide(RequestFacts("0200", card_by_name("cup-credit").pan, 1234), rng) is NO_FAULT
    assert plan.decide(RequestFacts("0800"), rng) is NO_FAULT


def test_once_fires_once_and_first_rule_wins() -> None:
    plan = FaultPlan.from_specs(["close-after@amount=1234,once", "code=96@mti=0200"])
    rng = random.Random(1)
    assert plan.decide(SALE, rng).kind is FaultKind.CLOSE_AFTER
    second = plan.decide(SALE, rng)
    assert (second.kind, second.code) == (FaultKind.CODE, "96")
    assert [r["armed"] for r in plan.describe()] == [False, True]
    assert [r["fired"] for r in plan.describe()] == [1, 1]


def test_a_once_rule_says_when_it_fires_and_is_disarmed_by_index_and_text() -> None:
    told: list[tuple[int, str]] = []
    plan = FaultPlan.from_specs(["delay=5@amount=1", "drop@amount=1234,once"])
    plan.on_once = lambda index, rule: told.append((index, rule.spec))
    rng = random.Random(0)
    assert plan.decide(SALE, rng).kind is FaultKind.DROP
    assert told == [(1, "drop@amount=1234,once")]
    other = FaultPlan.from_specs(["delay=5@amount=1", "drop@amount=1234,once"])
    assert not other.disarm(0, "delay=5@amount=1")  # not a once rule
    assert not other.disarm(1, "drop@amount=9999,once")  # the plan changed: not by position
    assert not other.disarm(7, "drop@amount=1234,once")
    assert other.disarm(1, "drop@amount=1234,once")
    assert other.decide(SALE, rng) is NO_FAULT
    assert other.describe()[1] == {"spec": "drop@amount=1234,once", "fired": 0, "armed": False}


def test_a_once_rule_another_process_claimed_is_passed_over_and_stays_spent() -> None:
    asked: list[tuple[int, str]] = []

    def lost(index: int, rule: FaultRule) -> bool:
        asked.append((index, rule.spec))
        return False

    plan = FaultPlan.from_specs(["drop@amount=1234,once", "code=96@mti=0200"])
    plan.claim_once = lost
    rng = random.Random(0)
    first = plan.decide(SALE, rng)
    assert (first.kind, first.code) == (FaultKind.CODE, "96")  # the next rule that matches
    assert asked == [(0, "drop@amount=1234,once")]
    assert plan.describe()[0] == {"spec": "drop@amount=1234,once", "fired": 0, "armed": False}
    plan.decide(SALE, rng)
    assert len(asked) == 1  # not asked again: it is spent for this process too
    won = FaultPlan.from_specs(["drop@amount=1234,once"])
    won.claim_once = lambda index, rule: True
    assert won.decide(SALE, rng).kind is FaultKind.DROP
    assert won.decide(SALE, rng) is NO_FAULT


def test_corrupt_arpc_fires_only_on_requests_with_chip_data() -> None:
    plan = FaultPlan.from_specs(["corrupt-arpc@once"])
    rng = random.Random(1)
    assert plan.decide(RequestFacts("0800"), rng) is NO_FAULT  # a sign-on keeps the ``once``
    assert plan.decide(SALE, rng) is NO_FAULT  # a stripe sale: no ARPC to spoil
    assert plan.decide(RequestFacts("0200", DEBIT, 1234, chip=True), rng).kind \
        is FaultKind.CORRUPT_ARPC
    assert plan.describe() == [{"spec": "corrupt-arpc@once", "fired": 1, "armed": False}]


def test_probability_is_drawn_from_the_given_rng() -> None:
    plan = FaultPlan.from_specs(["delay=5@p=0.25"])
    rng = random.Random(42)
    fired = sum(plan.decide(SALE, rng).kind is FaultKind.DELAY for _ in range(4000))
    assert 800 < fired < 1200
    again = FaultPlan.from_specs(["delay=5@p=0.25"])
    rng2 = random.Random(42)
    assert sum(again.decide(SALE, rng2).kind is FaultKind.DELAY for _ in range(4000)) == fired


def test_p_zero_never_and_p_one_always() -> None:
    rng = random.Random(3)
    never = FaultPlan.from_specs(["drop@p=0"])
    always = FaultPlan.from_specs(["drop@p=1"])
    assert all(never.decide(SALE, rng) is NO_FAULT for _ in range(200))
    assert all(always.decide(SALE, rng).kind is FaultKind.DROP for _ in range(200))


def test_booking_faults() -> None:
    assert not parse_rule("close-before").action.books
    assert not parse_rule("code=05").action.books
    assert parse_rule("close-after").action.books
    assert parse_rule("drop").action.books


def test_clear() -> None:
    plan = FaultPlan.from_specs(["drop;twice@p=0.5"])
    assert len(plan.describe()) == 2
    assert plan.clear() == 2
    assert not plan
    assert plan.decide(SALE, random.Random(0)) is NO_FAULT
