"""Property tests: whatever a card answers, the dialogue raises only typed driver errors.

Two sources of answers: entirely random R-APDUs (biased towards the status
words the dialogue branches on), and a recorded good dialogue with a few bytes
or status words mutated. Under ``-m slow`` the example counts go up tenfold.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.emv import (
    AID_CUP_DEBIT,
    AID_VISA,
    CardReadResult,
    TerminalConfig,
    TransactionData,
    TransactionType,
    read_card,
)
from drivers.errors import CardRemovedError, DriverError
from tests.drivers.emv_fakes import Exchange, FakeApp, FakeCard

FAST = int(os.environ.get("POS_FUZZ_EXAMPLES", "150"))
TXNS = [
    TransactionData(t, 100, dt.date(2026, 1, 2), unpredictable_number=b"\x00\x01\x02\x03")
    for t in TransactionType
]
CONFIGS = [TerminalConfig(refund_ends_with="aac"), TerminalConfig(refund_ends_with="records")]

INTERESTING_SW = [0x9000, 0x9000, 0x9000, 0x6A82, 0x6283, 0x6A81, 0x6985, 0x6A83, 0x6100,
                  0x6110, 0x6C00, 0x6C10, 0x6F00, 0x6D00]


class _FakeCardBase:
    """What every fake card here shares: a fixed ATR, the interface flag, nothing to close."""

    _contactless: bool

    @property
    def atr(self) -> bytes:
        return b"\x3b\x00"

    @property
    def contactless(self) -> bool:
        return self._contactless

    def close(self) -> None:
        pass


class RandomCard(_FakeCardBase):
    """Answers every command with data and SW drawn by hypothesis."""

    def __init__(self, data: st.DataObject, contactless: bool) -> None:
        self.data = data
        self._contactless = contactless
        self.calls = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.calls += 1
        if self.calls > 200:
            raise CardRemovedError("fuzz card gives up")
        body = self.data.draw(st.binary(max_size=64), label="data")
        sw = self.data.draw(st.one_of(st.sampled_from(INTERESTING_SW),
                                      st.integers(0, 0xFFFF)), label="sw")
        return body, sw


def _check(result: CardReadResult) -> None:
    """A dialogue that survived must still give self-consistent card data."""
    assert result.pan.isdigit()
    assert 12 <= len(result.pan) <= 19
    assert result.track2.startswith(result.pan + "D")
    assert len(result.expiry) == 4
    assert 1 <= int(result.expiry[2:]) <= 12
    result.f55()
    repr(result)


def _run(transport: object, txn: TransactionData, config: TerminalConfig) -> None:
    try:
        result = read_card(transport, txn, config)  # type: ignore[arg-type]
    except DriverError:
        return
    _check(result)


@settings(max_examples=FAST, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), contactless=st.booleans(), txn=st.sampled_from(TXNS),
       config=st.sampled_from(CONFIGS))
def test_random_answers_raise_only_driver_errors(data: st.DataObject, contactless: bool,
                                                 txn: TransactionData,
                                                 config: TerminalConfig) -> None:
    _run(RandomCard(data, contactless), txn, config)


def _recorded(card: FakeCard, txn: TransactionData, config: TerminalConfig) -> list[Exchange]:
    read_card(card, txn, config)
    return list(card.log)


SCENARIOS = [
    (FakeCard([FakeApp(AID_CUP_DEBIT)]), TXNS[0], CONFIGS[0]),
    (FakeCard([FakeApp(AID_CUP_DEBIT, gpo_format=2, ac_format=2)], chain61=True),
     TXNS[1], CONFIGS[0]),
    (FakeCard([FakeApp(AID_VISA, pan="4761739001010010", service_code="201")], pse=False),
     TXNS[1], CONFIGS[1]),
    (FakeCard([FakeApp(AID_CUP_DEBIT)], contactless=True, wrong_le=True), TXNS[0], CONFIGS[0]),
    (FakeCard([FakeApp(AID_CUP_DEBIT, gpo_cryptogram=True, ac_answer="AAC")], contactless=True),
     TXNS[1], CONFIGS[0]),
]
GOOD = [(_recorded(c, t, k), c.contactless, t, k) for c, t, k in SCENARIOS]


class MutatedReplay(_FakeCardBase):
    """Answers the n-th command with the n-th recorded answer, whatever the command is."""

    def __init__(self, answers: list[tuple[bytes, int]], contactless: bool) -> None:
        self.answers = answers
        self._contactless = contactless
        self.pos = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self.pos >= len(self.answers):
            raise CardRemovedError("recorded dialogue exhausted")
        self.pos += 1
        return self.answers[self.pos - 1]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[list[tuple[bytes, int]], bool, TransactionData,
                                        TerminalConfig]:
    log, contactless, txn, config = draw(st.sampled_from(GOOD))
    answers = [(e.data, e.sw) for e in log]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(answers) - 1))
        data, sw = answers[i]
        kind = draw(st.sampled_from(["flip", "set", "truncate", "extend", "sw", "drop", "len"]))
        if kind == "sw":
            sw = draw(st.sampled_from(INTERESTING_SW))
        elif kind == "drop":
            answers.pop(i)
            if not answers:
                answers.append((b"", 0x9000))
            continue
        elif data:
            j = draw(st.integers(0, len(data) - 1))
            if kind == "flip":
                data = data[:j] + bytes([data[j] ^ (1 << draw(st.integers(0, 7)))]) + data[j + 1:]
            elif kind == "set":
                data = data[:j] + bytes([draw(st.integers(0, 255))]) + data[j + 1:]
            elif kind == "truncate":
                data = data[:j]
            elif kind == "extend":
                data = data + draw(st.binary(min_size=1, max_size=8))
            elif kind == "len" and len(data) > 1:
                # length bytes are where TLV parsers break: nudge one up or down
                data = data[:1] + bytes([(data[1] + draw(st.sampled_from([-2, -1, 1, 2, 0x80])))
                                         & 0xFF]) + data[2:]
        answers[i] = (data, sw)
    return answers, contactless, txn, config


def test_recorded_dialogues_are_good() -> None:
    for log, contactless, txn, config in GOOD:
        result = read_card(MutatedReplay([(e.data, e.sw) for e in log], contactless), txn,
                           config)
        _check(result)


@settings(max_examples=FAST * 2, deadline=None)
@given(mutations())
def test_mutated_answers_raise_only_driver_errors(
        case: tuple[list[tuple[bytes, int]], bool, TransactionData, TerminalConfig]) -> None:
    answers, contactless, txn, config = case
    _run(MutatedReplay(answers, contactless), txn, config)


@pytest.mark.slow
@settings(max_examples=FAST * 20, deadline=None)
@given(mutations())
def test_mutated_answers_many(
        case: tuple[list[tuple[bytes, int]], bool, TransactionData, TerminalConfig]) -> None:
    answers, contactless, txn, config = case
    _run(MutatedReplay(answers, contactless), txn, config)
