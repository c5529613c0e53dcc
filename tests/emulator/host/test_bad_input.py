"""Bad input of any kind gives an outcome (refusal or close), never an exception or a booking."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator.catalogue import card_by_name
from emulator.simterminal import SimTerminal
from tests.emulator.host.harness import MID, NOW, TMK, TPDU, Lane, make_lane

DEBIT = card_by_name("cup-debit")


@pytest.fixture
def lane() -> Lane:
    return make_lane()


def sale_payload(lane: Lane, amount: int = 1_000) -> bytes:
    return lane.term.dialect.payload(lane.term.sale(DEBIT, amount, pin="123456"), tpdu=TPDU)


def cup_mac_sees(before: bytes, after: bytes) -> bool:
    """Whether the CUP POS MAC can notice a change: it XOR-folds 8-byte blocks first, so
    equal flips 8 bytes apart cancel (a property of the algorithm, not of the host)."""
    diff = bytes(a ^ b for a, b in zip(before, after, strict=True))
    fold = bytearray(8)
    for index, value in enumerate(diff):
        fold[index % 8] ^= value
    return any(fold)


def ledger_size(lane: Lane) -> int:
    return len(lane.store.load().transactions)


@pytest.mark.parametrize("payload", [
    b"", b"\x00", b"garbage", b"\x60\x00\x01\x00\x00", bytes(200),
    b"\x60\x00\x01\x00\x00\x60\x22\x00\x00\x00\x00\x02\x00",  # header, MTI, no bitmap
])
def test_garbage_closes_without_answer(lane: Lane, payload: bytes) -> None:
    before = ledger_size(lane)
    outcome = lane.send_payload(payload)
    assert outcome.close
    assert outcome.reply is None
    assert outcome.records == ()
    assert ledger_size(lane) == before


def test_truncated_frame_closes(lane: Lane) -> None:
    payload = sale_payload(lane)
    for cut in (5, 11, 13, 20, len(payload) // 2, len(payload) - 1):
        outcome = lane.send_payload(payload[:cut])
        assert outcome.close
        assert outcome.records == ()
    assert ledger_size(lane) == 0  # no transaction row was ever committed


def test_trailing_bytes_close(lane: Lane) -> None:
    outcome = lane.send_payload(sale_payload(lane) + b"\x00")
    assert outcome.close
    assert outcome.records == ()


def test_valid_frame_for_unknown_tid_closes_untouched(lane: Lane) -> None:
    stranger = SimTerminal("cup", "77777777", MID, TMK, lambda: NOW)
    stranger.keys = lane.term.keys  # even with the right keys
    outcome = lane.send(stranger.sale(DEBIT, 1_000, pin="123456"))
    assert outcome.close
    assert outcome.records == ()
    assert outcome.response is not None
    assert outcome.response.response_code == "03"
    assert ledger_size(lane) == 0


def test_response_mti_sent_to_the_host_closes(lane: Lane) -> None:
    msg = lane.term.sale(DEBIT, 1_000, pin="123456")
    msg.mti = "0210"
    outcome = lane.send(msg)
    assert outcome.close
    assert outcome.reply is None


def test_unsupported_request_mti_closes(lane: Lane) -> None:
    msg = lane.term.sale(DEBIT, 1_000, pin="123456")
    msg.mti = "0100"
    outcome = lane.send(msg)
    assert outcome.close
    assert outcome.records == ()


def test_request_without_stan_gets_30(lane: Lane) -> None:
    msg = lane.term.sale(DEBIT, 1_000, pin="123456")
    del msg[11]
    lane.term.remac(msg)
    outcome = lane.send(msg)
    assert outcome.response is not None
    assert outcome.response.response_code == "30"
    assert outcome.records == ()


def test_request_without_f60_gets_30(lane: Lane) -> None:
    msg = lane.term.sale(DEBIT, 1_000, pin="123456")
    del msg[60]
    lane.term.remac(msg)
    outcome = lane.send(msg)
    assert outcome.response is not None
    assert outcome.response.response_code == "30"


def test_request_without_mac_gets_a0(lane: Lane) -> None:
    msg = lane.term.sale(DEBIT, 1_000, pin="123456")
    del msg[64]
    outcome = lane.send(msg)
    assert outcome.response is not None
    assert outcome.response.response_code == "A0"
    assert outcome.records == ()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(b"\x60" + bytes(4) + bytes(6) + b"\x02\x00" + b"\xff" * 8)
def test_random_bytes_never_raise(data: bytes) -> None:
    lane = make_lane()
    outcome = lane.send_payload(data)
    assert outcome.close or outcome.reply is not None
    assert outcome.records == ()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_sales_never_raise_and_never_book_unmaced(data: st.DataObject) -> None:
    lane = make_lane()
    original = sale_payload(lane)
    payload = bytearray(original)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 255)),
                               min_size=1, max_size=4))
    for index, mask in flips:
        payload[index] ^= mask
    outcome = lane.send_payload(bytes(payload))
    header_len = 5 + 6  # TPDU + CUP header: routing data outside the MAC
    if cup_mac_sees(original[header_len:], bytes(payload[header_len:])):
        # any change to the body either breaks decoding or the MAC: nothing is booked
        assert outcome.records == ()
    if outcome.reply is not None:
        lane.term.dialect.unpack_payload(outcome.reply)  # whatever is answered decodes


def test_a_host_bug_answers_96_and_books_nothing(lane: Lane,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(lane.host, "_sale", broken)
    outcome = lane.send(lane.term.sale(DEBIT, 1_000, pin="123456"))
    assert outcome.response is not None
    assert outcome.response.response_code == "96"
    assert outcome.records == ()
    assert not outcome.close
    assert outcome.request is not None
    lane.term.check_response(outcome.request, outcome.response)  # MACed: a usable refusal


def test_outcome_names_card_and_amount_for_fault_matching(lane: Lane) -> None:
    outcome = lane.send(lane.term.sale(DEBIT, 4_321, pin="123456"))
    assert outcome.pan == DEBIT.pan
    assert outcome.amount == 4_321
    assert DEBIT.pan not in repr(outcome)
