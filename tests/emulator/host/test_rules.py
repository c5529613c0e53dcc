"""The acquirer host's rules, one test per rule and per response code, no sockets."""

from __future__ import annotations

import dataclasses
import random

import pytest

from emulator.catalogue import CARDS, CardStatus, card_by_name
from emulator.catalogue import TestCard as Card
from emulator.host import AcquirerHost, MemoryLedgerStore, TransactionRow, security
from emulator.host.codes import MAGIC_AMOUNTS
from emulator.host.ledger import LedgerStore
from emulator.simterminal import Approved, Declined, SimTerminal
from iso8583 import composite, tlv
from iso8583.message import Message
from iso8583.settlement import HalfTotals, SettlementTotals
from tests.emulator.host.harness import MID, NOW, TID, TMK, Lane, make_lane

DEBIT = card_by_name("cup-debit")
PIN = "123456"


@pytest.fixture
def lane(ledger_store: LedgerStore) -> Lane:
    """A signed-on lane over each ledger backend (memory, SQLite, PostgreSQL: conftest)."""
    return make_lane(store=ledger_store)


def approved_sale(lane: Lane, amount: int = 10_000, card: Card = DEBIT,
                  pin: str | None = PIN) -> Approved:
    result = lane.exchange(lane.term.sale(card, amount, pin=pin))
    assert isinstance(result, Approved), result
    return result


def code_of(result: Approved | Declined) -> str:
    return result.response_code


def remac(lane: Lane, msg: Message) -> Message:
    assert lane.term.keys is not None
    return security.apply_mac(lane.term.dialect, lane.term.keys.mak, msg)


def booked(lane: Lane, result: Approved) -> TransactionRow:
    """The host's row for an approved request, found by its RRN."""
    row = lane.host.by_rrn(str(result.rrn))
    assert row is not None
    return row


def rows(lane: Lane, kind: str) -> list[TransactionRow]:
    return [t for t in lane.host.transactions() if t.kind == kind]


# --- terminals and sign-on -------------------------------------------------------------
@pytest.mark.parametrize("form", [1, 3, 4])
def test_sign_on_issues_working_keys_in_every_form(form: int) -> None:
    lane = make_lane(form=form)
    keys = lane.term.keys
    assert keys is not None
    assert len(keys.pik) == (8 if form == 1 else 16)
    assert (keys.tdk is not None) == (form == 4)
    approved_sale(lane)


def test_sign_on_issues_fresh_keys_each_time(lane: Lane) -> None:
    first = lane.term.keys
    lane.term.accept_sign_on(lane.answer(lane.term.sign_on_request()))
    assert lane.term.keys is not None
    assert first is not None
    assert lane.term.keys.mak != first.mak
    approved_sale(lane)


def test_unknown_terminal_is_refused_with_03_and_closed() -> None:
    lane = make_lane(sign_on=False)
    stranger = SimTerminal("cup", "99999999", MID, TMK, lambda: NOW)
    outcome = lane.send(stranger.sign_on_request())
    assert outcome.close
    assert outcome.records == ()
    assert outcome.response is not None
    assert outcome.response.response_code == "03"


def test_known_tid_with_wrong_mid_is_refused(lane: Lane) -> None:
    other = SimTerminal("cup", TID, "999999999999999", TMK, lambda: NOW)
    outcome = lane.send(other.sign_on_request())
    assert outcome.close
    assert outcome.records == ()
    assert outcome.response is not None
    assert outcome.response.response_code == "03"


def test_financial_request_before_sign_on_gets_77() -> None:
    lane = make_lane(sign_on=False)
    lane.term.keys = security.WorkingKeys(bytes(16), bytes(8))  # the terminal thinks it has keys
    outcome = lane.send(lane.term.sale(DEBIT, 1000, pin=PIN))
    assert outcome.response is not None
    assert outcome.response.response_code == "77"
    assert 64 not in outcome.response
    assert outcome.records == ()


def test_sign_off_drops_the_keys(lane: Lane) -> None:
    answer = lane.answer(lane.term.sign_off())
    assert answer.response_code == "00"
    outcome = lane.send(lane.term.sale(DEBIT, 1000, pin=PIN))
    assert outcome.response is not None
    assert outcome.response.response_code == "77"


def test_echo_is_answered(lane: Lane) -> None:
    outcome = lane.send(lane.term.echo())
    assert outcome.response is not None
    assert outcome.response.response_code == "00"
    assert outcome.records == ()


def test_sign_on_with_wrong_tmk_fails_the_check_value() -> None:
    lane = make_lane(sign_on=False)
    answer = lane.answer(lane.term.sign_on_request())
    wrong = SimTerminal("cup", TID, MID, bytes(16), lambda: NOW)
    with pytest.raises(Exception, match="check value"):
        wrong.accept_sign_on(answer)


# --- security -----------------------------------------------------------------------
def test_bad_request_mac_gets_a0_and_books_nothing(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 5_000, pin=PIN)
    sale[64] = b"00000000"
    before = lane.host.available(DEBIT)
    outcome = lane.send(sale)
    assert outcome.response is not None
    assert outcome.response.response_code == "A0"
    assert 64 not in outcome.response  # not MACed: the keys may be what is wrong
    assert outcome.records == ()
    assert lane.host.available(DEBIT) == before
    assert rows(lane, "sale") == []


def test_tampered_amount_fails_the_mac(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 5_000, pin=PIN)
    sale[4] = 50_000  # changed after MACing
    outcome = lane.send(sale)
    assert outcome.response is not None
    assert outcome.response.response_code == "A0"
    assert outcome.records == ()


def test_every_answer_to_a_maced_request_is_maced(lane: Lane) -> None:
    for amount in (1_000, 1_051, 0):
        request = lane.term.sale(DEBIT, amount, pin=PIN)
        answer = lane.answer(request)
        assert 64 in answer
        lane.term.check_response(request, answer)  # raises on a bad MAC


def test_wrong_pin_gets_55(lane: Lane) -> None:
    assert code_of(lane.exchange(lane.term.sale(DEBIT, 1_000, pin="654321"))) == "55"


def test_missing_pin_on_a_pin_card_gets_55(lane: Lane) -> None:
    assert code_of(lane.exchange(lane.term.sale(DEBIT, 1_000, pin=None))) == "55"


def test_card_without_pin_is_approved_without_one(lane: Lane) -> None:
    approved_sale(lane, card=card_by_name("visa-credit"), pin=None)
    approved_sale(lane, card=card_by_name("cup-nopin"), pin=None)


def test_magstripe_card_with_pin(lane: Lane) -> None:
    result = approved_sale(lane, card=card_by_name("cup-magstripe"), pin="888888")
    assert result.scheme == "CUP"


def test_arqc_mismatch_gets_05(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 2_000, pin=PIN)
    f55 = sale[55]
    assert isinstance(f55, bytes)
    tags = tlv.decode_flat(f55)
    tags[0x9F26] = bytes(8)
    sale[55] = tlv.encode(tags)
    outcome = lane.send(remac(lane, sale))
    assert outcome.response is not None
    assert outcome.response.response_code == "05"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_arqc_over_a_changed_amount_gets_05(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 2_000, pin=PIN)
    sale[4] = 200_000  # the card signed 20.00, the terminal asks 2000.00
    outcome = lane.send(remac(lane, sale))
    assert outcome.response is not None
    assert outcome.response.response_code == "05"


def test_chip_entry_without_f55_gets_30(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 2_000, pin=PIN)
    del sale[55]
    outcome = lane.send(remac(lane, sale))
    assert outcome.response is not None
    assert outcome.response.response_code == "30"


# --- issuer simulation ----------------------------------------------------------------
@pytest.mark.parametrize(("fen", "code"), sorted(MAGIC_AMOUNTS.items()))
def test_magic_amounts_force_their_code(lane: Lane, fen: int, code: str) -> None:
    result = lane.exchange(lane.term.sale(DEBIT, 1_200 + fen, pin=PIN))
    assert code_of(result) == code
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_round_amounts_are_normal(lane: Lane) -> None:
    approved_sale(lane, 1_200)


def test_unknown_card_gets_14(lane: Lane) -> None:
    stranger = dataclasses.replace(DEBIT, pan="6225880000000068")
    assert code_of(lane.exchange(lane.term.sale(stranger, 1_000, pin=PIN))) == "14"


def test_blocked_card_gets_14(lane: Lane) -> None:
    card = card_by_name("cup-blocked")
    assert code_of(lane.exchange(lane.term.sale(card, 1_000, pin=PIN))) == "14"


def test_lost_card_gets_41() -> None:
    lost = dataclasses.replace(DEBIT, name="lost", status=CardStatus.LOST)
    store = MemoryLedgerStore(secret=b"k" * 32)
    host = AcquirerHost("cup", store=store, cards=[lost],
                        random_bytes=random.Random(1).randbytes)
    store.commit([host.provision(TID, MID, TMK)])
    lane = Lane(host, store, SimTerminal("cup", TID, MID, TMK, lambda: NOW))
    lane.term.accept_sign_on(lane.answer(lane.term.sign_on_request()))
    assert code_of(lane.exchange(lane.term.sale(lost, 1_000, pin=PIN))) == "41"


def test_expired_card_gets_54(lane: Lane) -> None:
    card = card_by_name("cup-expired")
    assert code_of(lane.exchange(lane.term.sale(card, 1_000, pin=PIN))) == "54"


def test_insufficient_funds_gets_51(lane: Lane) -> None:
    card = card_by_name("cup-low-funds")
    assert code_of(lane.exchange(lane.term.sale(card, 2_000, pin=PIN))) == "51"
    approved_sale(lane, 1_000, card=card)
    assert code_of(lane.exchange(lane.term.sale(card, 100, pin=PIN))) == "51"


def test_credit_limit_is_consumed_by_sales(lane: Lane) -> None:
    card = card_by_name("cup-credit")
    approved_sale(lane, card.opening_balance - 1_000, card=card, pin="111111")
    assert code_of(lane.exchange(lane.term.sale(card, 1_100, pin="111111"))) == "51"


def test_zero_amount_gets_13(lane: Lane) -> None:
    assert code_of(lane.exchange(lane.term.sale(DEBIT, 0, pin=PIN))) == "13"


def test_wrong_currency_gets_13(lane: Lane) -> None:
    sale = lane.term.sale(DEBIT, 1_000, pin=PIN)
    sale[49] = "840"
    assert lane.answer(remac(lane, sale)).response_code == "13"


def test_sale_books_rrn_auth_and_balance(lane: Lane) -> None:
    first = approved_sale(lane, 1_000)
    second = approved_sale(lane, 2_000)
    assert first.rrn is not None
    assert len(first.rrn) == 12
    assert first.auth_code is not None
    assert len(first.auth_code) == 6
    assert first.rrn != second.rrn
    assert first.auth_code != second.auth_code
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000


def test_balance_inquiry_reports_the_available_balance(lane: Lane) -> None:
    approved_sale(lane, 2_500)
    result = lane.exchange(lane.term.balance(DEBIT, pin=PIN))
    assert isinstance(result, Approved)
    assert result.balance == DEBIT.opening_balance - 2_500


def test_balance_inquiry_with_wrong_pin_gets_55(lane: Lane) -> None:
    assert code_of(lane.exchange(lane.term.balance(DEBIT, pin="000000"))) == "55"


# --- refunds (original route) --------------------------------------------------------
def test_refund_against_an_approved_sale(lane: Lane) -> None:
    sale = approved_sale(lane, 10_000)
    refund = lane.exchange(lane.term.refund(sale, 4_000))
    assert isinstance(refund, Approved)
    assert booked(lane, sale).refunded == 4_000
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 6_000


def test_cumulative_refunds_up_to_the_original_then_64(lane: Lane) -> None:
    sale = approved_sale(lane, 10_000)
    assert isinstance(lane.exchange(lane.term.refund(sale, 6_000)), Approved)
    assert code_of(lane.exchange(lane.term.refund(sale, 4_001))) == "64"
    assert isinstance(lane.exchange(lane.term.refund(sale, 4_000)), Approved)
    assert code_of(lane.exchange(lane.term.refund(sale, 1))) == "64"
    assert booked(lane, sale).refunded == 10_000


def test_refund_of_zero_gets_13(lane: Lane) -> None:
    sale = approved_sale(lane)
    assert code_of(lane.exchange(lane.term.refund(sale, 0))) == "13"


def test_refund_with_unknown_rrn_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    ghost = dataclasses.replace(sale, rrn="999999999999")
    assert code_of(lane.exchange(lane.term.refund(ghost, 100))) == "25"


@pytest.mark.parametrize("change", [{"stan": "000999"}, {"batch": "000777"}, {"date": "0101"}])
def test_refund_whose_f61_names_another_original_gets_25(lane: Lane,
                                                          change: dict[str, str]) -> None:
    sale = approved_sale(lane)
    wrong = dataclasses.replace(sale, **change)  # type: ignore[arg-type]
    assert code_of(lane.exchange(lane.term.refund(wrong, 100))) == "25"


def test_refund_without_f61_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    refund = lane.term.refund(sale, 100)
    del refund[61]
    assert lane.answer(remac(lane, refund)).response_code == "25"


def test_refund_to_another_card_gets_14(lane: Lane) -> None:
    sale = approved_sale(lane)
    other = card_by_name("cup-nopin")
    assert code_of(lane.exchange(lane.term.refund(sale, 100, card=other))) == "14"


def test_refund_of_a_declined_sale_gets_25(lane: Lane) -> None:
    declined = lane.term.sale(DEBIT, 1_051, pin=PIN)
    answer = lane.answer(declined)
    assert answer.response_code == "51"
    fake = Approved("sale", "0200", str(declined[11]), lane.term.batch, 1_051, answer.rrn,
                    "000000", "1123", "CUP", DEBIT.pan)
    assert code_of(lane.exchange(lane.term.refund(fake, 100))) == "25"


def test_refund_of_a_voided_sale_gets_12(lane: Lane) -> None:
    sale = approved_sale(lane)
    assert isinstance(lane.exchange(lane.term.void(sale)), Approved)
    assert code_of(lane.exchange(lane.term.refund(sale, 100))) == "12"


def test_refund_of_a_reversed_sale_gets_25(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    sale = lane.exchange(request)
    assert isinstance(sale, Approved)
    lane.exchange(lane.term.reversal(request, "98"))
    assert code_of(lane.exchange(lane.term.refund(sale, 100))) == "25"


def test_refund_of_a_refund_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    refund = lane.exchange(lane.term.refund(sale, 100))
    assert isinstance(refund, Approved)
    assert code_of(lane.exchange(lane.term.refund(refund, 10))) == "25"


def test_refund_magic_amount_forces_its_code(lane: Lane) -> None:
    sale = approved_sale(lane, 10_000)
    assert code_of(lane.exchange(lane.term.refund(sale, 1_051))) == "51"
    assert booked(lane, sale).refunded == 0


def test_refund_after_settlement_is_allowed(lane: Lane) -> None:
    sale = approved_sale(lane, 10_000)
    settled = lane.exchange(lane.term.settlement())
    assert isinstance(settled, Approved)
    assert settled.balanced
    assert isinstance(lane.exchange(lane.term.refund(sale, 500)), Approved)


def test_refund_carries_the_card_organisation(lane: Lane) -> None:
    sale = approved_sale(lane, card=card_by_name("visa-credit"), pin=None)
    refund = lane.term.refund(sale, 100)
    assert refund[63] == "VIS"
    assert composite.F61.decode(str(refund[61])).date == sale.date


@pytest.mark.parametrize("request_date", [None, "0101"])
def test_refund_names_the_date_the_host_answered_the_sale_with(lane: Lane,
                                                               request_date: str | None) -> None:
    """A 0200 without F12/F13 (or with a terminal clock that is off) is booked on the answer's
    F13; a refund whose 61.3 carries that date is approved, any other date gets 25."""
    request = lane.term.sale(DEBIT, 10_000, pin=PIN)
    if request_date is None:
        del request[12]
        del request[13]
    else:
        request[13] = request_date
    sale = lane.exchange(remac(lane, request))
    assert isinstance(sale, Approved), sale
    assert sale.date == lane.now.strftime("%m%d")  # the answer's F13
    assert booked(lane, sale).date == sale.date
    wrong = dataclasses.replace(sale, date="0101")  # a wrong date, or the request's own
    assert code_of(lane.exchange(lane.term.refund(wrong, 500))) == "25"
    refund = lane.term.refund(sale, 500)
    assert composite.F61.decode(str(refund[61])).date == sale.date
    assert isinstance(lane.exchange(refund), Approved)


def test_every_financial_answer_carries_the_hosts_date(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 10_000, pin=PIN)
    del request[13]
    assert lane.answer(remac(lane, request))[13] == lane.now.strftime("%m%d")
    refused = lane.term.sale(DEBIT, 10_000, pin=PIN)
    del refused[13]
    refused[64] = b"00000000"  # A0: not MACed, still dated
    assert lane.answer(refused)[13] == lane.now.strftime("%m%d")


# --- voids ----------------------------------------------------------------------------
def test_void_of_full_amount_same_batch(lane: Lane) -> None:
    sale = approved_sale(lane, 7_000)
    assert isinstance(lane.exchange(lane.term.void(sale)), Approved)
    assert booked(lane, sale).status == "voided"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_void_only_once(lane: Lane) -> None:
    sale = approved_sale(lane)
    assert isinstance(lane.exchange(lane.term.void(sale)), Approved)
    assert code_of(lane.exchange(lane.term.void(sale))) == "12"


def test_void_of_another_amount_gets_64(lane: Lane) -> None:
    sale = approved_sale(lane, 7_000)
    partial = dataclasses.replace(sale, amount=6_000)
    assert code_of(lane.exchange(lane.term.void(partial))) == "64"


def test_void_of_a_refunded_sale_gets_12(lane: Lane) -> None:
    sale = approved_sale(lane, 7_000)
    assert isinstance(lane.exchange(lane.term.refund(sale, 100)), Approved)
    assert code_of(lane.exchange(lane.term.void(sale))) == "12"


def test_void_after_settlement_gets_12(lane: Lane) -> None:
    sale = approved_sale(lane)
    lane.exchange(lane.term.settlement())
    assert lane.term.batch == "000002"
    assert code_of(lane.exchange(lane.term.void(sale))) == "12"


def test_void_from_another_batch_gets_12(lane: Lane) -> None:
    sale = approved_sale(lane)
    lane.term.batch = "000005"  # the terminal moved on without settling
    assert code_of(lane.exchange(lane.term.void(sale))) == "12"


def test_void_with_wrong_auth_code_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    assert code_of(lane.exchange(lane.term.void(
        dataclasses.replace(sale, auth_code="999999")))) == "25"


def test_void_with_another_card_gets_14(lane: Lane) -> None:
    sale = approved_sale(lane)
    assert code_of(lane.exchange(lane.term.void(
        dataclasses.replace(sale, pan=card_by_name("cup-nopin").pan)))) == "14"


def test_void_of_unknown_original_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    assert code_of(lane.exchange(lane.term.void(
        dataclasses.replace(sale, rrn="000000009999")))) == "25"


# --- reversals ------------------------------------------------------------------------
def test_reversal_undoes_the_sale_it_names(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    sale = lane.exchange(request)
    assert isinstance(sale, Approved)
    result = lane.exchange(lane.term.reversal(request, "98"))
    assert isinstance(result, Approved)
    assert booked(lane, sale).status == "reversed"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_reversal_is_idempotent(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    lane.exchange(request)
    reversal = lane.term.reversal(request, "98")
    first = lane.answer(reversal)
    again = lane.send(reversal)
    assert again.records == ()
    assert again.response == first
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_reversal_of_something_never_seen_is_acknowledged_without_booking(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)  # never sent
    outcome = lane.send(lane.term.reversal(request, "98"))
    assert outcome.response is not None
    assert outcome.response.response_code == "00"
    assert [r.kind for r in outcome.records if isinstance(r, TransactionRow)] == ["reversal"]
    assert rows(lane, "sale") == []
    assert lane.host.available(DEBIT) == DEBIT.opening_balance


def test_reversal_with_another_amount_does_not_touch_the_sale(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    sale = lane.exchange(request)
    assert isinstance(sale, Approved)
    reversal = lane.term.reversal(request, "98")
    reversal[4] = 2_999
    assert lane.answer(remac(lane, reversal)).response_code == "00"
    assert booked(lane, sale).status == "approved"


def test_reversal_of_a_void_reinstates_the_sale(lane: Lane) -> None:
    sale = approved_sale(lane, 4_000)
    void = lane.term.void(sale)
    assert isinstance(lane.exchange(void), Approved)
    assert isinstance(lane.exchange(lane.term.reversal(void, "98")), Approved)
    assert booked(lane, sale).status == "approved"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 4_000
    assert isinstance(lane.exchange(lane.term.void(sale)), Approved)


def test_reversal_of_a_refunded_sale_gets_12(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    sale = lane.exchange(request)
    assert isinstance(sale, Approved)
    assert isinstance(lane.exchange(lane.term.refund(sale, 100)), Approved)
    assert code_of(lane.exchange(lane.term.reversal(request, "96"))) == "12"
    assert booked(lane, sale).status == "approved"


def test_reversal_in_a_settled_batch_gets_12(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    lane.exchange(request)
    lane.exchange(lane.term.settlement())
    assert code_of(lane.exchange(lane.term.reversal(request, "98"))) == "12"


def test_reversal_of_a_refund_restores_the_refundable_amount(lane: Lane) -> None:
    sale = approved_sale(lane, 5_000)
    refund = lane.term.refund(sale, 2_000)
    assert isinstance(lane.exchange(refund), Approved)
    assert isinstance(lane.exchange(lane.term.reversal(refund, "98")), Approved)
    assert booked(lane, sale).refunded == 0


# --- idempotency ----------------------------------------------------------------------
def test_duplicate_gets_the_stored_answer_and_books_once(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    first = lane.send(request)
    again = lane.send(request)
    assert again.records == ()
    assert again.reply == first.reply  # byte-identical
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000
    assert len(rows(lane, "sale")) == 1


def test_duplicate_of_a_refusal_gets_the_same_refusal(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin="999999")
    first = lane.send(request)
    again = lane.send(request)
    assert again.reply == first.reply
    assert again.records == ()


def test_duplicate_after_re_sign_on_is_re_maced(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    first = lane.answer(request)
    lane.term.accept_sign_on(lane.answer(lane.term.sign_on_request()))
    lane.term.remac(request)
    again = lane.answer(request)
    assert again.fields.keys() == first.fields.keys()
    assert {k: v for k, v in again.fields.items() if k != 64} == {
        k: v for k, v in first.fields.items() if k != 64}
    assert isinstance(lane.term.check_response(request, again), Approved)


def test_other_message_reusing_a_stan_gets_94(lane: Lane) -> None:
    first = lane.term.sale(DEBIT, 3_000, pin=PIN)
    lane.exchange(first)
    other = lane.term.sale(DEBIT, 4_000, pin=PIN)
    other[11] = first[11]
    outcome = lane.send(remac(lane, other))
    assert outcome.response is not None
    assert outcome.response.response_code == "94"
    assert outcome.records == ()
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000


def test_same_stan_in_another_batch_is_a_new_request(lane: Lane) -> None:
    approved_sale(lane, 1_000)
    lane.exchange(lane.term.settlement())
    lane.term._next_stan = 2
    approved_sale(lane, 1_000)
    assert len(rows(lane, "sale")) == 2


# --- settlement and batch upload ------------------------------------------------------
def test_settlement_totals_agree(lane: Lane) -> None:
    sale = approved_sale(lane, 10_000)
    approved_sale(lane, 2_000, card=card_by_name("visa-credit"), pin=None)
    voided = approved_sale(lane, 500)
    lane.exchange(lane.term.void(voided))
    lane.exchange(lane.term.refund(sale, 3_000))
    result = lane.exchange(lane.term.settlement())
    assert isinstance(result, Approved)
    assert result.balanced
    host = lane.host.batch_totals(TID, "000001")
    assert host.domestic == HalfTotals(1, 10_000, 1, 3_000)
    assert host.foreign == HalfTotals(1, 2_000, 0, 0)
    assert lane.term.batch == "000002"


def test_settlement_mismatch_then_batch_upload(lane: Lane) -> None:
    approved_sale(lane, 10_000)
    wrong = SettlementTotals(HalfTotals(2, 20_000, 0, 0))
    answer = lane.answer(lane.term.settlement(wrong))
    assert answer.response_code == "00"
    totals, domestic, foreign = SettlementTotals.decode(str(answer[48]))
    assert domestic.value == "2"
    assert foreign.value == "1"
    assert totals.domestic == HalfTotals(1, 10_000, 0, 0)
    uploads = lane.term.batch_upload_all()
    for message in uploads:
        assert isinstance(lane.exchange(message), Approved)
    end = lane.answer(uploads[-1])
    assert end[48] == "00010001"  # received 1, matched 1
    row = lane.store.load().uploads[0]
    assert row.matched
    assert row.amount == 10_000


def test_batch_upload_of_an_unknown_item_is_flagged(lane: Lane) -> None:
    sale = approved_sale(lane, 1_000)
    lane.answer(lane.term.settlement(SettlementTotals()))
    ghost = dataclasses.replace(sale, stan="000999")  # a list item names itself by STAN
    assert isinstance(lane.exchange(lane.term.batch_upload(ghost)), Approved)
    assert [u.matched for u in lane.store.load().uploads] == [False]


def test_new_sale_in_a_settled_batch_gets_12(lane: Lane) -> None:
    approved_sale(lane)
    lane.exchange(lane.term.settlement())
    lane.term.batch = "000001"
    assert code_of(lane.exchange(lane.term.sale(DEBIT, 1_000, pin=PIN))) == "12"


def test_sign_on_answer_carries_the_open_batch(lane: Lane) -> None:
    approved_sale(lane)
    lane.exchange(lane.term.settlement())
    fresh = SimTerminal("cup", TID, MID, TMK, lambda: NOW, stan=500)
    fresh.accept_sign_on(lane.answer(fresh.sign_on_request()))
    assert fresh.batch == "000002"


def test_malformed_settlement_totals_get_30(lane: Lane) -> None:
    request = lane.term.settlement()
    request[48] = "123"
    assert lane.answer(remac(lane, request)).response_code == "30"


def test_catalogue_cards_are_known_to_the_host(lane: Lane) -> None:
    for card in CARDS:
        assert lane.host.available(card) == card.opening_balance


def test_reversed_voided_sale_stays_undone_when_the_void_is_reversed(lane: Lane) -> None:
    # found by the stateful test: sale, void, reverse the sale, reverse the void
    request = lane.term.sale(DEBIT, 100, pin=PIN)
    sale = lane.exchange(request)
    assert isinstance(sale, Approved)
    void = lane.term.void(sale)
    lane.exchange(void)
    assert isinstance(lane.exchange(lane.term.reversal(request, "98")), Approved)
    assert booked(lane, sale).status == "reversed"
    assert isinstance(lane.exchange(lane.term.reversal(void, "98")), Approved)
    assert booked(lane, sale).status == "reversed"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance
    assert lane.host.batch_totals(TID, lane.term.batch) == lane.term.totals() == SettlementTotals()


def test_original_arriving_after_its_reversal_is_not_booked(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    assert isinstance(lane.exchange(lane.term.reversal(request, "98")), Approved)
    late = lane.send(request)  # delayed in the network, arrives after the reversal
    assert late.response is not None
    assert late.response.response_code == "12"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance
    lane.restart()
    other = lane.term.sale(DEBIT, 3_000, pin=PIN)  # a new STAN: normal business
    assert isinstance(lane.exchange(other), Approved)


def test_tombstone_survives_a_restart(lane: Lane) -> None:
    request = lane.term.sale(DEBIT, 3_000, pin=PIN)
    lane.exchange(lane.term.reversal(request, "98"))
    lane.restart()
    late = lane.send(request)
    assert late.response is not None
    assert late.response.response_code == "12"


def second_terminal(lane: Lane, tid: str = "10000002") -> SimTerminal:
    lane.store.commit([lane.host.provision(tid, MID, TMK)])
    term = SimTerminal("cup", tid, MID, TMK, lambda: NOW)
    term.accept_sign_on(lane.answer(term.sign_on_request()))
    return term


def test_refund_from_a_terminal_of_another_merchant_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    lane.store.commit([lane.host.provision("20000001", "999999999999999", TMK)])
    other = SimTerminal("cup", "20000001", "999999999999999", TMK, lambda: NOW)
    other.accept_sign_on(lane.answer(other.sign_on_request()))
    refund = other.refund(sale, 100)
    answer = lane.answer(refund)
    assert answer.response_code == "25"
    assert isinstance(other.check_response(refund, answer), Declined)


def _refund_by_rrn_and_date(term: SimTerminal, sale: Approved, amount: int,
                            date: str | None) -> Message:
    """A refund whose terminal knows only the original's RRN and date (61.1/61.2 zeros)."""
    msg = term.refund(sale, amount)
    msg[61] = composite.F61("000000", "000000", date).encode()
    return term.remac(msg)


def test_refund_from_another_terminal_of_the_merchant_by_rrn_and_date(lane: Lane) -> None:
    sale = approved_sale(lane, 10_000)
    other = second_terminal(lane)
    assert isinstance(other.check_response(*_pair(lane, _refund_by_rrn_and_date(
        other, sale, 4_000, sale.date))), Approved)
    assert booked(lane, sale).refunded == 4_000
    for date in ("0101" if sale.date != "0101" else "0102", None):
        answer = lane.answer(_refund_by_rrn_and_date(other, sale, 1_000, date))
        assert answer.response_code == "25"
    assert booked(lane, sale).refunded == 4_000


def test_void_from_another_terminal_of_the_merchant_gets_25(lane: Lane) -> None:
    sale = approved_sale(lane)
    other = second_terminal(lane)
    assert lane.answer(other.void(sale)).response_code == "25"


def _pair(lane: Lane, request: Message) -> tuple[Message, Message]:
    return request, lane.answer(request)


def test_stan_spaces_of_terminals_are_independent(lane: Lane) -> None:
    other = second_terminal(lane)
    first = lane.term.sale(DEBIT, 1_000, pin=PIN)
    mine = other.sale(DEBIT, 2_000, pin=PIN)
    other_stan = mine[11]
    assert first[11] == other_stan  # both terminals are at STAN 000002
    assert isinstance(lane.exchange(first), Approved)
    answer = lane.answer(mine)
    assert answer.response_code == "00"
    assert lane.host.available(DEBIT) == DEBIT.opening_balance - 3_000


def test_any_terminal_says_whether_one_is_provisioned(ledger_store: LedgerStore) -> None:
    # serve's start-up asks it (the demo terminal goes into a ledger without one) instead
    # of reading every terminal: removed ones do not count
    host = AcquirerHost.from_store(ledger_store, "cup")
    assert not host.any_terminal()
    host.provision(TID, MID, TMK)
    host.provision("22222222", MID, TMK)
    assert host.any_terminal()
    host.remove(TID)
    assert host.any_terminal()
    host.remove("22222222")
    assert not host.any_terminal()
    assert host.terminals() == []
